"""The paper's CIFAR-10 conversion setting at full scale on a GPU, on the CIFAR-10 (JPEG q75) copy.

Trains on all 50,000 training images (less the held-out calibration and validation parts of
``configs/cifar10jpeg-resnet20-qcfs.yaml``), converts, calibrates and evaluates every rule on
the 10,000 test images, for each model (ResNet-20, then VGG-16) and each T (8 and 16), with
and without RCS-ANN. Each (model, T) is one ``spikecut run`` of the CPU config with the
overrides below, resumable: run the script again with the same arguments and the finished
runs are kept (a device command is limited to 10 minutes).

    python benchmarks/gpu_cifar10jpeg.py DATA OUT [--epochs 30] [--models resnet20 vgg16]
        [--T 8 16] [--device cuda] [--workers 8] [--batch-size 128] [--budget-minutes 9]

``DATA`` is the unpacked image folder (``train/``, ``test/``) or the folder of the three zip
files (``train-1.zip``, ``train-2.zip``, ``test.zip``), which are unpacked once to
``OUT/data``. ``OUT/summary.{json,md}`` gathers every run's figures beside the paper's
ratios, with the command line and the device time; figures are "CIFAR-10 (JPEG q75), n
training images", never a reproduction of a published CIFAR-10 number.
``--budget-minutes`` stops before starting a (model, T) that would not finish in the time
left, judged from the runs before it; the next call continues.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spikecut._io import atomic_write_json, atomic_write_text  # noqa: E402
from spikecut.config import load_config  # noqa: E402
from spikecut.experiment import run_experiment  # noqa: E402

CONFIG = ROOT / "configs" / "cifar10jpeg-resnet20-qcfs.yaml"
ARCHIVES = ("train-1.zip", "train-2.zip", "test.zip")
PAPER = "1.76–2.76× fewer timesteps on CIFAR-10 at near-zero accuracy loss (SPEC §6)"
LABEL = "CIFAR-10 (JPEG q75)"


def image_root(data: Path, out: Path) -> Path:
    """The image folder: ``data`` itself, or ``out/data`` after unpacking the zips once."""
    if (data / "train").is_dir() and (data / "test").is_dir():
        return data
    archives = [data / name for name in ARCHIVES]
    missing = [str(a) for a in archives if not a.is_file()]
    if missing:
        raise SystemExit(
            f"{data}: expected train/ and test/ image folders, or the zips {', '.join(ARCHIVES)}; "
            f"missing: {', '.join(missing)}"
        )
    target = out / "data"
    done = target / ".unpacked"
    if not done.is_file():
        for archive in archives:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(target)
        done.write_text("ok\n")
    return target


def overrides(args: argparse.Namespace, root: Path, model: str, T: int) -> list[str]:
    """The ``--set`` overrides of the CPU config for one (model, T) at full scale."""
    return [
        f"name=cifar10jpeg-{model}-qcfs-full",
        f"data.root={root}",
        f"data.options.per_class={args.per_class if args.per_class else 'null'}",
        f"model.name={model}",
        f"T={T}",
        f"device={args.device}",
        f"train.epochs={args.epochs}",
        f"train.workers={args.workers}",
        f"train.batch_size={args.batch_size}",
        "cutoff.calibration_samples=null",  # the paper's pass over every training image
        f"batch_size_eval={args.batch_size_eval}",
    ]


def figures(results: dict) -> list[dict]:
    """One row per run: accuracies, OCT, the paper's rule and the guaranteed Top-K rule."""
    rows = []
    for run in results["runs"]:
        T = results["T"]
        paper = next(r for r in run["rules"] if r["rule"] == "topk" and r["epsilon"] == 0.0)
        guaranteed = next((g for g in run.get("guaranteed", []) if g["rule"] == "topk-risk"), None)
        rows.append(
            {
                "run": run["name"],
                "alpha": run["alpha"],
                "ann_accuracy": run["ann_accuracy"],
                "snn_accuracy_at_T": run["snn_accuracy_per_t"][-1],
                "snn_accuracy_per_t": run["snn_accuracy_per_t"],
                "oct_mean": run["oct_mean"],
                "topk_accuracy": paper["accuracy"],
                "topk_mean_exit": paper["mean_exit"],
                "topk_speedup": T / paper["mean_exit"],
                "topk_risk_accuracy": guaranteed["accuracy"] if guaranteed else None,
                "topk_risk_mean_exit": guaranteed["mean_exit"] if guaranteed else None,
                "topk_risk_speedup": T / guaranteed["mean_exit"] if guaranteed else None,
            }
        )
    return rows


def markdown(summary: dict) -> str:
    lines = [
        f"# Full scale on a GPU: {LABEL}, {summary['train_images']} training images",
        "",
        f"Command: `{summary['command']}`  ",
        f"Device time: {summary['device_seconds'] / 60:.1f} min in all. Paper: {PAPER}.",
        "",
        "| Model | T | Run | ANN % | SNN % at T | OCT | Top-K % | Top-K exit | speed-up "
        "| topk-risk % | topk-risk exit | speed-up | minutes |",
        "| --- | ---: | --- " + "| ---: " * 10 + "|",
    ]
    for entry in summary["experiments"]:
        for row in entry["runs"]:
            risk = (
                f"{100 * row['topk_risk_accuracy']:.2f} | {row['topk_risk_mean_exit']:.2f} | "
                f"{row['topk_risk_speedup']:.2f}×"
                if row["topk_risk_mean_exit"] is not None
                else "– | – | –"
            )
            lines.append(
                f"| {entry['model']} | {entry['T']} | {row['run']} | "
                f"{100 * row['ann_accuracy']:.2f} | {100 * row['snn_accuracy_at_T']:.2f} | "
                f"{row['oct_mean']:.2f} | {100 * row['topk_accuracy']:.2f} | "
                f"{row['topk_mean_exit']:.2f} | {row['topk_speedup']:.2f}× | {risk} | "
                f"{entry['seconds'] / 60:.1f} |"
            )
    if summary["not_run"]:
        lines += ["", f"Not run in this call (time budget): {', '.join(summary['not_run'])}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="image folder, or the folder of the three zips")
    parser.add_argument("out", type=Path)
    parser.add_argument("--models", nargs="+", default=["resnet20", "vgg16"])
    parser.add_argument("--T", dest="Ts", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128, help="training batch")
    parser.add_argument("--batch-size-eval", type=int, default=1000)
    parser.add_argument("--per-class", type=int, help="training images per class (default: all)")
    parser.add_argument("--budget-minutes", type=float, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    root = image_root(args.data, args.out)
    summary_path = args.out / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    seconds_before = previous.get("device_seconds", 0.0)
    done = {(e["model"], e["T"]): e for e in previous.get("experiments", [])}
    experiments, not_run, train_images = [], [], previous.get("train_images")
    for model in args.models:
        for T in args.Ts:
            if (model, T) in done:
                experiments.append(done[(model, T)])
                continue
            spent = time.perf_counter() - started
            longest = max((e["seconds"] for e in experiments), default=0.0)
            if args.budget_minutes and spent + longest > 60 * args.budget_minutes:
                not_run.append(f"{model} T={T}")
                continue
            cfg = load_config(CONFIG, overrides(args, root, model, T))
            begin = time.perf_counter()
            results = run_experiment(
                cfg, args.out / f"{model}-T{T}", progress=not args.quiet, resume=True
            )
            train_images = results["calibration_split"]["train_size"]
            experiments.append(
                {
                    "model": model,
                    "T": T,
                    "seconds": time.perf_counter() - begin,
                    "device": results["environment"]["device_name"],
                    "runs": figures(results),
                }
            )
    requested = {(e["model"], e["T"]) for e in experiments}
    experiments += [e for key, e in done.items() if key not in requested]
    experiments.sort(key=lambda e: (e["model"], e["T"]))
    summary = {
        "label": LABEL,
        "paper": PAPER,
        "command": shlex.join(
            ["python", "benchmarks/gpu_cifar10jpeg.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "train_images": train_images,
        "device_seconds": seconds_before + time.perf_counter() - started,
        "experiments": experiments,
        "not_run": not_run,
    }
    atomic_write_json(summary_path, summary)
    atomic_write_text(args.out / "summary.md", markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
