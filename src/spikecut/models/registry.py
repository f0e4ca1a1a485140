"""Model registry: factories by name, ``create("mnist-cnn", num_classes=10)`` (timm-style)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

__all__ = ["register_model", "create", "available_models"]

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory ``f(num_classes, **options) -> nn.Module`` under ``name``."""
    return MODELS.register(name)


def available_models() -> list[str]:
    """Names accepted by :func:`create`."""
    return MODELS.names()


def create(name: str, num_classes: int, **options) -> nn.Module:
    """Build the model registered as ``name`` with ``num_classes`` outputs.

    ``options`` are the factory's keyword parameters; an unknown one is a TypeError that
    lists the accepted ones.
    """
    factory = MODELS.get(name)
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    MODELS.check_options(name, options, fixed=("self", "num_classes"))
    return factory(num_classes=int(num_classes), **options)
