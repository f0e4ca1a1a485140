"""Model zoo: plain ANN definitions by name; conversion or direct training makes them spike."""

from . import resnet, small, vgg, vggsnn  # noqa: F401  (register the networks)
from .registry import ModelInfo, available_models, create, model_info, register_model

__all__ = ["ModelInfo", "available_models", "create", "model_info", "register_model"]
