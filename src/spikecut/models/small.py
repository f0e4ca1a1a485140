"""Small conv-BN-activation networks for the embedded 28×28 (MNIST-5k) and 8×8 (digits) data.

Written as plain ANNs; ``activation="qcfs"`` (the default) makes them convertible with
:func:`spikecut.convert.to_snn`, ``activation="relu"`` gives the ordinary network.
Pooling is average pooling, as conversion requires.
"""

from __future__ import annotations

from torch import nn

from ..layers import QCFS
from .registry import register_model

__all__ = ["make_activation", "MnistCNN", "DigitsCNN"]


def make_activation(activation: str, levels: int = 4, threshold: float = 8.0) -> nn.Module:
    """A fresh activation module: ``"qcfs"`` (L levels, initial θ) or ``"relu"``."""
    if activation == "qcfs":
        return QCFS(levels=levels, threshold=threshold)
    if activation == "relu":
        return nn.ReLU()
    raise ValueError(f"activation must be 'qcfs' or 'relu', got {activation!r}")


def _conv_block(c_in: int, c_out: int, act: nn.Module) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act]


class MnistCNN(nn.Sequential):
    """1×28×28 → conv(w)-pool → conv(2w)-pool → linear(hidden) → linear(K)."""

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 16,
        hidden: int = 128,
        activation: str = "qcfs",
        levels: int = 4,
        threshold: float = 8.0,
        in_channels: int = 1,
    ) -> None:
        def act() -> nn.Module:
            return make_activation(activation, levels, threshold)

        super().__init__(
            *_conv_block(in_channels, width, act()),
            nn.AvgPool2d(2),
            *_conv_block(width, 2 * width, act()),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            act(),
            nn.Linear(hidden, num_classes),
        )


class DigitsCNN(nn.Sequential):
    """1×8×8 → conv(w) → conv(2w)-pool → linear(hidden) → linear(K)."""

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 16,
        hidden: int = 64,
        activation: str = "qcfs",
        levels: int = 4,
        threshold: float = 8.0,
        in_channels: int = 1,
    ) -> None:
        def act() -> nn.Module:
            return make_activation(activation, levels, threshold)

        super().__init__(
            *_conv_block(in_channels, width, act()),
            *_conv_block(width, 2 * width, act()),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 4 * 4, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            act(),
            nn.Linear(hidden, num_classes),
        )


register_model("mnist-cnn")(MnistCNN)
register_model("digits-cnn")(DigitsCNN)
