"""Image datasets that keep 8-bit pixels: in memory (CIFAR) or decoded from files on access
(Tiny-ImageNet), plus the seeded class-balanced subset used for smoke runs (``limit=``).

Items are ``(float32 [C, H, W], int label)``: the stored uint8 image goes through
``transform``, which augments on uint8 pixels and ends with the conversion to float and the
normalisation (see :mod:`spikecut.data.augment`). Without a transform an item is the image
in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .augment import ToFloat
from .base import LabelledDataset, TensorImageDataset, Transform

__all__ = [
    "IMAGE_SUFFIXES",
    "ByteImageDataset",
    "ImageFileDataset",
    "decode_image",
    "image_files",
    "stratified_subset",
]

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class ByteImageDataset(TensorImageDataset):
    """Images held in memory as one uint8 ``[N, C, H, W]`` tensor (CIFAR: 150 MB for 50k),
    converted to float per item by ``transform``; without one an item is the image in [0, 1]."""

    image_dtype = torch.uint8

    def plain(self, item: Tensor) -> Tensor:
        return ToFloat()(item)


class ImageFileDataset(LabelledDataset):
    """Images decoded from files on every access (:func:`decode_image`), nothing cached.

    Every file must decode to ``size = (H, W)`` pixels in ``mode`` ("RGB" or "L"); a file that
    does not raises ValueError naming it when it is read.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        labels: Sequence[int] | np.ndarray | Tensor,
        num_classes: int,
        size: tuple[int, int],
        transform: Transform | None = None,
        name: str = "",
        classes: Sequence[str] | None = None,
        mode: str = "RGB",
    ) -> None:
        super().__init__(labels, num_classes, transform, name, classes)
        self._check_count(len(files), "file")
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
        self.files = [str(f) for f in files]
        self.size = (int(size[0]), int(size[1]))
        self.mode = mode

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one item, ``(C, H, W)``."""
        return (3 if self.mode == "RGB" else 1, *self.size)

    def raw(self, index: int) -> Tensor:
        return decode_image(self.files[index], self.size, self.mode)

    def plain(self, item: Tensor) -> Tensor:
        return ToFloat()(item)


def decode_image(
    path: str | os.PathLike,
    size: tuple[int, int] | None,
    mode: str = "RGB",
    resize: bool = False,
) -> Tensor:
    """The image file at ``path`` as a uint8 ``[C, H, W]`` tensor, converted to ``mode``.

    ``size = (H, W)``: the size the image must have (ValueError naming the file if not), or
    with ``resize`` the size it is resized to (bilinear); None: any size. ValueError naming
    the file if Pillow cannot decode it.
    """
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if resize and size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a decodable image file ({exc})") from exc
    if size is not None and image.size != (size[1], size[0]):
        raise ValueError(
            f"{path}: expected a {size[0]}x{size[1]} (HxW) image, found "
            f"{image.height}x{image.width}"
        )
    array = np.array(image, dtype=np.uint8)  # a writable copy
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def image_files(folder: Path) -> list[Path]:
    """Sorted image files (``IMAGE_SUFFIXES``, any case) in ``folder``; none if it does not
    exist. One directory scan, no stat per file (a Tiny-ImageNet class has 500)."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        names = [
            e.name
            for e in entries
            if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
        ]
    return [folder / name for name in sorted(names)]


def stratified_subset(
    labels: Sequence[int] | np.ndarray, limit: int | None, seed: int
) -> np.ndarray:
    """Sorted indices of ``limit`` samples spread evenly over the classes (all if ``None`` or
    ``limit >= len(labels)``).

    The samples of each class are shuffled by a numpy generator seeded with ``seed``; then the
    first sample of every class is taken, then the second, and so on, so class counts differ
    by at most one while a class has samples left. Depends only on ``labels``, ``limit`` and
    ``seed``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1
    ):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if limit is None or limit >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(int(seed))
    order = rng.permutation(n)
    shuffled = labels[order]
    # rank of each (shuffled) sample among the samples of its class
    by_class = np.argsort(shuffled, kind="stable")
    sorted_labels = shuffled[by_class]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - starts
    picked = order[np.argsort(rank, kind="stable")[:limit]]
    return np.sort(picked).astype(np.int64)


def locate_folder(
    dataset: str, root: str | os.PathLike | None, folder: str, files: Sequence[str], layout: str
) -> Path:
    """The folder holding every one of ``files``: ``root`` itself or ``root / folder``.

    ``root=None`` is a ValueError (spikecut never downloads); otherwise a FileNotFoundError
    that lists every missing path tried and describes the expected ``layout``.
    """
    if root is None:
        raise ValueError(
            f"{dataset} needs root= the folder holding {folder}/ (or {folder} itself); "
            "spikecut never downloads data"
        )
    base = Path(root).expanduser()
    candidates = [base, base / folder]
    for candidate in candidates:
        if all((candidate / f).is_file() for f in files):
            return candidate
    missing = [str(c / f) for c in candidates for f in files if not (c / f).is_file()]
    raise FileNotFoundError(
        f"{dataset} files not found: expected {', '.join(files)} together in {base} or in "
        f"{base / folder} ({layout}); missing: {', '.join(missing)}"
    )
