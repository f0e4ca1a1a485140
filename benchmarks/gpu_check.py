"""GPU check: training speed of every paper setting, and one CIFAR-10 config end to end.

Run on a CUDA machine (no downloads needed):

    python benchmarks/gpu_check.py --out gpu-check

1. Times optimiser steps of each ``configs/`` paper setting on synthetic batches of its
   dataset's shape, with its batch size and mixed precision (plus an fp32 baseline of one
   setting, in the same process, for the AMP speed-up).
2. Writes a CIFAR-10 stand-in in the real on-disk format (the python pickle batches: 50,000
   training and 10,000 test images; class-coloured noise, so accuracy is meaningful but not
   CIFAR's) and runs ``spikecut run configs/<config>.yaml`` on it for one epoch: a few
   hundred AMP steps per run, then conversion, calibration and every cutoff rule.

Writes ``gpu_check.json`` and ``gpu_check.md`` (and the run's results.json / report.md) to
``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spikecut.bench.training import throughput_table, training_throughput  # noqa: E402
from spikecut.config import load_config  # noqa: E402

# Every paper setting: the configs beside the embedded defaults (mnist5k-*, digits-*).
PAPER = sorted(
    p.stem
    for p in (ROOT / "configs").glob("*.yaml")
    if not p.stem.startswith(("mnist5k", "digits"))
)


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py``: 5 training batches, a test batch, ``batches.meta``,
    pickled with bytes keys like the official files. Each class has its own colour."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = rng.integers(40, 216, (10, 3))

    def batch(n: int, label: bytes) -> dict:
        labels = rng.integers(0, 10, n)
        noise = rng.normal(0, 40, (n, 3, 32 * 32))
        data = np.clip(palette[labels][:, :, None] + noise, 0, 255).astype(np.uint8)
        return {
            b"batch_label": label,
            b"labels": labels.tolist(),
            b"data": data.reshape(n, 3072),
            b"filenames": [f"{i}.png".encode() for i in range(n)],
        }

    per = n_train // 5
    for k in range(1, 6):
        (folder / f"data_batch_{k}").write_bytes(pickle.dumps(batch(per, b"train"), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test, b"test"), protocol=2))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog"]
    names += [b"horse", b"ship", b"truck"]
    meta = {b"label_names": names, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check")
    parser.add_argument("--config", default="cifar10-resnet18-qcfs")
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, help="override every config's batch (smoke tests)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--skip-run", action="store_true", help="throughput table only")
    parser.add_argument(
        "--precisions",
        default="config",
        help="comma-separated precisions to time each setting in ('config': its own)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    report: dict = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda": torch.version.cuda,
    }
    print(json.dumps(report), flush=True)

    rows = []
    for name in PAPER:
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        own = cfg.train.precision if device.type == "cuda" else "fp32"
        wanted = [own] if args.precisions == "config" else args.precisions.split(",")
        for precision in wanted:
            rows.append(
                training_throughput(
                    cfg,
                    device=device,
                    iterations=args.steps,
                    warmup=args.warmup,
                    batch_size=args.batch,
                    precision=precision,
                )
            )
            print(json.dumps(rows[-1]), flush=True)
            torch.cuda.empty_cache() if device.type == "cuda" else None
    baseline_cfg = load_config(ROOT / "configs" / "cifar10-resnet18-tet.yaml")
    fp32 = training_throughput(
        baseline_cfg,
        device=device,
        iterations=args.steps,
        warmup=args.warmup,
        batch_size=args.batch,
        precision="fp32",
    )
    fp32["experiment"] += " (fp32 baseline)"
    rows.append(fp32)
    report["throughput"] = rows

    if not args.skip_run:
        with tempfile.TemporaryDirectory() as tmp:
            data = write_cifar10(Path(tmp) / "data", args.train, args.test)
            run_dir = Path(tmp) / "run"
            cmd = [
                sys.executable,
                "-m",
                "spikecut",
                "run",
                str(ROOT / "configs" / f"{args.config}.yaml"),
            ]
            cmd += ["--set", f"data.root={data}", "--set", "train.epochs=1", "--out", str(run_dir)]
            cmd += ["--set", f"device={args.device}", "--quiet"]
            if device.type != "cuda":
                cmd += ["--set", "train.precision=fp32", "--set", "train.workers=0"]
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            start = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            report["run_seconds"] = time.perf_counter() - start
            report["run_command"] = " ".join(cmd[1:])
            print(done.stdout[-4000:], done.stderr[-4000:], flush=True)
            if done.returncode != 0:
                report["run_error"] = done.stderr[-4000:]
            else:
                results = json.loads((run_dir / "results.json").read_text())
                report["run"] = {
                    "config": args.config,
                    "environment": results["environment"],
                    "runs": [
                        {
                            "name": r["name"],
                            "ann_accuracy": r["ann_accuracy"],
                            "snn_accuracy_T": r["snn_accuracy_per_t"][-1],
                            "oct_mean": r["oct_mean"],
                            "train": {k: v for k, v in r["train"].items() if k != "history"},
                            "steps": len(r["train"]["history"]),
                            "topk": [x for x in r["rules"] if x["rule"] == "topk"][:1],
                        }
                        for r in results["runs"]
                    ],
                }
                for name in ("results.json", "report.md"):
                    shutil.copy(run_dir / name, out / f"run-{name}")

    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [
        f"# GPU check: {report['device']}",
        "",
        f"torch {report['torch']}, CUDA {report['cuda']}",
        "",
    ]
    lines += ["## Training throughput (synthetic batches)", "", throughput_table(rows), ""]
    if "run" in report:
        lines += [
            f"## `spikecut run configs/{args.config}.yaml`, 1 epoch, CIFAR-format stand-in",
            "",
        ]
        lines += [f"Wall time {report['run_seconds']:.0f} s.", ""]
        for r in report["run"]["runs"]:
            t = r["train"]
            memory = t.get("peak_memory_mb")
            lines.append(
                f"- {r['name']}: {r['steps']} epoch(s), {t['samples_per_second']:.0f} samples/s, "
                f"peak {'-' if memory is None else f'{memory:.0f}'} MiB, train "
                f"{t['seconds']:.1f} s, ANN {100 * r['ann_accuracy']:.2f} %, "
                f"SNN@T {100 * r['snn_accuracy_T']:.2f} %"
            )
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if "run_error" in report else 0


if __name__ == "__main__":
    sys.exit(main())
