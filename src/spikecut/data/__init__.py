"""Datasets for spikecut: a name registry, embedded real data, splits and transforms.

``get_dataset(name, root, split, **options)`` returns a dataset of ``(float32 [C, H, W],
int label)`` items (event datasets: ``(float32 [T, 2, H, W], int label)``);
``available_datasets()`` lists the names. Event-camera files are read by
:func:`read_events` and framed by :func:`to_frames`, with :class:`FrameCache` on disk.
"""

from . import embedded as _embedded  # noqa: F401  (registers mnist5k and digits)
from . import emulated as _emulated  # noqa: F401  (registers mnist5k-dvs)
from . import event_datasets as _event_datasets  # noqa: F401  (registers the event datasets)
from .base import TensorImageDataset
from .embedded import MNIST_MEAN, MNIST_STD, load_mnist5k, locate_mnist5k
from .emulated import FrameTensorDataset
from .emulator import DVSEmulator, image_to_events, saccade_frames
from .event_datasets import EventFrameDataset, EventSample, EventSourceDataset
from .events import EVENT_DTYPE, EventFileError, make_events, read_dvs_gesture, read_events
from .framing import FrameCache, Framing, source_key, to_frames
from .registry import SPLITS, available_datasets, get_dataset, register_dataset
from .splits import stratified_split
from .transforms import Compose, Normalize, RandomTranslate, translate

__all__ = [
    "DVSEmulator",
    "FrameTensorDataset",
    "image_to_events",
    "saccade_frames",
    "EVENT_DTYPE",
    "EventFileError",
    "EventFrameDataset",
    "EventSample",
    "EventSourceDataset",
    "FrameCache",
    "Framing",
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
    "make_events",
    "read_dvs_gesture",
    "read_events",
    "register_dataset",
    "source_key",
    "stratified_split",
    "to_frames",
    "translate",
]
