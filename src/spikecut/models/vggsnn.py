"""VGGSNN-style networks for event frames ``[2, H, W]`` (SPEC §8), written as plain ANNs.

A stack of conv3×3-BN-activation blocks with 2×2 average pooling between stages, then one
linear classifier on the flattened features. ``vggsnn`` is the paper's 64-128-pool-256-256-
pool-512-512-pool-512-512-pool stack; ``vggsnn-tiny`` is a small stack for the embedded
emulated event data (2×34×34) that trains in minutes on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .registry import register_model
from .small import make_activation

__all__ = ["POOL", "vgg_stack", "vggsnn", "vggsnn_tiny"]

POOL = "pool"
PAPER_STAGES: tuple = (64, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL)
TINY_STAGES: tuple = (16, POOL, 32, POOL, 64, POOL)


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def vgg_stack(
    stages: Sequence[int | str],
    num_classes: int,
    in_channels: int,
    input_size: int | Sequence[int],
    activation: str,
    levels: int,
    threshold: float,
) -> nn.Sequential:
    """Conv blocks (an int: output channels) and average pools (``"pool"``), then a classifier."""
    height, width = _as_size(input_size)
    layers: list[nn.Module] = []
    channels = in_channels
    for stage in stages:
        if stage == POOL:
            layers.append(nn.AvgPool2d(2))
            height, width = height // 2, width // 2
            continue
        layers += [
            nn.Conv2d(channels, int(stage), 3, padding=1, bias=False),
            nn.BatchNorm2d(int(stage)),
            make_activation(activation, levels, threshold),
        ]
        channels = int(stage)
    if height < 1 or width < 1:
        raise ValueError(
            f"input of {_as_size(input_size)} is too small for {stages.count(POOL)} pooling stages"
        )
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * height * width, num_classes))


@register_model("vggsnn")
def vggsnn(
    num_classes: int = 10,
    in_channels: int = 2,
    input_size: int | Sequence[int] = 48,
    activation: str = "relu",
    levels: int = 4,
    threshold: float = 8.0,
) -> nn.Sequential:
    """The paper's VGGSNN (event frames, e.g. CIFAR10-DVS down-sampled to 48×48)."""
    return vgg_stack(
        PAPER_STAGES, num_classes, in_channels, input_size, activation, levels, threshold
    )


@register_model("vggsnn-tiny")
def vggsnn_tiny(
    num_classes: int = 10,
    in_channels: int = 2,
    input_size: int | Sequence[int] = 34,
    activation: str = "relu",
    levels: int = 4,
    threshold: float = 8.0,
) -> nn.Sequential:
    """conv16-pool-conv32-pool-conv64-pool-linear, for 2×34×34 emulated event frames."""
    return vgg_stack(
        TINY_STAGES, num_classes, in_channels, input_size, activation, levels, threshold
    )
