"""Datasets for spikecut: a name registry, embedded real data, splits and transforms.

``get_dataset(name, root, split, **options)`` returns a dataset of ``(float32 [C, H, W],
int label)`` items; ``available_datasets()`` lists the names.
"""

from . import embedded as _embedded  # noqa: F401  (registers mnist5k and digits)
from .base import TensorImageDataset
from .embedded import MNIST_MEAN, MNIST_STD, load_mnist5k, locate_mnist5k
from .registry import SPLITS, available_datasets, get_dataset, register_dataset
from .splits import stratified_split
from .transforms import Compose, Normalize, RandomTranslate, translate

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "SPLITS",
    "Compose",
    "Normalize",
    "RandomTranslate",
    "TensorImageDataset",
    "available_datasets",
    "get_dataset",
    "load_mnist5k",
    "locate_mnist5k",
    "register_dataset",
    "stratified_split",
    "translate",
]
