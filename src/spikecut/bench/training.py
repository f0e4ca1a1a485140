"""Training throughput of a configured experiment's model, on synthetic batches.

``training_throughput(cfg)`` builds the config's network (the QCFS-ANN for conversion, the
LIF SNN for direct training), feeds it random batches of the dataset's item shape with the
configured batch size and mixed precision, and times optimiser steps after a warm-up. It
needs no dataset files, so it estimates how long a paper setting takes on a machine before
the data are there (REPRODUCE.md) and measures GPU speed and memory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from .._deprecation import renamed_parameters
from ..config import ExperimentConfig
from ..layout import to_time_major
from ..losses import snn_loss
from ..networks import build_trainable, is_conversion
from ..neurons import reset
from ..speed import prepare_for_training
from ..train import PRECISIONS
from .timing import synchronize

__all__ = ["ITEM_SHAPES", "EVENT_SHAPES", "item_shape", "training_throughput", "throughput_table"]

# Classes and the item shape ``[C, H, W]`` of the static image datasets.
ITEM_SHAPES: dict[str, tuple[int, tuple[int, int, int]]] = {
    "cifar10": (10, (3, 32, 32)),
    "cifar100": (100, (3, 32, 32)),
    "tiny-imagenet": (200, (3, 64, 64)),
    "mnist5k": (10, (1, 28, 28)),
    "digits": (10, (1, 8, 8)),
}
# Classes and native sensor size (H, W) of the event datasets; frames are [T, 2, H, W].
EVENT_SHAPES: dict[str, tuple[int, tuple[int, int]]] = {
    "cifar10-dvs": (10, (128, 128)),
    "ncaltech101": (101, (180, 240)),
    "dvs128-gesture": (11, (128, 128)),
    "nmnist": (10, (34, 34)),
    "mnist5k-dvs": (10, (34, 34)),
}


def item_shape(cfg: ExperimentConfig) -> tuple[int, tuple[int, ...], bool]:
    """``(classes, item shape, frames)`` of the configured dataset; ``frames`` is False for
    static images (repeated every step) and True for event frames ``[T, 2, H, W]``."""
    name = cfg.data.name
    if name in ITEM_SHAPES:
        classes, shape = ITEM_SHAPES[name]
        return classes, shape, False
    if name in EVENT_SHAPES:
        classes, native = EVENT_SHAPES[name]
        size = cfg.data.options.get("size") or native
        return classes, (cfg.T, 2, *(int(s) for s in size)), True
    raise ValueError(f"no known item shape for dataset {name!r}")


@renamed_parameters(steps="iterations")
def training_throughput(
    cfg: ExperimentConfig,
    *,
    device: str | torch.device = "cuda",
    iterations: int = 20,
    warmup: int = 5,
    batch_size: int | None = None,
    precision: str | None = None,
) -> dict:
    """Time ``iterations`` optimiser steps (after ``warmup``) of the config's training;
    return samples per second, seconds per step and (CUDA) peak memory in MiB. (``steps``
    is the deprecated name of ``iterations``: spikecut keeps ``T`` for timesteps.)"""

    device = torch.device(device)
    classes, shape, frames = item_shape(cfg)
    batch = batch_size or cfg.train.batch_size
    precision = precision or cfg.train.precision
    model = build_trainable(cfg, classes)
    prepare_for_training(model.to(device), device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    dtype = PRECISIONS[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if not is_conversion(cfg):
                reset(model)
                out = model(to_time_major(x, cfg.T, frames=frames))
                loss = snn_loss(cfg.direct.loss, out, y, tet_lambda=cfg.direct.tet_lambda)
            else:
                loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / iterations
    return {
        "experiment": cfg.name,
        "model": cfg.model.name,
        "method": cfg.method,
        "T": cfg.T if cfg.method == "direct" else 1,
        "batch_size": batch,
        "precision": precision,
        "seconds_per_step": seconds,
        "samples_per_second": batch / seconds,
        "peak_memory_mb": (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        ),
    }


def throughput_table(rows: Sequence[dict]) -> str:
    """A markdown table of :func:`training_throughput` results."""
    lines = [
        "| Experiment | Model | Method | T | Batch | Precision | Samples/s | ms/step | Peak MiB |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        memory = f"{r['peak_memory_mb']:.0f}" if r.get("peak_memory_mb") else "-"
        lines.append(
            f"| {r['experiment']} | {r['model']} | {r['method']} | {r['T']} | {r['batch_size']} "
            f"| {r['precision']} | {r['samples_per_second']:.0f} "
            f"| {1000 * r['seconds_per_step']:.1f} | {memory} |"
        )
    return "\n".join(lines)
