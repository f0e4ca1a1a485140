"""The in-memory image dataset that the embedded datasets return."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["TensorImageDataset"]


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
