"""Event-camera datasets as ``(float32 frames [T, 2, H, W], int label)`` items.

Registered names (``get_dataset(name, root, split, **options)``), read from a local ``root``
in the published layout or the one Tonic's downloads leave; nothing is ever downloaded:

* ``cifar10-dvs``: AEDAT 2.0 ``<class>/*.aedat`` (or Tonic's AEDAT4 ``CIFAR10DVS/...``),
  128×128, 90/10 split per class.
* ``ncaltech101``: ATIS ``Caltech101/<class>/*.bin``, frames 180×240 (H×W), 90/10 per class.
* ``dvs128-gesture``: AEDAT 3.1 ``DvsGesture/*.aedat`` + ``*_labels.csv`` with the official
  ``trials_to_train.txt`` / ``trials_to_test.txt``, or the ``.npy`` re-encoding
  (``ibmGestureTrain/<recording>/<label>.npy`` as Tonic has it, or ``train/<label>/*.npy``).
* ``nmnist``: ATIS ``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin``, 34×34.

Splits are deterministic: sorted file lists, then (for the 90/10 ones) a seeded stratified
split. Training augmentation is a random translation of up to ±25 native pixels (scaled when
down-sampled), zero fill, the same shift for every frame of a sample. Frames can be cached on
disk (``cache=`` a folder, ``"auto"`` for ``$SPIKECUT_CACHE/frames``, or a
:class:`~spikecut.data.framing.FrameCache`).

:class:`EventSourceDataset` frames any indexable source of ``(events, label)`` pairs, e.g. a
Tonic dataset object, the same way.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._deprecation import renamed_parameters
from ..registry import options_from
from .base import LabelledDataset
from .events import as_events, make_events, read_dvs_gesture, read_events, read_gesture_labels
from .framing import FrameCache, Framing, source_key
from .registry import register_dataset
from .splits import stratified_split
from .transforms import RandomTranslate

__all__ = [
    "CIFAR10_DVS_CLASSES",
    "MAX_SHIFT",
    "EventFrameDataset",
    "EventSample",
    "EventSourceDataset",
    "cifar10_dvs",
    "dvs128_gesture",
    "event_dataset",
    "ncaltech101",
    "nmnist",
]

CIFAR10_DVS_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
MAX_SHIFT = 25  # training translation, in native sensor pixels (SPEC §7)

CacheArg = str | os.PathLike | FrameCache | None


@dataclass(frozen=True)
class EventSample:
    """One recording: ``load()`` returns its events; ``key`` names it in a frame cache."""

    load: Callable[[], np.ndarray]
    key: dict[str, Any] = field(default_factory=dict)


class EventFrameDataset(LabelledDataset):
    """Recordings framed on access into float32 ``[T, 2, h, w]`` tensors, with int labels.

    Frames come from ``cache`` when given (keyed by the sample's key, the framing
    parameters and ``name``), else are built each time. ``transform`` (e.g. augmentation)
    runs after the cache, on every access.
    """

    def __init__(
        self,
        samples: Sequence[EventSample],
        labels: Sequence[int],
        num_classes: int,
        framing: Framing,
        *,
        cache: CacheArg = None,
        transform: Callable[[Tensor], Tensor] | None = None,
        name: str = "",
        classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__(labels, num_classes, transform, name, classes)
        self._check_count(len(samples), "sample")
        self.samples = list(samples)
        self.framing = framing
        self.cache = _as_cache(cache)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one item, ``(T, 2, h, w)``."""
        return self.framing.frame_shape

    def frames(self, index: int) -> np.ndarray:
        """The (cached) frames of sample ``index``, before ``transform``."""
        sample = self.samples[index]

        def build() -> np.ndarray:
            return self.framing(sample.load())

        if self.cache is None:
            return build()
        key = {"dataset": self.name, **sample.key, "framing": self.framing.key()}
        return self.cache.get_or_build(key, build)

    def raw(self, index: int) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.frames(index), dtype=np.float32))


class EventSourceDataset(Dataset):
    """Frames from any indexable source of ``(events, label)``, e.g. a Tonic dataset.

    ``events`` are structured arrays with fields ``x, y, t, p`` in any integer/bool dtypes
    (Tonic's convention). ``sensor_size`` is ``(H, W)``. ``num_classes`` defaults to
    ``len(source.classes)`` when the source has ``classes``, else to one more than the
    largest label (which reads every sample once). Frames are cached only when both
    ``cache`` and ``source_id`` (a string naming the source's contents) are given, since
    nothing else tells two sources apart.
    """

    @renamed_parameters(steps="T")
    def __init__(
        self,
        source: Any,
        sensor_size: tuple[int, int],
        *,
        T: int = 10,
        slicing: str = "time",
        size: tuple[int, int] | None = None,
        augment: bool = False,
        num_classes: int | None = None,
        cache: CacheArg = None,
        source_id: str | None = None,
    ) -> None:
        self.source = source
        self.framing = Framing(tuple(sensor_size), T, slicing, None, _opt_pair(size))
        if num_classes is None:
            classes = getattr(source, "classes", None)
            if classes is not None:
                num_classes = len(classes)
            else:
                num_classes = 1 + max(int(source[i][1]) for i in range(len(source)))
        self.num_classes = int(num_classes)
        self.cache = _as_cache(cache) if source_id is not None else None
        self.source_id = source_id
        self.transform = _augmentation(self.framing) if augment else None

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.framing.frame_shape

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        events, label = self.source[index]

        def build() -> np.ndarray:
            return self.framing(as_events(events))

        if self.cache is None:
            frames = build()
        else:
            key = {"source_id": self.source_id, "index": int(index), **self.framing.key()}
            frames = self.cache.get_or_build(key, build)
        tensor = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        if self.transform is not None:
            tensor = self.transform(tensor)
        label = int(label)
        if not 0 <= label < self.num_classes:
            raise ValueError(f"sample {index}: label {label} outside [0, {self.num_classes - 1}]")
        return tensor, label


def event_dataset(
    name: str,
    split: str,
    samples: list[EventSample],
    labels: Sequence[int] | np.ndarray,
    classes: Sequence[str],
    sensor_size: tuple[int, int],
    T: int = 10,
    slicing: str = "time",
    size: tuple[int, int] | None = None,
    augment: bool = False,
    cache: CacheArg = None,
) -> EventFrameDataset:
    """The one builder of the event datasets: ``samples`` of a ``sensor_size = (H, W)``
    sensor framed into ``T`` slices (``slicing`` "time" or "count", down-sampled to ``size``
    when given), cached by ``cache`` (None, ``"auto"``, a folder or a FrameCache), with
    random translation on the train split when ``augment``."""
    framing = Framing(tuple(sensor_size), T, slicing, None, _opt_pair(size))
    transform = _augmentation(framing) if augment and split == "train" else None
    return EventFrameDataset(
        samples,
        np.asarray(labels).tolist(),
        len(classes),
        framing,
        cache=cache,
        transform=transform,
        name=name,
        classes=classes,
    )


# ---------------------------------------------------------------------------------------------
# Registered datasets


@register_dataset("cifar10-dvs", frames=True, num_classes=10, input_shape=(2, 128, 128))
@renamed_parameters(steps="T", test_fraction="test_size")
@options_from(event_dataset)
def cifar10_dvs(
    root: str | None = None,
    split: str = "train",
    *,
    test_size: float = 0.1,
    seed: int = 0,
    reorient: bool = True,
    **options: Any,
) -> EventFrameDataset:
    """CIFAR10-DVS, 10 classes, 2×128×128 frames, a seeded 90/10 split within each class.

    ``test_size`` is the test share of each class (deprecated name: ``test_fraction``).
    The framing options (``T``, deprecated name ``steps``; ``slicing``, ``size``,
    ``augment``, ``cache``) are those of :func:`event_dataset`.

    Layouts: ``root/<class>/*.aedat`` (the published AEDAT 2.0 release; also under
    ``root/CIFAR10DVS/`` or SpikingJelly's ``root/extract/``) or Tonic's AEDAT4 tree
    ``root/CIFAR10DVS[/CIFAR10DVS]/<class>/*.aedat4``.

    ``reorient`` maps the AEDAT 2.0 events as SpikingJelly does (``x' = 127 - y``,
    ``y' = 127 - x``, ``p' = 1 - p``; see jackd/events-tfds pull request 1): with the
    published bit layout decoded literally, the images come out transposed and mirrored
    and the polarities inverted. AEDAT4 files are used as stored.
    """
    root_path = _need_root(root, "cifar10-dvs")
    bases = [root_path, root_path / "CIFAR10DVS", root_path / "CIFAR10DVS" / "CIFAR10DVS"]
    bases.append(root_path / "extract")
    files, labels = _class_folders(
        "cifar10-dvs", bases, (".aedat", ".aedat4"), classes=CIFAR10_DVS_CLASSES
    )
    idx = _split_per_class(labels, split, test_size, seed)

    samples = []
    for i in idx:
        fix = reorient and files[i].suffix.lower() == ".aedat"
        samples.append(_file_sample(files[i], _reorient_cifar10_dvs if fix else None, reorient=fix))
    return event_dataset(
        "cifar10-dvs", split, samples, labels[idx], CIFAR10_DVS_CLASSES, (128, 128), **options
    )


NCALTECH101_SENSOR = (180, 240)  # (H, W): x < 240, y < 180 on the ATIS saccade recordings


@register_dataset("ncaltech101", frames=True, input_shape=(2, *NCALTECH101_SENSOR))
@renamed_parameters(steps="T", test_fraction="test_size")
@options_from(event_dataset)
def ncaltech101(
    root: str | None = None,
    split: str = "train",
    *,
    test_size: float = 0.1,
    seed: int = 0,
    **options: Any,
) -> EventFrameDataset:
    """N-Caltech101, frames 2×180×240 (H×W), a seeded 90/10 split within each class.

    Options as for ``cifar10-dvs``.

    Layouts: ``root/Caltech101/<class>/*.bin`` (published zip), ``root/<class>/*.bin`` or
    Tonic's ``root/NCALTECH101/Caltech101/<class>/*.bin``. Classes are the sorted folder
    names (``BACKGROUND_Google`` included when present). Events outside 240×180 are dropped.
    """
    root_path = _need_root(root, "ncaltech101")
    bases = [root_path / "Caltech101", root_path / "NCALTECH101" / "Caltech101", root_path]
    files, labels, classes = _class_folders("ncaltech101", bases, (".bin",))
    idx = _split_per_class(labels, split, test_size, seed)
    prepare = functools.partial(_crop, sensor_size=NCALTECH101_SENSOR)
    samples = [_file_sample(files[i], prepare, format="atis") for i in idx]
    return event_dataset(
        "ncaltech101", split, samples, labels[idx], classes, NCALTECH101_SENSOR, **options
    )


@register_dataset("nmnist", frames=True, num_classes=10, input_shape=(2, 34, 34))
@renamed_parameters(steps="T")
@options_from(event_dataset)
def nmnist(root: str | None = None, split: str = "train", **options: Any) -> EventFrameDataset:
    """N-MNIST, 10 digits, 2×34×34 frames, the published Train/Test folders as splits.
    The options are those of :func:`event_dataset`.

    Layouts: ``root/Train/<digit>/*.bin`` and ``root/Test/<digit>/*.bin``, also under
    Tonic's ``root/NMNIST/``. The label is the folder's digit.
    """
    root_path = _need_root(root, "nmnist")
    folder = "Train" if split == "train" else "Test"
    bases = [root_path / folder, root_path / "NMNIST" / folder]
    digits = tuple(str(d) for d in range(10))
    files, labels = _class_folders("nmnist", bases, (".bin",), classes=digits)
    samples = [_file_sample(path, None, format="atis") for path in files]
    return event_dataset("nmnist", split, samples, labels, digits, (34, 34), **options)


DVS_GESTURE_CLASSES = (
    "hand_clapping",
    "right_hand_wave",
    "left_hand_wave",
    "right_arm_clockwise",
    "right_arm_counter_clockwise",
    "left_arm_clockwise",
    "left_arm_counter_clockwise",
    "arm_roll",
    "air_drums",
    "air_guitar",
    "other_gestures",
)


@register_dataset("dvs128-gesture", frames=True, num_classes=11, input_shape=(2, 128, 128))
@renamed_parameters(steps="T")
@options_from(event_dataset)
def dvs128_gesture(
    root: str | None = None, split: str = "train", *, T: int = 16, **options: Any
) -> EventFrameDataset:
    """DVS128 Gesture, 11 classes, 2×128×128 frames (``T`` = 16 by default), the official
    train/test trials. The other options are those of :func:`event_dataset`.

    Layouts, tried in order: the published ``root[/DvsGesture]/`` (SpikingJelly:
    ``root/extract/DvsGesture/``) with ``*.aedat``,
    ``*_labels.csv`` and ``trials_to_train.txt`` / ``trials_to_test.txt`` (each recording is
    cut into one sample per labelled gesture, label = class - 1); Tonic's ``.npy``
    re-encoding ``root[/DVSGesture]/ibmGestureTrain|ibmGestureTest/<recording>/<label>.npy``;
    or ``root/train|test/<label>/*.npy``.
    """
    root_path = _need_root(root, "dvs128-gesture")
    trials = f"trials_to_{split}.txt"
    tonic_folder = "ibmGestureTrain" if split == "train" else "ibmGestureTest"
    aedat_bases = [root_path, root_path / "DvsGesture", root_path / "extract" / "DvsGesture"]
    tonic_bases = [root_path / tonic_folder, root_path / "DVSGesture" / tonic_folder]
    folder_bases = [root_path / split]

    samples: list[EventSample] = []
    labels: list[int] = []
    base = next((b for b in aedat_bases if (b / trials).is_file()), None)
    if base is not None:
        samples, labels = _gesture_aedat_samples(base, trials)
    elif (base := next((b for b in tonic_bases if b.is_dir()), None)) is not None:
        files = sorted(base.glob("*/*.npy"))
        labels = [_int_name(p.stem, p) for p in files]
        samples = [_file_sample(p, None, format="gesture-npy") for p in files]
    elif (base := next((b for b in folder_bases if b.is_dir()), None)) is not None:
        files = sorted(base.glob("*/*.npy"))
        labels = [_int_name(p.parent.name, p) for p in files]
        samples = [_file_sample(p, None, format="gesture-npy") for p in files]
    if base is None or not samples:
        raise FileNotFoundError(
            f"dvs128-gesture {split} split not found under {root_path}; expected one of: "
            + "; ".join(
                [
                    f"{b}/{trials} with the .aedat files and *_labels.csv it lists"
                    for b in aedat_bases
                ]
                + [f"{b}/<recording>/<label>.npy" for b in tonic_bases]
                + [f"{b}/<label>/*.npy" for b in folder_bases]
            )
        )
    return event_dataset(
        "dvs128-gesture", split, samples, labels, DVS_GESTURE_CLASSES, (128, 128), T=T, **options
    )


def _gesture_aedat_samples(base: Path, trials: str) -> tuple[list[EventSample], list[int]]:
    """One sample per labelled gesture of every recording listed in ``base / trials``."""
    names = [line.strip() for line in (base / trials).read_text().splitlines() if line.strip()]
    missing = []
    for name in names:
        aedat = base / name
        csv = aedat.with_name(aedat.stem + "_labels.csv")
        missing += [str(p) for p in (aedat, csv) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"dvs128-gesture: {base / trials} lists recordings whose files are missing: "
            + ", ".join(missing[:10])
            + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
        )
    samples, labels = [], []
    for name in sorted(names):
        aedat = base / name
        table = read_gesture_labels(aedat.with_name(aedat.stem + "_labels.csv"))
        key = source_key(aedat)
        for gesture, row in enumerate(table):
            load = functools.partial(_gesture_events, str(aedat), key["mtime_ns"], gesture)
            samples.append(EventSample(load, {**key, "gesture": gesture}))
            labels.append(int(row[0]) - 1)
    return samples, labels


@functools.lru_cache(maxsize=1)
def _gesture_recording(path: str, mtime_ns: int) -> list[tuple[np.ndarray, int]]:
    """All gestures of one recording; kept while its gestures are framed one after another."""
    return read_dvs_gesture(path)


def _gesture_events(path: str, mtime_ns: int, gesture: int) -> np.ndarray:
    return _gesture_recording(path, mtime_ns)[gesture][0]


# ---------------------------------------------------------------------------------------------
# Helpers shared by the factories


def _need_root(root: str | os.PathLike | None, name: str) -> Path:
    if root is None:
        raise ValueError(
            f"{name} needs root= the folder holding the dataset files; spikecut never "
            "downloads data"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{name}: root folder {path} does not exist")
    return path


def _class_folders(
    name: str,
    bases: Sequence[Path],
    suffixes: tuple[str, ...],
    classes: Sequence[str] | None = None,
) -> Any:
    """Sorted files and labels from the first base holding class folders of event files.

    With fixed ``classes`` every class folder must hold files; returns ``(files, labels)``.
    Without, the classes are the sorted sub-folders holding files; returns ``(files,
    labels, classes)``.
    """
    for base in bases:
        if not base.is_dir():
            continue
        found = classes
        if found is None:
            found = sorted(
                d.name for d in base.iterdir() if d.is_dir() and _event_files(d, suffixes)
            )
        if not found:
            continue
        per_class = [_event_files(base / c, suffixes) for c in found]
        if all(per_class):
            files = [f for group in per_class for f in group]
            labels = np.repeat(np.arange(len(found)), [len(g) for g in per_class])
            return (files, labels) if classes is not None else (files, labels, list(found))
    pattern = "<class>" if classes is None else "{" + ",".join(classes) + "}"
    kinds = "/".join(f"*{s}" for s in suffixes)
    looked = "; ".join(f"{b}/{pattern}/{kinds}" for b in bases)
    raise FileNotFoundError(
        f"{name}: no dataset files found; expected one folder per class holding {kinds} "
        f"files, at one of: {looked}"
    )


def _event_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _split_per_class(labels: np.ndarray, split: str, test_size: float, seed: int) -> np.ndarray:
    """Indices of ``split`` in a seeded stratified split: ``test_size`` (a fraction in
    (0, 1), the share of each class; or an int, the number of test samples) goes to test."""
    k = len(np.unique(labels))
    if isinstance(test_size, float | np.floating):
        if not 0.0 < test_size < 1.0:
            raise ValueError(
                f"test_size as a fraction must lie strictly between 0 and 1, got {test_size}"
            )
        test_size = min(max(round(test_size * len(labels)), k), len(labels) - k)
    train_idx, test_idx = stratified_split(labels, test_size, seed)
    return train_idx if split == "train" else test_idx


def _file_sample(
    path: Path,
    prepare: Callable[[np.ndarray], np.ndarray] | None,
    format: str | None = None,
    **options: Any,
) -> EventSample:
    """A sample reading ``path``; ``options`` (e.g. ``reorient``) join its cache key.

    Built from module-level functions so that datasets pickle (DataLoader workers that
    spawn rather than fork need that).
    """
    load = functools.partial(_load_file, str(path), format, prepare)
    return EventSample(load, {**source_key(path), **options})


def _load_file(
    path: str, format: str | None, prepare: Callable[[np.ndarray], np.ndarray] | None
) -> np.ndarray:
    events = read_events(path, format)
    return prepare(events) if prepare is not None else events


def _reorient_cifar10_dvs(events: np.ndarray) -> np.ndarray:
    """CIFAR10-DVS AEDAT 2.0 as SpikingJelly reads it: ``(127 - y, 127 - x)``, ``1 - p``."""
    return make_events(127 - events["y"], 127 - events["x"], events["t"], 1 - events["p"])


def _crop(events: np.ndarray, sensor_size: tuple[int, int]) -> np.ndarray:
    """Drop the events outside ``sensor_size = (H, W)``."""
    height, width = sensor_size
    keep = (events["x"] >= 0) & (events["x"] < width) & (events["y"] >= 0) & (events["y"] < height)
    return events[keep]


def _int_name(text: str, path: Path) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{path}: expected an integer label in the name, found {text!r}") from None


def _opt_pair(size: Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    h, w = (int(v) for v in size)
    return (h, w)


def _as_cache(cache: CacheArg) -> FrameCache | None:
    """None (frame every access), ``"auto"`` (``$SPIKECUT_CACHE/frames``), a folder, or a cache."""
    if cache is None or isinstance(cache, FrameCache):
        return cache
    if cache == "auto":
        from .emulated import default_cache_dir

        return FrameCache(default_cache_dir() / "frames")
    return FrameCache(Path(cache).expanduser())


def _augmentation(framing: Framing) -> RandomTranslate:
    """Random translation of up to ``MAX_SHIFT`` native pixels, in output pixels."""
    (height, width), (_, _, h, w) = framing.sensor_size, framing.frame_shape
    return RandomTranslate(round(MAX_SHIFT * min(h / height, w / width)), fill=0.0)
