"""CPU speed settings for training, measured in ``benchmarks/`` (see benchmarks/README.md).

* **Keep large allocations.** A spiking network runs conv/BN on the ``[T·B, ...]`` fold, so
  its activations are T times larger than an ANN's. glibc serves every block above its mmap
  threshold (at most 32 MiB) with fresh pages from the kernel and unmaps it when freed, so
  each training step pays page faults for every large activation again; with
  :func:`keep_large_allocations` freed blocks stay in the heap and are reused. On the
  benchmark's VGG-style net this doubled training throughput on a 2-core CPU, and it made
  full-T inference of the default experiments 1.6–2.8× faster. The setting is process-wide
  (the process keeps its peak memory instead of returning it to the OS), so spikecut applies
  it only where it runs the whole job: its trainers, ``spikecut run`` and the benchmarks, on
  the CPU. Library users call it themselves; ``SPIKECUT_KEEP_ALLOCATIONS=0`` switches it off.
* **Channels-last convolutions.** :func:`channels_last_convolutions` stores 2-D conv weights
  in channels-last layout, which made forward + backward 1.2–1.3× faster on the same CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

import torch
from torch import nn

__all__ = [
    "glibc",
    "keep_large_allocations",
    "allocations_kept",
    "release_freed_memory",
    "channels_last_convolutions",
    "prepare_for_training",
]

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
_kept = False


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The C library with glibc's ``mallopt`` and ``malloc_trim``; ``None`` where there is none
    (not Linux, or another C library)."""
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc-only entry points: fail here if they are missing
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def keep_large_allocations() -> bool:
    """Make glibc keep freed large blocks for reuse instead of unmapping them (process-wide).

    Returns True when the setting is in effect (Linux with glibc, not disabled by
    ``SPIKECUT_KEEP_ALLOCATIONS=0``); elsewhere it does nothing and returns False.
    """
    global _kept
    if _kept:
        return True
    libc = glibc()
    if os.environ.get("SPIKECUT_KEEP_ALLOCATIONS", "1") == "0" or libc is None:
        return False
    _kept = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**30) == 1
    return _kept


def allocations_kept() -> bool:
    """Whether :func:`keep_large_allocations` is in effect in this process."""
    return _kept


def release_freed_memory() -> bool:
    """Give the pages of freed heap blocks back to the OS (glibc ``malloc_trim``).

    With :func:`keep_large_allocations` nothing freed is ever returned, and when the order
    of allocations differs from one batch to the next (threads, long-lived small tensors
    between freed large ones) a freed hole can be too small for the next batch's block,
    so the heap grows and stays grown. Measured on a converted ResNet-20 (T = 16, batch
    100, with :class:`~spikecut.ops.OpCounter`): identical runs ended 12 batches at 1.2 to
    7 GB resident, while the live memory (resident after this call) stayed at 0.37 GB. The
    evaluation passes call it after every batch and ``spikecut run`` after training,
    so the setting stays a speed-up within a phase and never grows across batches or
    phases. Returns False where there is no glibc.
    """
    libc = glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def channels_last_convolutions(model: nn.Module) -> nn.Module:
    """Store every 2-D conv weight of ``model`` in channels-last layout (in place).

    A convolution whose input has one channel gives NCHW output whatever its weights' layout
    (PyTorch cannot tell the two layouts of such an input apart); its output is laid out
    channels-last too, so that the layers after it (pooling above all, several times slower
    on NCHW on the CPU) stay in one layout.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)
            if module.in_channels == 1 and _to_channels_last not in module._forward_hooks.values():
                module.register_forward_hook(_to_channels_last)
        elif isinstance(module, nn.Flatten) and (
            _gradient_channels_last not in module._forward_pre_hooks.values()
        ):
            module.register_forward_pre_hook(_gradient_channels_last)
    return model


def _to_channels_last(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.contiguous(memory_format=torch.channels_last) if output.dim() == 4 else output


class _ChannelsLastGradient(torch.autograd.Function):
    """Identity whose backward lays the gradient out channels-last.

    Flattening a channels-last map copies it to NCHW, so the gradient that comes back through
    the flatten is NCHW; the pooling before it, whose input is channels-last, then converted
    both ways: its backward took 23 ms instead of 2.9 ms on [512, 64, 14, 14] (the conv28
    bench network's second pooling; 5.0 ms with this conversion)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def _gradient_channels_last(_module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook of a flatten: a channels-last input's gradient comes back so."""
    x = args[0] if args else None
    if (
        isinstance(x, torch.Tensor)
        and x.requires_grad
        and torch.is_grad_enabled()
        and x.dim() == 4
        and not x.is_contiguous()  # where both layouts are one (C = 1 or 1×1 maps), nothing
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return (_ChannelsLastGradient.apply(x), *args[1:])
    return None


def prepare_for_training(model: nn.Module, device: torch.device | str) -> nn.Module:
    """The CPU settings above when training on the CPU; on CUDA, cuDNN picks the fastest
    convolution algorithms for the (fixed) batch shapes. The model is changed in place."""
    kind = torch.device(device).type
    if kind == "cpu":
        keep_large_allocations()
        channels_last_convolutions(model)
    elif kind == "cuda":
        torch.backends.cudnn.benchmark = True
    return model
