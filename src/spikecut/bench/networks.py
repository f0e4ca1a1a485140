"""The benchmark's networks: plain PyTorch ANNs (ReLU) that every library turns into its SNN.

``conv28`` has the shape of ``mnist-cnn`` (1×28×28); ``vgg32`` is a CIFAR-size VGG-style net
(3×32×32). :func:`build_ann` seeds the weights and gives BatchNorm non-trivial statistics, so
that folding it (inference) and running it in training mode both do real work.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["NETS", "build_ann", "conv28", "vgg32"]


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def conv28(scale: float = 1.0) -> nn.Sequential:
    """The 28×28 net, shaped like ``mnist-cnn``: conv32-pool-conv64-pool-fc128-fc10."""
    w = max(1, round(32 * scale))
    hidden = max(1, round(128 * scale))
    return nn.Sequential(
        *_conv_bn_relu(1, w),
        nn.AvgPool2d(2),
        *_conv_bn_relu(w, 2 * w),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * w * 7 * 7, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def vgg32(scale: float = 1.0) -> nn.Sequential:
    """A CIFAR-size VGG-style net: conv64-conv64-pool-conv128-conv128-pool-conv256-pool-fc10."""
    c1, c2, c3 = (max(1, round(c * scale)) for c in (64, 128, 256))
    return nn.Sequential(
        *_conv_bn_relu(3, c1),
        *_conv_bn_relu(c1, c1),
        nn.AvgPool2d(2),
        *_conv_bn_relu(c1, c2),
        *_conv_bn_relu(c2, c2),
        nn.AvgPool2d(2),
        *_conv_bn_relu(c2, c3),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(c3 * 4 * 4, 10),
    )


NETS: dict[str, tuple[Callable[[float], nn.Sequential], tuple[int, ...]]] = {
    "conv28": (conv28, (1, 28, 28)),
    "vgg32": (vgg32, (3, 32, 32)),
}


def build_ann(net: str, scale: float = 1.0, seed: int = 0) -> nn.Sequential:
    """The benchmark's ANN ``net`` with seeded weights and non-trivial BatchNorm statistics."""
    if net not in NETS:
        raise ValueError(f"unknown benchmark net {net!r}; expected one of {sorted(NETS)}")
    torch.manual_seed(seed)
    ann = NETS[net][0](scale)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in ann.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0.0, 0.1, generator=generator)
                m.running_var.uniform_(0.5, 1.5, generator=generator)
                m.weight.uniform_(0.8, 1.6, generator=generator)
                m.bias.normal_(0.2, 0.1, generator=generator)
    return ann
