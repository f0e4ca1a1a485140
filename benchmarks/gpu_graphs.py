"""Is the anytime engine never slower than full-T inference for MNIST-size nets on a GPU?

The owed GPU check of issue 14: small networks on a GPU are bound by kernel launches, and
the ``graphed`` strategy (CUDA graphs, :mod:`spikecut._anytime_graphs`) is meant to fix
that. For the converted ``digits-cnn`` and ``mnist-cnn`` (untrained QCFS weights, random
inputs: only the cost is measured; a Top-K rule with one threshold for every step, bisected
to a mean exit near T/3) and several batch sizes, this times plain full-T inference and the
engine with each fixed strategy and with ``auto``, the calls taking turns (best of
``--repeats``), and checks every strategy's exits and predictions against the offline rule
on the full-T outputs.

    python benchmarks/gpu_graphs.py --out DIR [--device cuda] [--batches 1,16,256]

Writes ``gpu_graphs.json`` and ``gpu_graphs.md`` to ``--out``. ``--eager-graphs`` replays
the captured steps eagerly (:class:`spikecut._anytime_graphs.EagerReplay`): the CPU-side
run of the same code that the tests use.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_anytime import cumulative_logits, rule_with_mean_exit  # noqa: E402

from spikecut._anytime_graphs import EagerReplay  # noqa: E402
from spikecut.anytime import AnytimeClassifier  # noqa: E402
from spikecut.bench.timing import best_seconds_interleaved  # noqa: E402
from spikecut.convert import to_snn  # noqa: E402
from spikecut.cutoff import exit_predictions  # noqa: E402
from spikecut.fusion import prepare_for_inference  # noqa: E402
from spikecut.models import create, model_info  # noqa: E402
from spikecut.neurons import reset  # noqa: E402

STRATEGIES = ("full", "mask", "compact", "chunked", "graphed", "auto")


def converted(name: str, images: torch.Tensor, device: torch.device) -> torch.nn.Module:
    """The untrained ``name`` with BatchNorm statistics settled on ``images``, converted."""
    ann = create(name, num_classes=10, threshold=1.0)
    with torch.no_grad():
        ann.train()
        for chunk in images[:1000].split(250):
            ann(chunk)
    snn = to_snn(ann.eval()).to(device).eval()
    return prepare_for_inference(snn, time_chunk=None)


def measure(
    name: str,
    batch: int,
    samples: int,
    T: int,
    device: torch.device,
    repeats: int,
    eager_graphs: bool = False,
) -> dict:
    """Seconds per sample of full-T and of each strategy, and each one's agreement."""
    torch.manual_seed(0)
    images = torch.rand(samples, *model_info(name).input_shape)
    snn = converted(name, images, device)
    xs = [x.to(device) for x in images.split(batch)]
    with torch.inference_mode():
        cum = torch.cat([cumulative_logits(snn, x, T) for x in xs], 1)
    rule = rule_with_mean_exit(cum.cpu(), T / 3)
    steps = rule.exit_steps(cum.cpu())
    predictions = exit_predictions(cum.cpu(), steps)
    engines = {}
    for strategy in STRATEGIES:
        engine = AnytimeClassifier(snn, rule, T, count_ops=False, strategy=strategy)
        if eager_graphs:
            engine._graph_backend = EagerReplay
        engines[strategy] = engine

    def full_t() -> None:
        with torch.inference_mode():
            for x in xs:
                reset(snn)
                snn(x.unsqueeze(0).expand(T, *x.shape)).sum(0).argmax(-1)
        reset(snn)

    def runner(engine):
        def run() -> None:
            with torch.inference_mode():
                for x in xs:
                    engine.run(x)

        return run

    calls = [full_t] + [runner(engines[s]) for s in STRATEGIES]
    # auto learns on its first batches: a few passes before the timed turns
    for _ in range(3):
        runner(engines["auto"])()
    seconds = best_seconds_interleaved(calls, device, repeats, warmup=1)
    row = {
        "model": name,
        "batch": batch,
        "samples": samples,
        "T": T,
        "mean_exit": float(steps.double().mean()),
        "full_us_per_sample": 1e6 * seconds[0] / samples,
        "strategies": {},
    }
    for strategy, sec in zip(STRATEGIES, seconds[1:], strict=True):
        engine = engines[strategy]
        with torch.inference_mode():
            results = [engine.run(x) for x in xs]
        got_steps = torch.cat([r.exit_steps.cpu() for r in results])
        got_pred = torch.cat([r.predictions.cpu() for r in results])
        agree = (got_steps == steps) & (got_pred == predictions)
        key = engine.chooser.key(device, batch, False)
        row["strategies"][strategy] = {
            "us_per_sample": 1e6 * sec / samples,
            "vs_full": seconds[0] / sec,
            "agreement": float(agree.double().mean()),
            "choice": engine.chooser.pick(key) if strategy == "auto" else strategy,
            "graph_failures": list(engine._graph_failures.values()),
        }
    return row


def table(rows: list[dict], device_name: str) -> str:
    lines = [
        f"# Anytime strategies against full T on {device_name}, torch {torch.__version__}",
        "",
        "Speed against plain full-T inference (> 1: faster); agreement with the offline rule.",
        "",
        "| model | batch | mean exit | full T (µs/sample) | "
        + " | ".join(STRATEGIES)
        + " | auto chose | agreement (min) |",
        "|---|---:|---:|---:|" + "---:|" * len(STRATEGIES) + "---|---:|",
    ]
    for r in rows:
        s = r["strategies"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['mean_exit']:.2f} | "
            f"{r['full_us_per_sample']:.1f} | "
            + " | ".join(f"{s[name]['vs_full']:.2f}×" for name in STRATEGIES)
            + f" | {s['auto']['choice']} | "
            f"{min(v['agreement'] for v in s.values()):.3f} |"
        )
    failures = {f for r in rows for v in r["strategies"].values() for f in v["graph_failures"]}
    if failures:
        lines += ["", "Graph captures refused (the masked loop ran instead):"]
        lines += [f"- {f}" for f in sorted(failures)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-graphs"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="digits-cnn,mnist-cnn")
    parser.add_argument("--batches", default="1,16,256")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eager-graphs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            row = measure(
                name, batch, args.samples, args.T, device, args.repeats, args.eager_graphs
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(rows, device_name)
    for path, content in (
        (args.out / "gpu_graphs.json", json.dumps({"device": device_name, "rows": rows}, indent=1)),
        (args.out / "gpu_graphs.md", text),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(content)
        tmp.replace(path)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
