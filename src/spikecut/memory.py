"""How much memory a device has free, and what a spiking network's passes will need.

Evaluation and calibration run the network in time chunks (:class:`~spikecut.neurons.
SpikingNetwork` ``time_chunk``), so their peak does not grow with T; training folds the
whole sequence and keeps every step's activations for BPTT, so its peak grows with batch
× T. :func:`estimate_peaks` measures a network's activations on a two-sample probe and
scales them to the configured batch sizes and T, so that a run can say *before* its first
epoch whether it will fit (:func:`spikecut.experiment.run_experiment`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .speed import allocations_kept

__all__ = [
    "AUTO_CHUNK_BYTES",
    "AUTO_CHUNK_BYTES_KEPT",
    "CHUNK_FRACTION",
    "EVALUATION_FACTOR",
    "TRAINING_FACTOR",
    "MemoryEstimate",
    "auto_chunk",
    "available_bytes",
    "chunk_budget",
    "estimate_peaks",
    "fit_evaluation_batch",
    "gib",
]

AUTO_CHUNK_BYTES = 4 * 2**20
"""``time_chunk="auto"`` on the CPU: one chunk's largest activation within this many bytes.
Picked from measurements of the benchmark nets (batch 16-64) on a 2-core EPYC: folds above a
few MiB per layer ran up to 2x slower than chunks of one or two steps: every call's large
tensors were fresh ``mmap`` pages."""

AUTO_CHUNK_BYTES_KEPT = 64 * 2**20
"""``time_chunk="auto"`` on the CPU where freed blocks are kept for reuse
(:func:`spikecut.speed.keep_large_allocations`, as in ``spikecut run`` and the benchmarks):
there a larger fold costs no fresh pages, and fewer, larger calls of each layer were faster.
Measured on the benchmark nets (T = 8) on a 2-core EPYC, inference of the whole sequence in
one fold against chunks of one step: conv28 1.11-1.15x faster at batch 16-64, 1.06x at 500
(there a step is 50 MiB, so it still runs one step per chunk); vgg32 1.04-1.05x at 16-64."""

TRAINING_FACTOR = 4
"""Training peak over the sum of one sample-step's layer outputs (see :func:`estimate_peaks`)."""

EVALUATION_FACTOR = 8
"""Evaluation peak over one chunk of the largest activation (see :func:`estimate_peaks`)."""

CHUNK_FRACTION = 8
"""``time_chunk="auto"`` off the CPU: one chunk's largest activation within 1/8 of free memory."""


def gib(n: float) -> str:
    """``n`` bytes as a short string: GiB, or MiB below one GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def available_bytes(device: torch.device | str) -> int:
    """Memory a new allocation can use now: CUDA's free memory plus what PyTorch's cache
    holds unused; on the CPU the kernel's ``MemAvailable`` (Linux), else the physical
    memory."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def chunk_budget(device: torch.device | str) -> int:
    """Bytes one chunk's largest activation may take off the CPU (``time_chunk="auto"``)."""
    return max(1, available_bytes(device) // CHUNK_FRACTION)


def auto_chunk(step_bytes: int, device: torch.device | str, T: int | None = None) -> int:
    """Steps per chunk for ``time_chunk="auto"``: the largest power of two whose chunk of
    the largest activation (``step_bytes`` for one step of the whole batch) stays within
    :data:`AUTO_CHUNK_BYTES` on the CPU (:data:`AUTO_CHUNK_BYTES_KEPT` where freed blocks
    are kept) or :func:`chunk_budget` elsewhere; at most ``T``."""
    device = torch.device(device)
    if device.type == "cpu":
        budget = AUTO_CHUNK_BYTES_KEPT if allocations_kept() else AUTO_CHUNK_BYTES
    else:
        budget = chunk_budget(device)
    steps = max(1, budget // max(1, step_bytes))
    steps = 1 << (steps.bit_length() - 1)
    return steps if T is None else min(steps, T)


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of a run's passes, in bytes (see :func:`estimate_peaks`)."""

    training: int
    evaluation: int
    available: int

    def to_dict(self) -> dict[str, int]:
        return {
            "training_bytes": self.training,
            "evaluation_bytes": self.evaluation,
            "available_bytes": self.available,
        }


def _activation_bytes(model: nn.Module, x: Tensor) -> tuple[int, int]:
    """(sum, largest) of the output bytes of every leaf module in one call on ``x``."""
    sizes: list[int] = []

    def hook(_module: nn.Module, _args: tuple, out: object) -> None:
        if isinstance(out, Tensor):
            sizes.append(out.numel() * out.element_size())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return sum(sizes), max(sizes, default=0)


def estimate_peaks(
    ann: nn.Module,
    item: Tensor,
    *,
    T: int,
    batch_size: int,
    batch_size_eval: int,
    device: torch.device | str,
    training_steps: float | None = None,
) -> MemoryEstimate:
    """Estimate the peak memory of training and of the evaluation passes.

    ``ann`` is the ordinary network (QCFS-ANN or the ReLU network an SNN is built from) and
    ``item`` one input ``[C, H, W]`` (one frame for frame data). The probe runs ``ann`` on
    two copies of ``item`` on ``ann``'s device and records every layer's output. Training
    keeps all of them for the backward pass, per sample and for ``training_steps`` steps (1 for an
    ANN, T for BPTT), with the gradients in flight and the allocator's slack on top
    (:data:`TRAINING_FACTOR` times the outputs), and the weights four times (weights,
    gradients, momentum, a copy). An evaluation pass holds one time chunk
    (:func:`auto_chunk`) of the largest activation for every sample of a batch, a few of
    them at once (input, output, a residual branch, the neuron state:
    :data:`EVALUATION_FACTOR`). The factors were fitted to the peak resident memory of a
    QCFS ResNet-20 run on 32×32 images on the CPU; these are estimates to warn by, not
    bounds.
    """
    where = next(ann.parameters(), torch.empty(0)).device  # the probe runs where ann is
    probe = item.unsqueeze(0).expand(2, *item.shape).float().to(where)
    was_training = ann.training
    ann.eval()
    try:
        total, largest = _activation_bytes(ann, probe)
    finally:
        ann.train(was_training)
    per_sample_total, per_sample_largest = total / 2, largest / 2
    weights = sum(p.numel() * p.element_size() for p in ann.parameters())
    steps = training_steps or 1
    training = TRAINING_FACTOR * per_sample_total * batch_size * steps + 4 * weights
    chunk = auto_chunk(int(per_sample_largest * batch_size_eval), device, T)
    evaluation = EVALUATION_FACTOR * per_sample_largest * batch_size_eval * chunk + 2 * weights
    return MemoryEstimate(int(training), int(evaluation), available_bytes(device))


def fit_evaluation_batch(
    estimate: MemoryEstimate, batch_size_eval: int, *, headroom: float = 0.8
) -> int:
    """The largest evaluation batch, halving from ``batch_size_eval``, whose estimated peak
    stays within ``headroom`` of the available memory (at least 1): evaluation memory
    scales with the batch, and with calibration dropout keyed by sample the results do not
    depend on it."""
    batch = batch_size_eval
    per_sample = estimate.evaluation / max(1, batch_size_eval)
    while batch > 1 and per_sample * batch > headroom * estimate.available:
        batch //= 2
    return batch
