"""CIFAR-10 and CIFAR-100 from the official python pickle batches (nothing is downloaded).

* ``cifar10``: ``cifar-10-batches-py/data_batch_1..5`` (train), ``test_batch`` (test) and
  ``batches.meta`` (class names, optional), 10 classes.
* ``cifar100``: ``cifar-100-python/train``, ``test`` and ``meta`` (optional), 100 fine
  classes (``label="coarse"``: the 20 superclasses).

``root`` is the folder holding these files or its parent (the folder the tarball was
extracted in). A batch is a dict with ``data``, a uint8 array ``[N, 3072]`` whose rows hold
1024 red, 1024 green and 1024 blue values, each a row-major 32×32 plane, and ``labels``
(CIFAR-100: ``fine_labels``/``coarse_labels``). The official files were pickled by Python 2,
so their keys read as bytes (``b"data"``); Python 3 re-pickles have str keys; both are read.

Pickle can run arbitrary code, so the batches are read with an unpickler that refuses every
global except numpy's array and dtype reconstruction (:class:`BatchUnpickler`); a file
naming anything else is rejected, never executed.

Images stay in memory as uint8 ``[N, 3, 32, 32]`` (150 MB for the 50k training images) and
become float per item: training augmentation (SPEC §7) crops 32 with padding 4, flips,
applies AutoAugment on the uint8 pixels, then normalises and applies Cutout 16. A split is
parsed once per process and file version and shared by every dataset built from it (e.g.
the training and calibration sets of an experiment).
"""

from __future__ import annotations

import codecs
import functools
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..registry import options_from
from .augment import pipeline
from .images import ByteImageDataset, locate_folder, stratified_subset
from .registry import register_dataset

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "BatchUnpickler",
    "cifar10",
    "cifar100",
    "cifar_dataset",
    "locate_cifar",
    "read_cifar_batch",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (129.3 / 255, 124.1 / 255, 112.4 / 255)
CIFAR100_STD = (68.2 / 255, 65.4 / 255, 70.4 / 255)

_PIXELS = 3 * 32 * 32


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch needs: numpy's array/dtype reconstruction helpers."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 pickles of bytes at protocol <= 2 (e.g. an array's raw data)
        ("_codecs", "encode"): codecs.encode,
    }
    for package in ("numpy.core", "numpy._core"):  # numpy 1 / numpy 2 names
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only containers, numbers, strings and numpy arrays.

    ``find_class`` refuses every global outside numpy's array reconstruction helpers
    (``numpy.core.multiarray._reconstruct`` / numpy 2's ``numpy._core.multiarray.
    _reconstruct``, ``numpy.ndarray``, ``numpy.dtype``, ``_frombuffer`` for protocol 5 and
    ``_codecs.encode`` for protocol-2 bytes), so a crafted file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_globals().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR batch holds only numpy "
                "arrays, lists, numbers and strings"
            )
        return found


def read_cifar_batch(
    path: str | os.PathLike, label_key: str = "labels", num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8 [N, 3072], labels int64 [N])`` from one pickle batch, validated.

    ``label_key`` is ``"labels"`` (CIFAR-10), ``"fine_labels"`` or ``"coarse_labels"``
    (CIFAR-100); labels must lie in ``0..num_classes - 1``. ValueError naming the file and
    what was expected vs found for anything else.
    """
    batch = _load_pickle(path)
    data = batch.get("data")
    if data is None or label_key not in batch:
        raise ValueError(
            f"{path}: expected a CIFAR batch with keys 'data' and {label_key!r}, found keys "
            f"{sorted(batch)}"
        )
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _PIXELS
    ):
        found = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise ValueError(
            f"{path}: expected 'data' to be a uint8 array [N, {_PIXELS}] (rows of 1024 red, "
            f"1024 green, 1024 blue values), found {found}"
        )
    labels = _int_array(batch[label_key], path, label_key)
    if len(labels) != len(data):
        raise ValueError(
            f"{path}: expected {len(data)} {label_key!r} (one per row of 'data'), "
            f"found {len(labels)}"
        )
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"{path}: {label_key!r} must lie in 0..{num_classes - 1}, found {int(labels[bad][0])} "
            f"at index {int(np.flatnonzero(bad)[0])} ({int(bad.sum())} bad label(s) in all)"
        )
    return data, labels


def read_cifar_meta(path: str | os.PathLike, key: str, num_classes: int) -> list[str]:
    """The ``num_classes`` class names stored under ``key`` in a meta file."""
    meta = _load_pickle(path)
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or len(names) != num_classes:
        found = f"{len(names)} names" if isinstance(names, (list, tuple)) else repr(type(names))
        raise ValueError(
            f"{path}: expected {num_classes} class names under {key!r}, found {found} "
            f"(keys: {sorted(meta)})"
        )
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def locate_cifar(root: str | os.PathLike | None, folder: str, files: Sequence[str]) -> Path:
    """The folder holding every one of ``files``: ``root`` itself or ``root / folder``."""
    layout = f"root is the extracted {folder}/ folder or its parent"
    return locate_folder("CIFAR", root, folder, files, layout)


def cifar_dataset(
    name: str,
    root: str | None,
    split: str,
    folder: str,
    files: list[str],
    meta: tuple[str, str],
    label_key: str,
    num_classes: int,
    stats: tuple[Sequence[float], Sequence[float]],
    augment: bool = False,
    autoaugment: bool = True,
    cutout: int = 16,
    limit: int | None = None,
    seed: int = 0,
    normalize: bool = True,
) -> ByteImageDataset:
    """The ``split`` of a CIFAR release in ``folder`` (the batch ``files``, the ``meta`` file
    and key naming the classes, the ``label_key``): the one builder of ``cifar10`` and
    ``cifar100``, normalised with ``stats`` (mean, std) when ``normalize``.

    ``augment`` (train split only): crop 32 pad 4, flip, AutoAugment (``autoaugment``),
    Cutout of ``cutout`` pixels (0 = off). ``limit``: keep that many samples, spread evenly
    over the classes by a ``seed``-ed pick (for smoke runs).
    """
    if isinstance(cutout, bool) or not isinstance(cutout, int) or cutout < 0:
        raise ValueError(f"cutout must be an int >= 0 (0 = off), got {cutout!r}")
    base = locate_cifar(root, folder, files)
    paths = [base / f for f in files]
    meta_path = base / meta[0]
    meta_stamp = _stamp(meta_path) if meta_path.is_file() else None
    images, labels, classes = _load_split(
        tuple(_stamp(p) for p in paths), meta_stamp, meta[1], label_key, num_classes
    )
    if limit is not None:
        keep = stratified_subset(labels.numpy(), limit, seed)
        if len(keep) < len(labels):
            index = torch.from_numpy(keep)
            images, labels = images[index], labels[index]
    train = augment and split == "train"
    transform = pipeline(
        32,
        stats if normalize else None,
        padding=4 if train else None,
        flip=train,
        autoaugment=train and autoaugment,
        cutout=cutout if train else 0,
    )
    return ByteImageDataset(images, labels, num_classes, transform, name, classes)


@register_dataset("cifar10", frames=False, num_classes=10, input_shape=(3, 32, 32))
@options_from(cifar_dataset)
def cifar10(root: str | None = None, split: str = "train", **options) -> ByteImageDataset:
    """CIFAR-10 as ``[3, 32, 32]`` images, normalised with the CIFAR-10 mean/std (SPEC §7).

    The options (``augment``, ``autoaugment``, ``cutout``, ``limit``, ``seed``,
    ``normalize``) are those of :func:`cifar_dataset`.
    """
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    meta = ("batches.meta", "label_names")
    stats = (CIFAR10_MEAN, CIFAR10_STD)
    folder = "cifar-10-batches-py"
    return cifar_dataset(
        "cifar10", root, split, folder, files, meta, "labels", 10, stats, **options
    )


@register_dataset("cifar100", frames=False, num_classes=100, input_shape=(3, 32, 32))
@options_from(cifar_dataset)
def cifar100(
    root: str | None = None, split: str = "train", *, label: str = "fine", **options
) -> ByteImageDataset:
    """CIFAR-100 as ``[3, 32, 32]`` images, normalised with the CIFAR-100 mean/std (SPEC §7).

    ``label``: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses). The other options
    are as for ``cifar10``.
    """
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    files = ["train" if split == "train" else "test"]
    meta = ("meta", f"{label}_label_names")
    stats = (CIFAR100_MEAN, CIFAR100_STD)
    k = 100 if label == "fine" else 20
    return cifar_dataset(
        "cifar100",
        root,
        split,
        "cifar-100-python",
        files,
        meta,
        f"{label}_labels",
        k,
        stats,
        **options,
    )


_Stamp = tuple[str, int, int]


def _stamp(path: Path) -> _Stamp:
    """``(path, mtime_ns, size)``: keys the parse cache so that a changed file is re-read."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _load_split(
    files: tuple[_Stamp, ...],
    meta: _Stamp | None,
    meta_key: str,
    label_key: str,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """Images uint8 ``[N, 3, 32, 32]``, labels int64 ``[N]`` and class names of the batches."""
    parts = [read_cifar_batch(f[0], label_key, num_classes) for f in files]
    data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts])
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    classes = read_cifar_meta(meta[0], meta_key, num_classes) if meta is not None else None
    return images, torch.from_numpy(labels), classes


def _load_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """A pickled dict through :class:`BatchUnpickler`, its bytes keys decoded to str."""
    try:
        with open(path, "rb") as fh:
            # encoding="bytes": Python 2 str objects (the official files' keys) stay bytes.
            obj = BatchUnpickler(fh, encoding="bytes").load()
    except OSError:
        raise
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: not a readable CIFAR pickle batch ({exc})") from exc
    except Exception as exc:  # anything else a truncated or corrupt stream raises
        raise ValueError(
            f"{path}: not a readable CIFAR pickle batch (truncated or corrupt: "
            f"{type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _int_array(values: Any, path: str | os.PathLike, key: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or not (array.dtype.kind in "iu" or array.size == 0):
        raise ValueError(
            f"{path}: expected {key!r} to be a list of integers, found "
            f"{type(values).__name__} of dtype {array.dtype} and shape {array.shape}"
        )
    return array.astype(np.int64)
