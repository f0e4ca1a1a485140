"""Does the anytime engine save wall-clock time for CIFAR-size networks on a GPU?

The quick benchmark's MNIST-size networks are launch-bound on a GPU, so dropping samples
saves nothing there. This times full-T inference against :class:`AnytimeClassifier` for the
converted QCFS VGG-16 and ResNet-18 of the CIFAR configs on 3×32×32 inputs, at several batch
sizes, with the same code as ``spikecut bench`` (:func:`spikecut.bench.anytime.measure_anytime`).

The networks are untrained (random weights, QCFS threshold 1) and the inputs random, since
only the cost is measured here. The Top-K rule gets one threshold for every step, chosen so
that the mean exit step is about T/3 (a speed-up near 3×, as for the trained networks in the
README): the exits then spread over the steps as the growing gaps cross it.

    python benchmarks/gpu_anytime.py --out DIR [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from spikecut.bench.anytime import measure_anytime  # noqa: E402
from spikecut.convert import to_snn  # noqa: E402
from spikecut.cutoff import TopKCutoff  # noqa: E402
from spikecut.data import TensorImageDataset  # noqa: E402
from spikecut.models import create  # noqa: E402
from spikecut.neurons import reset  # noqa: E402


@torch.no_grad()
def cumulative_logits(snn, x, T):
    reset(snn)
    out = snn(x.unsqueeze(0).expand(T, *x.shape)).float().cumsum(0)
    reset(snn)
    return out


def rule_with_mean_exit(cum: torch.Tensor, target: float) -> TopKCutoff:
    """A Top-K rule with one threshold for all steps, bisected to a mean exit near ``target``."""
    rule = TopKCutoff(epsilon=0.0)
    top2 = cum.topk(2, dim=-1).values
    low, high = 0.0, float((top2[..., 0] - top2[..., 1]).max()) + 1.0
    for _ in range(40):
        rule.beta = torch.full((cum.shape[0],), (low + high) / 2)
        if rule.exit_steps(cum).double().mean() < target:
            low = float(rule.beta[0])
        else:
            high = float(rule.beta[0])
    return rule


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-anytime")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--batches", default="100,500,2000")
    parser.add_argument("--models", default="vgg16,resnet18")
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--exact",
        action="store_true",
        help="no TF32 and deterministic cuDNN kernels (to see whether the exits then agree)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if args.exact:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(0)
    images = torch.randn(args.samples, 3, 32, 32)
    rows = []
    for name in args.models.split(","):
        ann = create(name, num_classes=10, threshold=1.0).eval()
        with torch.no_grad():  # settle BatchNorm statistics on the inputs
            ann.train()
            for chunk in images[:1000].split(250):
                ann(chunk)
            ann.eval()
        snn = to_snn(ann).to(device).eval()
        cum = torch.cat(
            [cumulative_logits(snn, x.to(device), args.T).cpu() for x in images.split(500)], 1
        )
        labels = cum[-1].argmax(-1)
        rule = rule_with_mean_exit(cum, args.T / 3)
        data = TensorImageDataset(images, labels, 10)
        for batch in (int(b) for b in args.batches.split(",")):
            row = measure_anytime(
                snn, data, rule, args.T, batch_size=batch, device=device, repeats=args.repeats
            )
            row["model"] = name
            rows.append(row)
            print(json.dumps(row), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    lines = [
        f"# Anytime wall-clock on {name}, torch {torch.__version__}"
        + (" (no TF32, deterministic cuDNN)" if args.exact else ""),
        "",
        "| model | batch | steps speed-up | wall-clock speed-up | wall / steps | vs T steps "
        "| exit oracle | exits = offline | strategy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['steps_speedup']:.2f}× | "
            f"{r['wall_speedup']:.2f}× | {r['ratio']:.2f} | {r['stepwise_speedup']:.2f}× "
            f"| {r['oracle_ratio']:.2f} | {100 * r['agreement']:.1f} % | {r['strategy']} |"
        )
    (out / "gpu_anytime.json").write_text(json.dumps({"device": name, "rows": rows}, indent=2))
    (out / "gpu_anytime.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
