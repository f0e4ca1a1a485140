"""Model registry: factories by name, ``create("mnist-cnn", num_classes=10)`` (timm-style).

Each entry point is registered with what it expects: the input shape ``(C, H, W)`` it is
built for and, read from its ``num_classes`` default, how many classes it has unless told
otherwise (:func:`model_info`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..registry import Registry

__all__ = ["ModelInfo", "register_model", "create", "available_models", "model_info"]

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is built for, at its default options."""

    name: str
    input_shape: tuple[int, ...] | None
    """One input ``(C, H, W)`` (one step's frame for event networks); None: not said."""
    num_classes: int | None
    """The default number of classes (the factory's ``num_classes`` default)."""


def register_model(
    name: str, *, input_shape: tuple[int, ...] | None = None
) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory ``f(num_classes, **options) -> nn.Module`` under ``name``.

    ``input_shape`` is the input ``(C, H, W)`` the model is built for by default.
    """
    if input_shape is not None:
        input_shape = tuple(int(n) for n in input_shape)
    return MODELS.register(name, input_shape=input_shape)


def available_models() -> list[str]:
    """Names accepted by :func:`create`."""
    return MODELS.names()


def model_info(name: str) -> ModelInfo:
    """The registered facts about model ``name`` (ValueError listing the names if unknown)."""
    param = inspect.signature(MODELS.get(name)).parameters.get("num_classes")
    default = None if param is None or param.default is param.empty else param.default
    return ModelInfo(name.lower(), MODELS.info(name).get("input_shape"), default)


def create(name: str, num_classes: int | None = None, **options) -> nn.Module:
    """Build the model registered as ``name`` with ``num_classes`` outputs.

    ``num_classes=None`` takes the model's default (:func:`model_info`). ``options`` are
    the factory's keyword parameters; an unknown one is a TypeError that lists the accepted
    ones.
    """
    factory = MODELS.get(name)
    if num_classes is None:
        num_classes = model_info(name).num_classes
        if num_classes is None:
            raise TypeError(f"model {name!r} has no default number of classes; pass num_classes")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    MODELS.check_options(name, options, fixed=("self", "num_classes"))
    return factory(num_classes=int(num_classes), **options)
