"""Small conv-BN-activation networks for the embedded 28×28 (MNIST-5k) and 8×8 (digits) data.

Written as plain ANNs; ``activation="qcfs"`` (the default) makes them convertible with
:func:`spikecut.convert.to_snn`, ``activation="relu"`` gives the ordinary network.
Pooling is average pooling, as conversion requires. The entry points set the architecture
and pass their other options (``activation``, ``levels``, ``threshold``, ``in_channels``) to
the one builder, :func:`small_cnn`.
"""

from __future__ import annotations

from torch import nn

from ..layers import QCFS
from ..registry import options_from
from .registry import register_model

__all__ = ["make_activation", "small_cnn", "mnist_cnn", "digits_cnn"]


def make_activation(activation: str, levels: int = 4, threshold: float = 8.0) -> nn.Module:
    """A fresh activation module: ``"qcfs"`` (L levels, initial θ) or ``"relu"``."""
    if activation == "qcfs":
        return QCFS(levels=levels, threshold=threshold)
    if activation == "relu":
        return nn.ReLU()
    raise ValueError(f"activation must be 'qcfs' or 'relu', got {activation!r}")


def _conv_block(c_in: int, c_out: int, act: nn.Module) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act]


def small_cnn(
    num_classes: int,
    size: int,
    pool_after: tuple[bool, bool],
    width: int,
    hidden: int,
    activation: str = "qcfs",
    levels: int = 4,
    threshold: float = 8.0,
    in_channels: int = 1,
) -> nn.Sequential:
    """conv(w) → conv(2w) → linear(hidden) → linear(K) on ``size``×``size`` inputs, each conv
    optionally followed by a 2×2 average pool; BatchNorm after every conv/hidden linear, then
    the activation (``make_activation(activation, levels, threshold)``)."""

    def act() -> nn.Module:
        return make_activation(activation, levels, threshold)

    layers: list[nn.Module] = []
    channels = in_channels
    for out_channels, pool in zip((width, 2 * width), pool_after, strict=True):
        layers += _conv_block(channels, out_channels, act())
        if pool:
            layers.append(nn.AvgPool2d(2))
            size //= 2
        channels = out_channels
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(channels * size * size, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        act(),
        nn.Linear(hidden, num_classes),
    )


@register_model("mnist-cnn", input_shape=(1, 28, 28))
@options_from(small_cnn)
def mnist_cnn(
    num_classes: int = 10, width: int = 32, hidden: int = 128, **options
) -> nn.Sequential:
    """1×28×28 → conv(w)-pool → conv(2w)-pool → linear(hidden) → linear(K)."""
    return small_cnn(num_classes, 28, (True, True), width, hidden, **options)


@register_model("digits-cnn", input_shape=(1, 8, 8))
@options_from(small_cnn)
def digits_cnn(
    num_classes: int = 10, width: int = 16, hidden: int = 64, **options
) -> nn.Sequential:
    """1×8×8 → conv(w) → conv(2w)-pool → linear(hidden) → linear(K)."""
    return small_cnn(num_classes, 8, (False, True), width, hidden, **options)
