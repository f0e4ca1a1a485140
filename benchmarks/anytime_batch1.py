"""Batch 1, paired: is the anytime engine slower than plain full-T inference?

For one finished run, this streams ``--samples`` test samples (spread evenly over the split:
the embedded splits are sorted by label) one at a time through
plain full-T inference (reset, one call of all T steps, and the answer: the argmax of the
summed output) and through
:class:`spikecut.anytime.AnytimeClassifier` (``strategy="auto"``, after the passes it needs
to settle), on the same prepared network, in ``--turns`` interleaved turns. Each turn gives
one ratio, the plain time over the engine's, so a load that drifts over the run weighs on
both sides of a ratio alike. The report is the median ratio, its 10th and 90th percentiles
and the number of turns the engine won.

``spikecut bench`` takes the best of 5 turns of 100 samples for its batch-1 rows; on a noisy
machine that cannot tell a 5 % loss from noise. This is the longer, paired measurement behind
the "never slower than full T" claims for the small networks in the docs.

    python benchmarks/anytime_batch1.py RESULTS_DIR RUN [--samples 200] [--turns 15] [--out F]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spikecut._io import atomic_write_json  # noqa: E402
from spikecut.anytime import AnytimeClassifier  # noqa: E402
from spikecut.bench.anytime import (  # noqa: E402
    _SETTLE_PASSES,
    _load_batches,
    rule_for_run,
    spread_samples,
)
from spikecut.bench.timing import interleaved_seconds  # noqa: E402
from spikecut.cutoff import ExitRule  # noqa: E402
from spikecut.fusion import prepare_for_inference  # noqa: E402
from spikecut.neurons import reset  # noqa: E402
from spikecut.speed import keep_large_allocations  # noqa: E402


@torch.inference_mode()
def paired_batch1(
    snn: nn.Module, samples: list[torch.Tensor], rule: ExitRule, T: int, frames: bool, turns: int
) -> dict:
    """Plain full-T inference against the settled engine over ``samples`` (each one input
    of batch 1: static ``[1, ...]`` or frames ``[T, 1, ...]``), turn by turn."""
    if turns < 1 or not samples:
        raise ValueError(
            f"turns must be >= 1 and samples non-empty, got {turns} and {len(samples)}"
        )
    engine = AnytimeClassifier(snn, rule, T, count_ops=False)

    def plain() -> None:
        for x in samples:
            reset(snn)
            snn(x if frames else x.unsqueeze(0).expand(T, *x.shape)).sum(0).argmax(-1)
        reset(snn)

    def early() -> None:
        for x in samples:
            engine.run(x, frames=frames)

    for _ in range(_SETTLE_PASSES):  # the engine times its strategies on the first samples
        early()
    plain_s, engine_s = interleaved_seconds([plain, early], torch.device("cpu"), turns, 1)
    ratios = np.array(plain_s) / np.array(engine_s)
    key = engine.chooser.key(torch.device("cpu"), 1, frames)
    return {
        "samples": len(samples),
        "turns": turns,
        "strategy": engine.chooser.pick(key),
        "plain_us": float(np.median(plain_s)) / len(samples) * 1e6,
        "engine_us": float(np.median(engine_s)) / len(samples) * 1e6,
        "ratios": ratios.tolist(),
        "median": float(np.median(ratios)),
        "q10": float(np.quantile(ratios, 0.1)),
        "q90": float(np.quantile(ratios, 0.9)),
        "engine_won": int((ratios > 1.0).sum()),
    }


def measure_run(folder: Path, run_name: str, samples: int, turns: int) -> dict:
    """:func:`paired_batch1` on a finished run, its network prepared as ``spikecut bench``
    prepares it, with the run's saved Top-K thresholds (ε = 0)."""
    from spikecut.data import get_dataset
    from spikecut.experiment import dataset_options, is_frame_dataset, load_run_snn

    keep_large_allocations()
    snn, run, cfg = load_run_snn(folder, run_name)
    snn = prepare_for_inference(snn.eval(), time_chunk=None)
    rule = rule_for_run(snn, run, cfg, "topk", 0.0)
    opts = dataset_options(cfg, progress=False)
    test = get_dataset(cfg.data.name, cfg.data.root, split="test", augment=False, **opts)
    frames = is_frame_dataset(test)
    batches = _load_batches(spread_samples(test, samples), 1, frames, torch.device("cpu"))
    return {"run": run_name, **paired_batch1(snn, batches, rule, cfg.T, frames, turns)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a finished experiment's results folder")
    parser.add_argument("run", help="the run's name in its results.json, e.g. 'alpha=0'")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--turns", type=int, default=15)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    measured = measure_run(args.results, args.run, args.samples, args.turns)
    result = {"results": str(args.results), **measured}
    print(
        f"{args.results.name} / {args.run}: engine {result['engine_us']:.0f} µs against plain "
        f"{result['plain_us']:.0f} µs a sample ({result['strategy']}); plain / engine "
        f"median {result['median']:.3f} (q10 {result['q10']:.3f}, q90 {result['q90']:.3f}), "
        f"the engine faster in {result['engine_won']} of {result['turns']} turns"
    )
    if args.out is not None:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
