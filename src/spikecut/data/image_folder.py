"""``imagefolder``: a user's own images in the common image-folder layout.

Layout (``root`` is the folder holding the splits)::

    root/train/<class>/*.{jpg,jpeg,png}
    root/test/<class>/*.{jpg,jpeg,png}

Class index = position of the class folder's name in the sorted names of the training
split's class folders (or in ``classes`` when given), the same for both splits. Every class
must have at least one image in each split; the errors name the folder, the split and what
is missing.

* **Subsets.** ``per_class`` keeps at most that many images of each class, picked by a
  ``seed``-ed shuffle within the class (deterministic: the same files, seed and limit give
  the same subset); an int applies to both splits, a mapping such as ``{train: 1000}`` to
  the splits it names.
* **Decoding** is Pillow's. Every image must have the size of the first one unless ``size``
  is given, which resizes each image (bilinear) to ``(H, W)``.
* **Caching.** ``cache="memory"`` decodes the split once per process into a uint8 tensor
  (CIFAR-10's 50k training images: 150 MB), shared by every dataset built from it;
  ``cache="none"`` decodes each image on access; ``"auto"`` (the default) keeps the split in
  memory when it takes at most a quarter of the free memory. ``cache_dir`` also saves the
  decoded split there (``.npz``, written atomically, keyed by the files' names, sizes and
  modification times), so later processes skip the decoding.
* **Augmentation** (train split, ``augment=True``): the CIFAR recipe of SPEC §7: crop with
  ``padding``, flip, AutoAugment (``autoaugment``), Cutout of ``cutout`` pixels.
* **Normalisation**: ``mean`` and ``std`` from the config, or (the default) computed
  per channel from the training split as selected (same ``per_class`` and ``seed``); the
  values used and where they came from are in the dataset's :attr:`ImageFolderDataset.
  normalization`, which the experiment records in ``results.json``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._io import atomic_write
from .augment import pipeline
from .images import ByteImageDataset, ImageFileDataset, decode_image, image_files
from .registry import register_dataset

__all__ = [
    "ImageFolderDataset",
    "ImageFolderFiles",
    "channel_stats",
    "decode_image_file",
    "imagefolder",
    "scan_image_folder",
]

_MEMORY_SHARE = 4  # "auto" caches a split in memory when it takes <= 1/4 of the free memory
_LAYOUT = "expected root/<split>/<class>/*.jpg|jpeg|png"


class ImageFolderFiles:
    """The image files of one split, their labels and the class names (sorted lists)."""

    def __init__(self, split: str, files: list[Path], labels: np.ndarray, classes: list[str]):
        self.split = split
        self.files = files
        self.labels = labels
        self.classes = classes

    def stamp(self) -> str:
        """A digest of every file's path, size and modification time (keys the caches)."""
        digest = hashlib.sha256()
        for path, label in zip(self.files, self.labels, strict=True):
            stat = path.stat()
            digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.files)


def scan_image_folder(
    root: str | os.PathLike, split: str, classes: Sequence[str] | None = None
) -> ImageFolderFiles:
    """The image files of ``root/split/<class>/``, sorted by class then by name.

    ``classes`` fixes the class names and their order; without it they are the sorted
    folder names of ``root/train`` (so both splits share one labelling). FileNotFoundError
    or ValueError naming the folder, the split and what is missing.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"imagefolder: root {base} is not a folder ({_LAYOUT})")
    folder = base / split
    if not folder.is_dir():
        found = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"imagefolder: no {split!r} split in {base}: {folder} is not a folder ({_LAYOUT}; "
            f"folders found: {', '.join(found) if found else 'none'})"
        )
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if classes is None:
        names = _class_folders(base / "train") if (base / "train").is_dir() else present
        if not names:
            where = base / "train" if (base / "train").is_dir() else folder
            raise FileNotFoundError(f"imagefolder: no class folders in {where} ({_LAYOUT})")
    else:
        names = [str(c) for c in classes]
        if len(set(names)) != len(names):
            raise ValueError(f"imagefolder: classes must not repeat a name, got {names}")
    extra = sorted(set(present) - set(names))
    if extra:
        raise ValueError(
            f"imagefolder: {folder} has class folders that are not among the {len(names)} "
            f"classes ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}): "
            f"{', '.join(extra[:10])}"
        )
    files: list[Path] = []
    labels: list[int] = []
    missing, empty = [], []
    for index, name in enumerate(names):
        class_folder = folder / name
        if not class_folder.is_dir():
            missing.append(str(class_folder))
            continue
        found = image_files(class_folder)
        if not found:
            empty.append(str(class_folder))
        files += found
        labels += [index] * len(found)
    if missing:
        raise FileNotFoundError(
            f"imagefolder: split {split!r} lacks {len(missing)} class folder(s): "
            f"{', '.join(missing[:10])}"
        )
    if empty:
        raise ValueError(
            f"imagefolder: split {split!r} has {len(empty)} class folder(s) with no image "
            f"(*.jpg, *.jpeg, *.png): {', '.join(empty[:10])}"
        )
    return ImageFolderFiles(split, files, np.asarray(labels, dtype=np.int64), names)


def per_class_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` samples of each class, by a ``seed``-ed shuffle
    within each class (all samples when ``limit`` is None)."""
    if limit is None:
        return np.arange(len(labels), dtype=np.int64)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"per_class must be a positive int or None, got {limit!r}")
    rng = np.random.default_rng(int(seed))
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep.append(members[rng.permutation(len(members))[:limit]])
    return np.sort(np.concatenate(keep)).astype(np.int64)


def decode_image_file(
    path: str | os.PathLike, mode: str = "RGB", size: tuple[int, int] | None = None
) -> Tensor:
    """The image at ``path`` as a uint8 ``[C, H, W]`` tensor in ``mode``, resized
    (bilinear) to ``size = (H, W)`` when given (:func:`~spikecut.data.images.decode_image`)."""
    return decode_image(path, size, mode, resize=True)


class _ChannelMoments:
    """Running per-channel sums of uint8 images read as values in [0, 1]: the one
    accumulator behind the in-memory and the streamed channel statistics."""

    def __init__(self) -> None:
        self.total: Tensor | float = 0.0
        self.squares: Tensor | float = 0.0
        self.count = 0

    def add(self, images: Tensor) -> None:
        """Add uint8 images ``[N, C, H, W]``."""
        part = images.to(torch.float64) / 255.0
        self.total = self.total + part.sum(dim=(0, 2, 3))
        self.squares = self.squares + (part * part).sum(dim=(0, 2, 3))
        self.count += images.shape[0] * images.shape[2] * images.shape[3]

    def mean_std(self) -> tuple[list[float], list[float]]:
        mean = self.total / self.count
        std = (self.squares / self.count - mean * mean).clamp_min(0).sqrt()
        return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 ``[N, C, H, W]`` images in [0, 1]."""
    moments = _ChannelMoments()
    for start in range(0, len(images), chunk):
        moments.add(images[start : start + chunk])
    return moments.mean_std()


class ImageFolderDataset(ByteImageDataset):
    """An image-folder split decoded into memory; ``normalization`` says what was used."""

    normalization: dict[str, Any] | None = None
    files: list[str] | None = None


class ImageFolderFileDataset(ImageFileDataset):
    """An image-folder split decoded from its files on every access (``cache="none"``)."""

    normalization: dict[str, Any] | None = None

    def __init__(self, *args: Any, resize: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resize = resize

    def raw(self, index: int) -> Tensor:
        image = decode_image_file(self.files[index], self.mode, self.size if self.resize else None)
        if tuple(image.shape[1:]) != self.size:
            h, w = self.size
            raise ValueError(
                f"imagefolder: {self.files[index]}: expected a {h}x{w} (HxW) image like the "
                f"first of the split, found {image.shape[1]}x{image.shape[2]} (set the "
                "'size' option to resize every image)"
            )
        return image


@register_dataset("imagefolder", frames=False)
def imagefolder(
    root: str | None = None,
    split: str = "train",
    *,
    classes: Sequence[str] | None = None,
    per_class: int | Mapping[str, int | None] | None = None,
    seed: int = 0,
    size: int | Sequence[int] | None = None,
    mode: str = "RGB",
    cache: str = "auto",
    cache_dir: str | None = None,
    augment: bool = False,
    padding: int = 4,
    flip: bool = True,
    autoaugment: bool = True,
    cutout: int = 16,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    normalize: bool = True,
    progress: bool = False,
) -> ImageFolderDataset | ImageFolderFileDataset:
    """Images of ``root/<split>/<class>/``; see the module docstring for every option.

    ``size``: ``(H, W)`` or one int for square images (None: every image the size of the
    first). ``mode``: ``"RGB"`` or ``"L"`` (grey). ``augment`` (train split only) applies
    crop (``padding``; 0 = no crop), ``flip``, ``autoaugment`` and ``cutout`` (0 = off).
    ``mean``/``std``: the normalisation (both or neither; None: computed from the training
    split). ``progress`` shows the one-off decoding.
    """
    if root is None:
        raise ValueError(
            f"imagefolder needs root= the folder holding train/ and test/ ({_LAYOUT}); "
            "spikecut never downloads data"
        )
    if mode not in ("RGB", "L"):
        raise ValueError(f"imagefolder: mode must be 'RGB' or 'L', got {mode!r}")
    if cache not in ("auto", "memory", "none"):
        raise ValueError(f"imagefolder: cache must be 'auto', 'memory' or 'none', got {cache!r}")
    if cache == "none" and cache_dir is not None:
        raise ValueError("imagefolder: cache='none' decodes on access; it takes no cache_dir")
    if isinstance(cutout, bool) or not isinstance(cutout, int) or cutout < 0:
        raise ValueError(f"imagefolder: cutout must be an int >= 0 (0 = off), got {cutout!r}")
    if (mean is None) != (std is None):
        raise ValueError("imagefolder: give both mean and std, or neither (computed from train)")
    shape = _size(size)
    selected = _select(root, split, classes, per_class, seed)
    store = _store(selected, mode, shape, cache, cache_dir, progress)

    stats: tuple[list[float], list[float]] | None = None
    normalization: dict[str, Any] | None = None
    if normalize:
        if mean is not None:
            stats = _check_stats(mean, std, 1 if mode == "L" else 3)
            normalization = {"mean": stats[0], "std": stats[1], "source": "config"}
        else:
            train = (
                selected if split == "train" else _select(root, "train", classes, per_class, seed)
            )
            stats = _train_stats(train, mode, shape, cache, cache_dir, progress)
            normalization = {
                "mean": stats[0],
                "std": stats[1],
                "source": f"computed from the training split ({len(train)} images)",
            }
    training = augment and split == "train"
    height, width = store.input_shape[1:]
    if training and cutout and cutout >= min(height, width):
        raise ValueError(
            f"imagefolder: cutout {cutout} would erase the whole {height}x{width} image wherever "
            "it is centred; give a smaller cutout, or 0 to switch it off"
        )
    transform = pipeline(
        tuple(store.input_shape[1:]),
        stats,
        padding=padding if training and padding else None,
        flip=training and flip,
        autoaugment=training and autoaugment,
        cutout=cutout if training else 0,
    )
    store = store.with_transform(transform)
    store.normalization = normalization
    return store


def _select(
    root: str | os.PathLike,
    split: str,
    classes: Sequence[str] | None,
    per_class: int | Mapping[str, int | None] | None,
    seed: int,
) -> ImageFolderFiles:
    """The split's files after the per-class limit that applies to it."""
    scanned = scan_image_folder(root, split, classes)
    if isinstance(per_class, Mapping):
        unknown = sorted(set(per_class) - {"train", "test"})
        if unknown:
            raise ValueError(
                f"imagefolder: per_class names splits 'train' and 'test', found {unknown}"
            )
        limit = per_class.get(split)
    else:
        limit = per_class
    keep = per_class_subset(scanned.labels, limit, seed)
    if len(keep) == len(scanned):
        return scanned
    return ImageFolderFiles(
        split, [scanned.files[i] for i in keep], scanned.labels[keep], scanned.classes
    )


def _store(
    selected: ImageFolderFiles,
    mode: str,
    size: tuple[int, int] | None,
    cache: str,
    cache_dir: str | None,
    progress: bool,
) -> ImageFolderDataset | ImageFolderFileDataset:
    """The split as a dataset with no transform: decoded in memory, or read per access."""
    shape = size
    in_memory = cache == "memory" or cache_dir is not None
    if cache == "auto" and not in_memory:
        if shape is None:  # the first image's size: every image must have it
            first = decode_image_file(selected.files[0], mode)
            shape = (int(first.shape[1]), int(first.shape[2]))
        channels = 1 if mode == "L" else 3
        in_memory = _fits_in_memory(len(selected) * channels * shape[0] * shape[1])
    name = "imagefolder"
    if in_memory:
        images = _decoded(selected, mode, size, cache_dir, progress)
        dataset = ImageFolderDataset(
            images,
            torch.from_numpy(selected.labels),
            len(selected.classes),
            None,
            name,
            selected.classes,
        )
        dataset.files = [str(f) for f in selected.files]
        return dataset
    if shape is None:
        first = decode_image_file(selected.files[0], mode)
        shape = (int(first.shape[1]), int(first.shape[2]))
    return ImageFolderFileDataset(
        selected.files,
        selected.labels,
        len(selected.classes),
        shape,
        None,
        name,
        selected.classes,
        mode,
        resize=size is not None,
    )


def _decoded(
    selected: ImageFolderFiles,
    mode: str,
    size: tuple[int, int] | None,
    cache_dir: str | None,
    progress: bool,
) -> Tensor:
    """The split decoded to uint8 ``[N, C, H, W]``: from this process's cache, from
    ``cache_dir``, or from the files (then saved to ``cache_dir`` when given)."""
    key = hashlib.sha256(json.dumps([selected.stamp(), mode, size]).encode()).hexdigest()[:20]
    cached = Path(cache_dir).expanduser() / f"imagefolder-{key}.npz" if cache_dir else None
    images = _DECODED.pop(key, None)
    if images is None and cached is not None:
        images = _load_cached(cached, len(selected))
    decoded = images is None
    if decoded:
        images = _decode_split(selected.files, mode, size, progress)
    if cached is not None and (decoded or not cached.is_file()):  # a bad cache file is replaced
        _save_cached(cached, images)
    _DECODED[key] = images  # the latest two splits stay (e.g. an experiment's train and test)
    while len(_DECODED) > 2:
        _DECODED.pop(next(iter(_DECODED)))
    return images


_DECODED: dict[str, Tensor] = {}


def _decode_split(
    files: list[Path], mode: str, size: tuple[int, int] | None, progress: bool
) -> Tensor:
    """Every file decoded into one uint8 ``[N, C, H, W]`` tensor (all of one size)."""
    first = decode_image_file(files[0], mode, size)
    shape = tuple(first.shape)
    images = np.empty((len(files), *shape), dtype=np.uint8)
    for index, path in enumerate(
        tqdm(files, desc="decoding images", unit="img", disable=not progress, leave=False)
    ):
        image = first if index == 0 else decode_image_file(path, mode, size)
        if tuple(image.shape) != shape:
            raise ValueError(
                f"imagefolder: {path}: expected a {shape[1]}x{shape[2]} (HxW) image like "
                f"{files[0]}, found {image.shape[1]}x{image.shape[2]} (set the 'size' option "
                "to resize every image)"
            )
        images[index] = image.numpy()
    return torch.from_numpy(images)


def _load_cached(path: Path, count: int) -> Tensor | None:
    """The decoded split saved at ``path``; None when absent, unreadable or of another size."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            images = stored["images"]
    except (OSError, ValueError, KeyError):
        return None  # unreadable or foreign: decoded again and overwritten
    return torch.from_numpy(images) if len(images) == count else None


def _save_cached(path: Path, images: Tensor) -> None:
    """Save a decoded split at ``path`` (``.npz``), atomically: a crash leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, images=images.numpy())
        tmp.write_bytes(buffer.getvalue())

    atomic_write(path, write)


def _train_stats(
    train: ImageFolderFiles,
    mode: str,
    size: tuple[int, int] | None,
    cache: str,
    cache_dir: str | None,
    progress: bool,
) -> tuple[list[float], list[float]]:
    """Channel mean and std of the training split: from its decoded copy when it is cached,
    else streamed over the files one image at a time."""
    store = _store(train, mode, size, cache, cache_dir, progress)
    if isinstance(store, ImageFolderDataset):
        return channel_stats(store.images)
    return _streamed_stats(train.stamp(), tuple(train.files), mode, size)


@functools.lru_cache(maxsize=4)
def _streamed_stats(
    stamp: str, files: tuple[Path, ...], mode: str, size: tuple[int, int] | None
) -> tuple[list[float], list[float]]:
    moments = _ChannelMoments()
    for path in files:
        moments.add(decode_image_file(path, mode, size).unsqueeze(0))
    return moments.mean_std()


def _fits_in_memory(nbytes: int) -> bool:
    from ..memory import available_bytes

    return nbytes * _MEMORY_SHARE <= available_bytes("cpu")


def _size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    values = [size] * 2 if isinstance(size, int) and not isinstance(size, bool) else list(size)
    if len(values) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
    ):
        raise ValueError(f"imagefolder: size must be a positive int or [H, W], got {size!r}")
    return (values[0], values[1])


def _check_stats(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[list[float], list[float]]:
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"imagefolder: mean and std need {channels} value(s) each (one per channel), "
            f"found {len(mean)} and {len(std)}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"imagefolder: std must be positive, found {std}")
    return mean, std


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())
