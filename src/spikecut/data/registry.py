"""Datasets by name: ``get_dataset(name, root, split, **options)``.

A factory is a function ``factory(root, split, *, option=default, ...)``. Its keyword
parameters are the options ``get_dataset`` accepts for that name, so misspelt options
fail loudly instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from ..registry import Registry

__all__ = [
    "SPLITS",
    "register_dataset",
    "available_datasets",
    "dataset_yields_frames",
    "get_dataset",
]

SPLITS = ("train", "test")

DatasetFactory = Callable[..., Dataset]
DATASETS: Registry[DatasetFactory] = Registry("dataset")


def register_dataset(
    name: str, *, frames: bool | None = None
) -> Callable[[DatasetFactory], DatasetFactory]:
    """Decorator registering ``factory(root, split, **options)`` under ``name``.

    ``frames`` says whether its items are frame sequences ``[T, ...]`` (True) or static
    inputs repeated at every step (False); ``None`` leaves it to a look at the first item.
    """
    return DATASETS.register(name, frames=frames)


def dataset_yields_frames(name: str) -> bool | None:
    """Whether dataset ``name`` yields frame sequences, as registered (``None``: not said)."""
    return DATASETS.info(name).get("frames")


def available_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return DATASETS.names()


def get_dataset(
    name: str, root: str | None = None, split: str = "train", **options: Any
) -> Dataset:
    """Build dataset ``name`` for ``split`` ("train" or "test").

    ``root`` says where the files are (``None``: the dataset's default location);
    ``options`` are the factory's keyword parameters, e.g. ``augment=True``.
    """
    factory = DATASETS.get(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    DATASETS.check_options(name, options, fixed=("root", "split"))
    return factory(root=root, split=split, **options)
