"""Datasets by name: a registry of factories and the in-memory dataset they return.

A factory is a function ``factory(root, split, *, option=default, ...)``. Its keyword
parameters are the options ``get_dataset`` accepts for that name, so misspelt options
fail loudly instead of being ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

SPLITS = ("train", "test")

DatasetFactory = Callable[..., Dataset]
_FACTORIES: dict[str, DatasetFactory] = {}


def register_dataset(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    """Decorator registering ``factory(root, split, **options)`` under ``name``."""
    key = name.lower()

    def decorate(factory: DatasetFactory) -> DatasetFactory:
        old = _FACTORIES.get(key)
        # Re-registering the same function (e.g. after a module reload) is harmless.
        if old is not None and _qualified(old) != _qualified(factory):
            raise ValueError(f"dataset {name!r} is already registered by {_qualified(old)}")
        _FACTORIES[key] = factory
        return factory

    return decorate


def available_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_FACTORIES)


def get_dataset(
    name: str, root: str | None = None, split: str = "train", **options: Any
) -> Dataset:
    """Build dataset ``name`` for ``split`` ("train" or "test").

    ``root`` says where the files are (``None``: the dataset's default location);
    ``options`` are the factory's keyword parameters, e.g. ``augment=True``.
    """
    factory = _FACTORIES.get(name.lower())
    if factory is None:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    accepted = _option_names(factory)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise TypeError(
                f"dataset {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"accepted options: {', '.join(accepted) or '(none)'}"
            )
    return factory(root=root, split=split, **options)


class TensorImageDataset(Dataset):
    """Images held in memory as one ``[N, C, H, W]`` float32 tensor with integer labels.

    ``transform`` (e.g. augmentation) is applied to each item on access; items without a
    transform are views of ``images``, so treat them as read-only.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        num_classes: int,
        transform: Callable[[Tensor], Tensor] | None = None,
        name: str = "",
    ) -> None:
        if images.ndim != 4 or images.dtype != torch.float32:
            raise ValueError(
                f"images must be a float32 tensor [N, C, H, W], got {images.dtype} "
                f"of shape {tuple(images.shape)}"
            )
        if labels.ndim != 1 or labels.dtype != torch.long or len(labels) != len(images):
            raise ValueError(
                f"labels must be an int64 tensor [{len(images)}], got {labels.dtype} "
                f"of shape {tuple(labels.shape)}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes - 1}], found "
                f"{int(labels.min())}..{int(labels.max())}"
            )
        self.images = images
        self.labels = labels
        self.num_classes = int(num_classes)
        self.transform = transform
        self.name = name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one item, ``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    def without_transform(self) -> TensorImageDataset:
        """The same tensors with no transform (e.g. for calibration on the training split)."""
        return TensorImageDataset(self.images, self.labels, self.num_classes, None, self.name)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"transform={self.transform!r})"
        )


def _option_names(factory: DatasetFactory) -> list[str] | None:
    """Keyword options of ``factory`` besides root/split; ``None`` if it takes ``**kwargs``."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in keyword and p.name not in ("root", "split")]


def _qualified(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"
