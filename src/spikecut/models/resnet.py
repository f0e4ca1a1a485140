"""ResNets with the CIFAR stem (SPEC §8) as plain ANNs: ResNet-18/34 and He et al.'s ResNet-20.

The stem is a 3×3 stride-1 convolution with BatchNorm and an activation, and no max pooling
(conversion refuses it). Each :class:`BasicBlock` computes
``act2(conv-BN-act1-conv-BN(x) + shortcut(x))`` with two activation modules of its own, so
every activation sits at exactly one place and conversion can replace it by a neuron. The
convolutions have no bias (BatchNorm follows each one). Where a block changes the shape,
the shortcut is a 1×1 conv + BatchNorm ("projection", ResNet-18/34) or the parameter-free
:class:`ZeroPadShortcut` ("option A", ResNet-20). Parameter counts for K = 10 (the QCFS
thresholds aside, one per activation): ResNet-18 11,173,962, ResNet-34 21,282,122,
ResNet-20 269,722 with option A. The 272,474 often quoted for ResNet-20 is the variant with
projection shortcuts (``shortcut="projection"``; the two 1×1 conv + BN add 2,752), as in
much of the CIFAR conversion code.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from ..registry import options_from
from .registry import register_model
from .small import make_activation

__all__ = ["ZeroPadShortcut", "BasicBlock", "resnet", "resnet18", "resnet34", "resnet20"]

SHORTCUTS = ("projection", "zero-pad")
WIDTHS = (64, 128, 256, 512)  # ResNet-18/34 stage widths and strides
STRIDES = (1, 2, 2, 2)


class ZeroPadShortcut(nn.Module):
    """He et al.'s option-A shortcut: keep every ``stride``-th pixel, append zero channels.

    Parameter-free and linear, so it passes through conversion unchanged. The zero
    channels are split between the front and the back, as in the common CIFAR code.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"a zero-pad shortcut can only add channels: got {in_channels} -> {out_channels}"
            )
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, *self.pad))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad={self.pad}"


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3×3-BN-act-conv3×3-BN, plus the shortcut, then the second activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        shortcut: str,
        activation: str,
        levels: int,
        threshold: float,
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.residual = nn.Sequential(
            _conv3x3(in_channels, out_channels, stride),
            nn.BatchNorm2d(out_channels),
            make_activation(activation, levels, threshold),
            _conv3x3(out_channels, out_channels),
            nn.BatchNorm2d(out_channels),
        )
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "projection":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        self.act = make_activation(activation, levels, threshold)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.residual(x) + self.shortcut(x))


def resnet(
    num_classes: int,
    blocks: Sequence[int],
    widths: Sequence[int],
    strides: Sequence[int],
    shortcut: str = "projection",
    activation: str = "qcfs",
    levels: int = 4,
    threshold: float = 8.0,
    in_channels: int = 3,
) -> nn.Sequential:
    """CIFAR-stem ResNet: stem conv3×3(widths[0]) → stages of ``blocks[i]`` BasicBlocks of
    width ``widths[i]`` (the first block of stage i has stride ``strides[i]``) → global
    average pool → Linear(widths[-1], K)."""
    if not len(blocks) == len(widths) == len(strides) > 0:
        raise ValueError(
            f"blocks, widths and strides need one entry per stage, got {len(blocks)}, "
            f"{len(widths)} and {len(strides)}"
        )
    if any(n < 1 for n in blocks):
        raise ValueError(f"every stage needs at least one block, got blocks={tuple(blocks)}")
    stages: list[nn.Module] = []
    channels = widths[0]
    for n_blocks, width, stride in zip(blocks, widths, strides, strict=True):
        stage = []
        for block_stride in [stride] + [1] * (n_blocks - 1):
            block = BasicBlock(
                channels, width, block_stride, shortcut, activation, levels, threshold
            )
            stage.append(block)
            channels = width
        stages.append(nn.Sequential(*stage))
    stem = nn.Sequential(
        _conv3x3(in_channels, widths[0]),
        nn.BatchNorm2d(widths[0]),
        make_activation(activation, levels, threshold),
    )
    return nn.Sequential(
        OrderedDict(
            stem=stem,
            stages=nn.Sequential(*stages),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(channels, num_classes),
        )
    )


@register_model("resnet18", input_shape=(3, 32, 32))
@options_from(resnet)
def resnet18(num_classes: int = 10, **options) -> nn.Sequential:
    """ResNet-18, CIFAR stem: BasicBlocks [2, 2, 2, 2], widths 64-128-256-512, projection
    shortcuts. Works on 32×32 (CIFAR) and 64×64 (Tiny-ImageNet) inputs."""
    return resnet(num_classes, (2, 2, 2, 2), WIDTHS, STRIDES, **options)


@register_model("resnet34", input_shape=(3, 32, 32))
@options_from(resnet)
def resnet34(num_classes: int = 10, **options) -> nn.Sequential:
    """ResNet-34, CIFAR stem: BasicBlocks [3, 4, 6, 3], widths 64-128-256-512, projection
    shortcuts."""
    return resnet(num_classes, (3, 4, 6, 3), WIDTHS, STRIDES, **options)


@register_model("resnet20", input_shape=(3, 32, 32))
@options_from(resnet)
def resnet20(num_classes: int = 10, shortcut: str = "zero-pad", **options) -> nn.Sequential:
    """He et al.'s CIFAR ResNet-20: stem conv3×3(16), three stages of 3 BasicBlocks, widths
    16-32-64, strides 1-2-2, Linear(64, K). ``shortcut="zero-pad"`` (default) is He et al.'s
    parameter-free option A; ``"projection"`` uses 1×1 conv + BN where the shape changes."""
    return resnet(num_classes, (3, 3, 3), (16, 32, 64), (1, 2, 2), shortcut, **options)
