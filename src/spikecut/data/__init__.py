"""Datasets for spikecut: a name registry, embedded real data, CIFAR-10/100, Tiny-ImageNet and
image-folder readers, event datasets, splits, transforms and the paper's image augmentations.

``get_dataset(name, root, split, **options)`` returns a dataset of ``(float32 [C, H, W],
int label)`` items (event datasets: ``(float32 [T, 2, H, W], int label)``);
``available_datasets()`` lists the names. Event-camera files are read by
:func:`read_events` and framed by :func:`to_frames`, with :class:`FrameCache` on disk.
"""

from . import cifar as _cifar  # noqa: F401  (registers cifar10 and cifar100)
from . import embedded as _embedded  # noqa: F401  (registers mnist5k and digits)
from . import emulated as _emulated  # noqa: F401  (registers mnist5k-dvs, mnist5k-enter)
from . import event_datasets as _event_datasets  # noqa: F401  (registers the event datasets)
from . import image_folder as _image_folder  # noqa: F401  (registers imagefolder)
from . import tiny_imagenet as _tiny_imagenet  # noqa: F401  (registers tiny-imagenet)
from .augment import (
    AUTOAUGMENT_OPS,
    CIFAR10_POLICY,
    AutoAugment,
    Cutout,
    RandomCrop,
    RandomHorizontalFlip,
    ToFloat,
    apply_op,
    op_value,
)
from .base import LabelledDataset, TensorImageDataset
from .cifar import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    BatchUnpickler,
    read_cifar_batch,
)
from .embedded import MNIST_MEAN, MNIST_STD, load_mnist5k, locate_mnist5k
from .emulated import FrameTensorDataset
from .emulator import DVSEmulator, entering_frames, image_to_events, saccade_frames
from .event_datasets import EventFrameDataset, EventSample, EventSourceDataset
from .events import EVENT_DTYPE, EventFileError, make_events, read_dvs_gesture, read_events
from .framing import FrameCache, Framing, source_key, to_frames
from .image_folder import ImageFolderDataset, channel_stats, scan_image_folder
from .images import ByteImageDataset, ImageFileDataset, decode_image, stratified_subset
from .registry import (
    SPLITS,
    DatasetInfo,
    available_datasets,
    dataset_info,
    get_dataset,
    register_dataset,
)
from .splits import stratified_split
from .tiny_imagenet import IMAGENET_MEAN, IMAGENET_STD
from .transforms import Compose, Normalize, RandomTranslate, translate

__all__ = [
    "AUTOAUGMENT_OPS",
    "CIFAR10_MEAN",
    "CIFAR10_POLICY",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AutoAugment",
    "BatchUnpickler",
    "ByteImageDataset",
    "Cutout",
    "ImageFileDataset",
    "ImageFolderDataset",
    "channel_stats",
    "scan_image_folder",
    "LabelledDataset",
    "RandomCrop",
    "RandomHorizontalFlip",
    "ToFloat",
    "apply_op",
    "decode_image",
    "op_value",
    "read_cifar_batch",
    "stratified_subset",
    "DVSEmulator",
    "FrameTensorDataset",
    "entering_frames",
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
    "DatasetInfo",
    "available_datasets",
    "dataset_info",
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
