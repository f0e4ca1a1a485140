"""The anytime engine's own cost per run, apart from the network's.

Around a network that is a single linear layer (so the network costs almost nothing), this
times one sample streamed at a time through :class:`spikecut.anytime.AnytimeClassifier` with
each fixed strategy, against the bare network call of the same steps in the same process
(the calls take turns, best of ``--repeats``). The difference is what the engine adds per
sample: the rule at every step, the bookkeeping of exits, resets and checks. With a rule
that never fires before T every strategy runs all T steps, so they compare like for like.

This is the cost that decides whether early exit can pay on a small network at batch 1: a
full-T call of the 8×8 digits network takes about 0.7 ms on the project's 2-core CPU.

    python benchmarks/anytime_overhead.py [--T 8] [--samples 200] [--repeats 7] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spikecut.anytime import AnytimeClassifier  # noqa: E402
from spikecut.bench.timing import best_seconds_interleaved  # noqa: E402
from spikecut.cutoff import TopKCutoff  # noqa: E402

STRATEGIES = ("full", "mask", "compact", "chunked")


class OneLayer(nn.Module):
    """A time-major ``[T, B, F] -> [T, B, 10]`` network with nothing to it."""

    def __init__(self, features: int = 4) -> None:
        super().__init__()
        self.linear = nn.Linear(features, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def measure(T: int = 8, samples: int = 200, repeats: int = 7) -> dict:
    """Microseconds per sample: the bare network call and each strategy's run."""
    torch.manual_seed(0)
    net = OneLayer().eval()
    rule = TopKCutoff(epsilon=0.0)
    rule.beta = torch.full((T,), float("inf"))  # never fires before the forced exit at T
    xs = [torch.randn(1, 4) for _ in range(samples)]
    engines = {s: AnytimeClassifier(net, rule, T, count_ops=False, strategy=s) for s in STRATEGIES}

    def bare() -> None:
        with torch.inference_mode():
            for x in xs:
                net(x.unsqueeze(0).expand(T, *x.shape))

    def runner(engine):
        def run() -> None:
            for x in xs:
                engine.run(x)

        return run

    calls = [bare] + [runner(engines[s]) for s in STRATEGIES]
    seconds = best_seconds_interleaved(calls, torch.device("cpu"), repeats, warmup=1)
    per_sample = [1e6 * s / samples for s in seconds]
    rows = {
        name: {"us_per_sample": us, "engine_us_per_sample": us - per_sample[0]}
        for name, us in zip(STRATEGIES, per_sample[1:], strict=True)
    }
    return {
        "T": T,
        "samples": samples,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bare_us_per_sample": per_sample[0],
        "strategies": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    result = measure(args.T, args.samples, args.repeats)
    print(f"bare network call, T = {result['T']}: {result['bare_us_per_sample']:.1f} µs/sample")
    for name, row in result["strategies"].items():
        print(
            f"{name:8s} {row['us_per_sample']:7.1f} µs/sample, "
            f"the engine's own {row['engine_us_per_sample']:6.1f}"
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
