"""Model registry: factories by name, ``create("mnist-cnn", num_classes=10)`` (timm-style)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["register_model", "create", "available_models"]

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory ``f(num_classes, **options) -> nn.Module`` under ``name``."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return decorator


def available_models() -> list[str]:
    """Names accepted by :func:`create`."""
    return sorted(_FACTORIES)


def create(name: str, num_classes: int, **options) -> nn.Module:
    """Build the model registered as ``name`` with ``num_classes`` outputs."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return _FACTORIES[name](num_classes=int(num_classes), **options)
