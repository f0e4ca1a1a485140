"""The base of spikecut's labelled datasets, and the in-memory image dataset of the embedded data.

:class:`LabelledDataset` holds what every dataset of ``(x, int label)`` items shares: the
labels checked once against the number of classes, optional class names, a per-item
``transform``, the name and the ``repr``. A subclass only says how to read the stored item
(:meth:`LabelledDataset.raw`) and its shape (:attr:`LabelledDataset.input_shape`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["LabelledDataset", "TensorImageDataset"]

Transform = Callable[[Tensor], Tensor]


class LabelledDataset(Dataset):
    """Items ``(transform(raw(i)), labels[i])`` with the labels held in memory.

    ``labels`` are integers in ``0..num_classes - 1`` (any 1-D sequence, array or tensor of
    integers; stored as an int64 tensor); ``classes``, when given, names each class.
    ``transform`` (e.g. augmentation) runs on every access; without one an item is
    :meth:`plain` of the stored item.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | Tensor,
        num_classes: int,
        transform: Transform | None = None,
        name: str = "",
        classes: Sequence[str] | None = None,
    ) -> None:
        self.labels = _as_labels(labels, num_classes)
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"expected {num_classes} class names, got {len(classes)}")
        self.num_classes = int(num_classes)
        self.transform = transform
        self.name = name
        self.classes = list(classes) if classes is not None else None

    def _check_count(self, count: int, item: str) -> None:
        """ValueError unless there is one label per ``item`` (e.g. "image") of ``count``."""
        if count != len(self.labels):
            raise ValueError(
                f"expected one label per {item}: labels must be an int64 tensor [{count}], "
                f"got {len(self.labels)} labels"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one item."""
        raise NotImplementedError

    def raw(self, index: int) -> Tensor:
        """The stored item ``index`` before ``transform`` (treat as read-only)."""
        raise NotImplementedError

    def plain(self, item: Tensor) -> Tensor:
        """What a stored item becomes when there is no ``transform`` (here: itself)."""
        return item

    def with_transform(self, transform: Transform | None) -> Any:
        """The same data (shared, not copied) with another ``transform``."""
        other = copy.copy(self)
        other.transform = transform
        return other

    def without_transform(self) -> Any:
        """The same data with no transform (e.g. for calibration on the training split)."""
        return self.with_transform(None)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        item = self.raw(index)
        item = self.transform(item) if self.transform is not None else self.plain(item)
        return item, int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"transform={self.transform!r})"
        )


def _as_labels(labels: Sequence[int] | np.ndarray | Tensor, num_classes: int) -> Tensor:
    """``labels`` as an int64 tensor ``[N]``; ValueError unless integers in 0..K-1."""
    found = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, Tensor) else labels
    if found.numel() == 0 and found.ndim == 1:
        found = found.long()
    if found.ndim != 1 or found.dtype.is_floating_point or found.dtype == torch.bool:
        raise ValueError(
            f"labels must be a 1-D sequence of integers, got {found.dtype} of shape "
            f"{tuple(found.shape)}"
        )
    found = found.long()
    if len(found) and (found.min() < 0 or found.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}], found "
            f"{int(found.min())}..{int(found.max())}"
        )
    return found


class TensorImageDataset(LabelledDataset):
    """Images held in memory as one ``[N, C, H, W]`` float32 tensor with integer labels.

    Items without a transform are views of ``images``, so treat them as read-only.
    """

    image_dtype = torch.float32

    def __init__(
        self,
        images: Tensor,
        labels: Sequence[int] | np.ndarray | Tensor,
        num_classes: int,
        transform: Transform | None = None,
        name: str = "",
        classes: Sequence[str] | None = None,
    ) -> None:
        if images.ndim != 4 or images.dtype != self.image_dtype:
            raise ValueError(
                f"images must be a {str(self.image_dtype).removeprefix('torch.')} tensor "
                f"[N, C, H, W], got {images.dtype} "
                f"of shape {tuple(images.shape)}"
            )
        super().__init__(labels, num_classes, transform, name, classes)
        self._check_count(len(images), "image")
        self.images = images

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one item, ``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    def raw(self, index: int) -> Tensor:
        return self.images[index]
