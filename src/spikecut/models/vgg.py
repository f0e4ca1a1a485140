"""CIFAR VGG-16 (SPEC §8) as a plain ANN, and the conv-stack builder shared with VGGSNN.

Every conv is a 3×3 convolution followed by BatchNorm and its own activation module;
pooling is 2×2 average pooling (conversion refuses max pooling). The convolutions have
**no bias**: the BatchNorm right after each one adds a learned per-channel shift, so a conv
bias would be a redundant parameter (it is cancelled by the BN mean). The rest of the zoo
makes the same choice. VGG-16's conv-BN stack therefore has 14,718,912 parameters and the
whole network 33,642,442 for K = 10 (a VGG-16-BN with conv biases would have 4,224 more).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ..registry import options_from
from .registry import register_model
from .small import make_activation

__all__ = ["POOL", "VGG16_STAGES", "conv_stack", "vgg", "vgg16"]

POOL = "pool"
VGG16_STAGES: tuple = (
    64, 64, POOL,
    128, 128, POOL,
    256, 256, 256, POOL,
    512, 512, 512, POOL,
    512, 512, 512, POOL,
)  # fmt: skip


def conv_stack(
    stages: Sequence[int | str],
    in_channels: int,
    activation: str,
    levels: int,
    threshold: float,
) -> tuple[list[nn.Module], int]:
    """Layers for ``stages`` (an int: conv3×3-BN-activation with that many output channels;
    ``"pool"``: ``nn.AvgPool2d(2)``) and the number of channels they end with."""
    layers: list[nn.Module] = []
    channels = in_channels
    for stage in stages:
        if stage == POOL:
            layers.append(nn.AvgPool2d(2))
            continue
        if isinstance(stage, str) or int(stage) != stage or stage < 1:
            raise ValueError(f"a stage must be a positive channel count or {POOL!r}, got {stage!r}")
        layers += [
            nn.Conv2d(channels, int(stage), 3, padding=1, bias=False),
            nn.BatchNorm2d(int(stage)),
            make_activation(activation, levels, threshold),
        ]
        channels = int(stage)
    return layers, channels


def vgg(
    stages: Sequence[int | str],
    num_classes: int,
    activation: str = "qcfs",
    levels: int = 4,
    threshold: float = 8.0,
    in_channels: int = 3,
    dropout: float = 0.0,
) -> nn.Sequential:
    """The conv-BN stack of ``stages`` (:func:`conv_stack`), a global average pool, then
    Linear(C, 4096)-act-Linear(4096, 4096)-act-Linear(4096, K).

    ``dropout > 0`` adds ``nn.Dropout(dropout)`` after each of the two hidden activations.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    features, channels = conv_stack(stages, in_channels, activation, levels, threshold)

    def hidden(n_in: int, n_out: int) -> list[nn.Module]:
        layers = [nn.Linear(n_in, n_out), make_activation(activation, levels, threshold)]
        return layers + ([nn.Dropout(dropout)] if dropout > 0 else [])

    classifier = [*hidden(channels, 4096), *hidden(4096, 4096), nn.Linear(4096, num_classes)]
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(*features),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            classifier=nn.Sequential(*classifier),
        )
    )


@register_model("vgg16", input_shape=(3, 32, 32))
@options_from(vgg)
def vgg16(num_classes: int = 10, **options) -> nn.Sequential:
    """CIFAR VGG-16: 13 conv blocks with 5 average pools, a global average pool (the identity
    on 32×32 inputs, so 64×64 Tiny-ImageNet images work too), then the classifier of
    :func:`vgg`."""
    return vgg(VGG16_STAGES, num_classes, **options)
