"""Deterministic stratified splits: train/test, and a validation split carved from train."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset


def stratified_split(
    labels: np.ndarray, test_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into ``(train_idx, test_idx)`` keeping class proportions.

    Each class gets a share of ``test_size`` proportional to its size (largest-remainder
    rounding, so shares differ from exact proportions by less than one sample), with at
    least one sample of every class on each side. The samples of a class are drawn by a
    ``numpy`` generator seeded with ``seed``, so the split depends only on ``labels``,
    ``test_size`` and ``seed``. Both index arrays are sorted ``int64``, disjoint, and
    together cover ``range(len(labels))``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}")
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Integral):
        raise TypeError(f"test_size must be an int, got {test_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {seed!r}")

    if labels.size == 0:
        raise ValueError("labels is empty: nothing to split")

    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n, k = len(labels), len(classes)
    if counts.min() < 2:
        lonely = classes[counts < 2].tolist()
        raise ValueError(
            f"every class needs at least 2 samples to appear in both splits; classes {lonely} "
            "have only 1"
        )
    if not k <= test_size <= n - k:
        raise ValueError(
            f"test_size must be in [{k}, {n - k}] (number of classes .. samples minus classes) "
            f"so that every class is on both sides, got {test_size}"
        )

    quotas = _allocate(counts, int(test_size))
    rng = np.random.default_rng(int(seed))
    train_parts, test_parts = [], []
    for c in range(k):
        members = rng.permutation(np.flatnonzero(inverse == c))
        test_parts.append(members[: quotas[c]])
        train_parts.append(members[quotas[c] :])
    train_idx = np.sort(np.concatenate(train_parts)).astype(np.int64)
    test_idx = np.sort(np.concatenate(test_parts)).astype(np.int64)
    return train_idx, test_idx


def _allocate(counts: np.ndarray, test_size: int) -> np.ndarray:
    """Per-class test counts summing to ``test_size``, each in ``[1, count - 1]``."""
    exact = test_size * counts / counts.sum()
    quotas = np.clip(np.floor(exact).astype(np.int64), 1, counts - 1)
    # Hand out (or take back) the remainder one sample at a time, to the class whose quota
    # lies furthest below (above) its exact share; argmax/argmin break ties by class order.
    while (gap := test_size - int(quotas.sum())) != 0:
        deficit = exact - quotas
        if gap > 0:
            quotas[np.argmax(np.where(quotas < counts - 1, deficit, -np.inf))] += 1
        else:
            quotas[np.argmin(np.where(quotas > 1, deficit, np.inf))] -= 1
    return quotas


class LabelledSubset(Subset):
    """A subset that keeps the dataset's ``num_classes`` and ``labels`` (e.g. the training
    data minus a validation split carved from it)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        super().__init__(dataset, list(map(int, indices)))
        self.num_classes = dataset_num_classes(dataset)
        self.labels = torch.as_tensor(dataset_labels(dataset))[self.indices]


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Every sample's label: the dataset's ``labels`` attribute, else read item by item."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [int(dataset[i][1]) for i in range(len(dataset))]
    return np.asarray(torch.as_tensor(labels), dtype=np.int64)


def dataset_num_classes(dataset: Dataset) -> int:
    """The dataset's ``num_classes`` attribute (a clear error when it has none)."""
    num_classes = getattr(dataset, "num_classes", None)
    if num_classes is None:
        raise TypeError(f"{type(dataset).__name__} has no 'num_classes' attribute")
    return int(num_classes)


def carve_validation(
    train: Dataset, plain: Dataset, fraction: float, seed: int
) -> tuple[LabelledSubset, LabelledSubset, LabelledSubset]:
    """Hold out a stratified ``fraction`` of the training data for model selection.

    ``train`` is the training split with augmentation and ``plain`` the same samples
    without it. Returns ``(train, plain, validation)`` subsets: the first two keep the same
    samples, the validation samples come from ``plain`` (no augmentation) and are disjoint
    from them. The split depends only on the labels, ``fraction`` and ``seed``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    if len(train) != len(plain):
        raise ValueError(f"train ({len(train)}) and plain ({len(plain)}) must hold the same data")
    labels = dataset_labels(plain)
    held_out = max(len(np.unique(labels)), round(fraction * len(labels)))
    keep, validation = stratified_split(labels, held_out, seed)
    return (
        LabelledSubset(train, keep),
        LabelledSubset(plain, keep),
        LabelledSubset(plain, validation),
    )


def stratified_sample(dataset: Dataset, size: int, seed: int) -> Dataset:
    """At most ``size`` samples of ``dataset`` with its class proportions, drawn from
    ``seed`` (the whole dataset when it holds no more than ``size``)."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"sample size must be a positive int, got {size!r}")
    if size >= len(dataset):
        return dataset
    _, chosen = stratified_split(dataset_labels(dataset), int(size), seed)
    return LabelledSubset(dataset, chosen)
