"""The networks an experiment config describes, built in one place.

A config trains one of two things (``method``): a QCFS-ANN that is then converted into an
IF network (``conversion``), or the spiking network itself (``direct``, LIF neurons, TEBN if
asked). :func:`build_trainable` gives the module the optimiser updates and
:func:`snn_of` the SNN that is evaluated from it; the experiment, the benchmarks, rebuilding
a finished run and the tests all go through these two, so the conversion-vs-direct choice is
written once.
"""

from __future__ import annotations

from torch import nn

from .config import ExperimentConfig
from .convert import to_snn, to_trainable_snn
from .models import create
from .models.registry import MODELS
from .neurons import LIF, SURROGATES
from .registry import option_names

__all__ = ["build_model", "build_trainable_snn", "build_trainable", "snn_of", "is_conversion"]


def is_conversion(cfg: ExperimentConfig) -> bool:
    """True when the config trains an ANN to convert, False when it trains the SNN."""
    return cfg.method == "conversion"


def build_model(cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    """The configured ANN: QCFS activations for conversion, ReLUs for direct training."""
    options = dict(cfg.model.options)
    accepted = option_names(MODELS.get(cfg.model.name)) or []
    if is_conversion(cfg):
        options.update(levels=cfg.model.levels, threshold=cfg.model.threshold)
        if "activation" in accepted:
            options["activation"] = "qcfs"
    elif "activation" in accepted:
        options["activation"] = "relu"
    return create(cfg.model.name, num_classes=num_classes, **options)


def build_trainable_snn(cfg: ExperimentConfig, ann: nn.Module) -> nn.Module:
    """The ANN with every ReLU replaced by the configured LIF (and BN by TEBN if asked)."""
    d = cfg.direct
    neuron = LIF(
        threshold=d.threshold,
        leak=d.leak,
        reset=d.reset,
        surrogate=SURROGATES[d.surrogate](d.surrogate_width),
    )
    return to_trainable_snn(ann, neuron=neuron, tebn=d.tebn, T=cfg.T)


def build_trainable(cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    """The module training updates: the QCFS-ANN (conversion) or the LIF SNN (direct)."""
    model = build_model(cfg, num_classes)
    return model if is_conversion(cfg) else build_trainable_snn(cfg, model)


def snn_of(cfg: ExperimentConfig, trained: nn.Module) -> nn.Module:
    """The SNN evaluated after training ``trained`` (from :func:`build_trainable`): the
    converted IF network, or the trained SNN itself."""
    return to_snn(trained) if is_conversion(cfg) else trained
