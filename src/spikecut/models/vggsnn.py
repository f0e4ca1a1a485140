"""VGGSNN-style networks for event frames ``[2, H, W]`` (SPEC §8), written as plain ANNs.

A stack of conv3×3-BN-activation blocks with 2×2 average pooling between stages, then one
linear classifier on the flattened features. The convolutions have no bias (BatchNorm
follows each one). The default activation is ``"relu"``: these networks are trained
directly as SNNs (:func:`spikecut.convert.to_trainable_snn`).

* ``vggsnn``: the paper's 64-128-pool-256-256-pool-512-512-pool-512-512-pool stack for
  CIFAR10-DVS. Its 128×128 frames are usually area-down-sampled to 48×48 (as in the TET
  paper), hence the default ``input_size=48``; ``input_size=128`` works too (a larger
  classifier: 512·8·8 inputs instead of 512·3·3).
* ``vggsnn-ncaltech101``: the same stack for N-Caltech101, whose 240×180 (W×H) frames are
  down-sampled by 4 to H×W = 45×60; 101 classes.
* ``vggsnn-gesture``: a lighter 32-64-pool-128-128-pool-256-256-pool-256-256-pool stack
  (about a quarter of VGGSNN's parameters) for DVS128 Gesture, whose training split has
  only ~1,200 recordings; 128×128 frames down-sampled by 4 to 32×32; 11 classes.
* ``vggsnn-tiny``: conv16-pool-conv32-pool-conv64-pool for the embedded emulated event
  data (2×34×34); trains in minutes on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..registry import options_from
from .registry import register_model
from .vgg import POOL, conv_stack

__all__ = [
    "POOL",
    "vgg_stack",
    "vggsnn",
    "vggsnn_ncaltech101",
    "vggsnn_gesture",
    "vggsnn_tiny",
]

PAPER_STAGES: tuple = (64, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL)
GESTURE_STAGES: tuple = (32, 64, POOL, 128, 128, POOL, 256, 256, POOL, 256, 256, POOL)
TINY_STAGES: tuple = (16, POOL, 32, POOL, 64, POOL)


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def vgg_stack(
    stages: Sequence[int | str],
    num_classes: int,
    in_channels: int = 2,
    input_size: int | Sequence[int] = 48,
    activation: str = "relu",
    levels: int = 4,
    threshold: float = 8.0,
) -> nn.Sequential:
    """Conv blocks (an int: output channels) and average pools (``"pool"``), then a linear
    classifier on the flattened features of an ``input_size`` (H, W or one side) input."""
    height, width = _as_size(input_size)
    pools = sum(stage == POOL for stage in stages)
    height, width = height // 2**pools, width // 2**pools
    if height < 1 or width < 1:
        raise ValueError(f"input of {_as_size(input_size)} is too small for {pools} pooling stages")
    layers, channels = conv_stack(stages, in_channels, activation, levels, threshold)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * height * width, num_classes))


@register_model("vggsnn", input_shape=(2, 48, 48))
@options_from(vgg_stack)
def vggsnn(num_classes: int = 10, input_size: int | Sequence[int] = 48, **options) -> nn.Sequential:
    """The paper's VGGSNN for CIFAR10-DVS frames (2×48×48 by default; 2×128×128 also works)."""
    return vgg_stack(PAPER_STAGES, num_classes, input_size=input_size, **options)


@register_model("vggsnn-ncaltech101", input_shape=(2, 45, 60))
@options_from(vgg_stack)
def vggsnn_ncaltech101(
    num_classes: int = 101, input_size: int | Sequence[int] = (45, 60), **options
) -> nn.Sequential:
    """VGGSNN's stack for N-Caltech101 frames 2×H×W = 2×45×60 (240×180 down-sampled by 4)."""
    return vgg_stack(PAPER_STAGES, num_classes, input_size=input_size, **options)


@register_model("vggsnn-gesture", input_shape=(2, 32, 32))
@options_from(vgg_stack)
def vggsnn_gesture(
    num_classes: int = 11, input_size: int | Sequence[int] = 32, **options
) -> nn.Sequential:
    """32-64-pool-128-128-pool-256-256-pool-256-256-pool, for DVS128 Gesture frames 2×32×32
    (128×128 down-sampled by 4), 11 classes."""
    return vgg_stack(GESTURE_STAGES, num_classes, input_size=input_size, **options)


@register_model("vggsnn-tiny", input_shape=(2, 34, 34))
@options_from(vgg_stack)
def vggsnn_tiny(
    num_classes: int = 10, input_size: int | Sequence[int] = 34, **options
) -> nn.Sequential:
    """conv16-pool-conv32-pool-conv64-pool-linear, for 2×34×34 emulated event frames."""
    return vgg_stack(TINY_STAGES, num_classes, input_size=input_size, **options)
