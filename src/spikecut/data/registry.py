"""Datasets by name: ``get_dataset(name, root, split, **options)``.

A factory is a function ``factory(root, split, *, option=default, ...)``. Its keyword
parameters are the options ``get_dataset`` accepts for that name, so misspelt options
fail loudly instead of being ignored. Beside each factory the registry keeps what it
yields (:func:`dataset_info`): frame sequences or static inputs, the number of classes and
the shape of one step's input, so nothing has to be loaded to learn them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from .._deprecation import warn_deprecated
from ..registry import Registry

__all__ = [
    "SPLITS",
    "DatasetInfo",
    "register_dataset",
    "available_datasets",
    "dataset_info",
    "dataset_yields_frames",
    "get_dataset",
]

SPLITS = ("train", "test")

DatasetFactory = Callable[..., Dataset]
DATASETS: Registry[DatasetFactory] = Registry("dataset")


@dataclass(frozen=True)
class DatasetInfo:
    """What a registered dataset yields, at its default options."""

    name: str
    frames: bool | None
    """True: items are frame sequences ``[T, C, H, W]``; False: static ``[C, H, W]`` inputs
    repeated at every step; None: not said (a factory registered without ``frames=``)."""
    num_classes: int | None
    """Number of classes (None: it depends on the files found)."""
    input_shape: tuple[int, ...] | None
    """One step's input ``(C, H, W)`` (a frame for frame datasets); None: not said."""


def register_dataset(
    name: str,
    *,
    frames: bool | None = None,
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Callable[[DatasetFactory], DatasetFactory]:
    """Decorator registering ``factory(root, split, **options)`` under ``name``.

    ``frames`` says whether its items are frame sequences ``[T, ...]`` (True) or static
    inputs repeated at every step (False); ``num_classes`` and ``input_shape`` (one step's
    ``(C, H, W)``) describe what it yields at its default options. Leaving out ``frames``
    is deprecated: the experiment then has to look at a sample to find out.
    """
    if frames is None:
        warn_deprecated(f"register_dataset({name!r}) without frames=", "frames=True or False")
    elif not isinstance(frames, bool):
        raise TypeError(f"frames must be True or False, got {frames!r}")
    if input_shape is not None:
        input_shape = tuple(int(n) for n in input_shape)
    return DATASETS.register(name, frames=frames, num_classes=num_classes, input_shape=input_shape)


def dataset_info(name: str) -> DatasetInfo:
    """The registered facts about dataset ``name`` (ValueError listing the names if unknown)."""
    info = DATASETS.info(name)
    return DatasetInfo(
        name.lower(), info.get("frames"), info.get("num_classes"), info.get("input_shape")
    )


def dataset_yields_frames(name: str) -> bool | None:
    """Whether dataset ``name`` yields frame sequences, as registered (``None``: not said)."""
    return dataset_info(name).frames


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
