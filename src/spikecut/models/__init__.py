"""Model zoo: plain ANN definitions by name; conversion or direct training makes them spike."""

from . import resnet, small, vgg, vggsnn  # noqa: F401  (register the networks)
from .registry import available_models, create, register_model

__all__ = ["available_models", "create", "register_model"]
