"""``mnist5k-dvs`` and ``mnist5k-enter``: the embedded MNIST-5k seen through the DVS emulator.

In ``mnist5k-dvs`` each digit is moved along N-MNIST-style saccades in front of an emulated
34×34 event camera (:mod:`spikecut.data.emulator`); in ``mnist5k-enter`` it first slides into
the field of view from a random side, so early slices see only part of it. The events are
cut into T count frames ``[T, 2, 34, 34]``.
The split is MNIST-5k's own (same seed, same 4000/1000 digits). Every sample's noise comes
from its own generator seeded by (seed, digit index), so the frames do not depend on the
order of conversion. The frames of a split are cached on disk as one array keyed by the
source file, every emulator parameter and every framing parameter.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._deprecation import renamed_parameters
from ..registry import options_from
from .base import LabelledDataset
from .embedded import load_mnist5k, locate_mnist5k
from .emulator import (
    ENTRY_SIDES,
    NMNIST_SACCADE_VERTICES,
    NMNIST_SENSOR_SIZE,
    DVSEmulator,
    entering_frames,
    saccade_frames,
)
from .framing import FrameCache, Framing, source_key
from .registry import register_dataset
from .splits import stratified_split
from .transforms import RandomTranslate

__all__ = [
    "FrameTensorDataset",
    "default_cache_dir",
    "emulated_mnist5k",
    "mnist5k_dvs",
    "mnist5k_enter",
]


def default_cache_dir() -> Path:
    """``$SPIKECUT_CACHE`` or ``~/.cache/spikecut``: where derived data is kept."""
    return Path(os.environ.get("SPIKECUT_CACHE", Path.home() / ".cache" / "spikecut"))


class FrameTensorDataset(LabelledDataset):
    """Event frames held in memory, ``[N, T, 2, H, W]`` counts, served as float32 items.

    Counts are stored compactly (any integer dtype); ``transform`` (augmentation) runs on
    each float32 item ``[T, 2, H, W]``.
    """

    def __init__(
        self,
        frames: np.ndarray | Tensor,
        labels: np.ndarray | Tensor,
        num_classes: int,
        transform: Callable[[Tensor], Tensor] | None = None,
        name: str = "",
        classes: Sequence[str] | None = None,
    ) -> None:
        frames = torch.as_tensor(frames)
        if frames.dim() != 5 or frames.shape[2] != 2:
            raise ValueError(f"frames must be [N, T, 2, H, W], got shape {tuple(frames.shape)}")
        super().__init__(labels, num_classes, transform, name, classes)
        self._check_count(len(frames), "frame sequence")
        self.frames_data = frames

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Shape of one item, ``(T, 2, H, W)``."""
        t, c, h, w = self.frames_data.shape[1:]
        return (t, c, h, w)

    def raw(self, index: int) -> Tensor:
        return self.frames_data[index].to(torch.float32)


Motion = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
"""``motion(image, rng) -> (frames [S, H, W], timestamps_us [S])``: what the sensor sees."""


def emulate_frames(
    images: np.ndarray,
    indices: np.ndarray,
    emulator: DVSEmulator,
    framing: Framing,
    seed: int,
    progress: bool = True,
    motion: Motion | None = None,
) -> np.ndarray:
    """Frames ``[N, T, 2, H, W]`` (uint8, or uint16 if a count exceeds 255) of ``images``.

    ``images`` are ``[N, h, w]`` in [0, 1]; ``indices`` name each image for its noise seed
    (the generator also draws whatever is random in ``motion``, e.g. an entry side).
    ``motion`` defaults to N-MNIST-style saccades (:func:`saccade_frames`).
    """
    out = np.empty((len(images), *framing.frame_shape), dtype=np.uint16)
    for row, (image, index) in enumerate(
        tqdm(
            zip(images, indices, strict=True),
            total=len(images),
            desc="emulate DVS",
            disable=not progress,
            leave=False,
        )
    ):
        rng = np.random.default_rng([seed, int(index)])
        if motion is None:
            frames, times = saccade_frames(image, framing.sensor_size)
        else:
            frames, times = motion(image, rng)
        events = emulator.emulate(frames, times, rng=rng)
        counts = framing(events)
        if counts.max() > np.iinfo(np.uint16).max:
            raise ValueError(f"digit {index}: a pixel count of {counts.max()} overflows uint16")
        out[row] = counts
    return out.astype(np.uint8) if out.max() <= 255 else out


def _emulator_options(
    contrast: float, refractory_us: int, mismatch: float, noise_rate_hz: float
) -> dict:
    """The :class:`DVSEmulator` options of a dataset, as plain values for its cache key."""
    return {
        "contrast": float(contrast),
        "refractory_us": int(refractory_us),
        "mismatch": float(mismatch),
        "noise_rate_hz": float(noise_rate_hz),
    }


def emulated_mnist5k(
    name: str,
    root: str | None,
    split: str,
    motion: Motion | None,
    motion_key: dict,
    window: tuple[int, int] | None,
    T: int = 8,
    slicing: str = "time",
    test_size: int = 1000,
    seed: int = 0,
    augment: bool = False,
    max_shift: int = 3,
    contrast: float = 0.25,
    refractory_us: int = 1000,
    mismatch: float = 0.02,
    noise_rate_hz: float = 0.0,
    limit: int | None = None,
    cache: str | None = None,
    progress: bool = True,
) -> FrameTensorDataset:
    """The split of MNIST-5k seen by the emulator moving as ``motion``, framed and cached:
    the one builder of ``mnist5k-dvs`` and ``mnist5k-enter``.

    ``motion`` (None: N-MNIST-style saccades) and ``motion_key`` (its parameters, for the
    cache key) say how the digit moves; ``window`` is the time span cut into ``T`` slices
    (None: the recording's), ``slicing`` "time" or "count". The emulator options are those
    of :class:`~spikecut.data.emulator.DVSEmulator` (threshold ``contrast``, refractory
    period, threshold ``mismatch``, background ``noise_rate_hz``). ``augment`` shifts
    training frames by up to ``max_shift`` pixels (zero fill). ``cache`` is a folder
    (default :func:`default_cache_dir`); the first use emulates the split (about 15 s per
    5000 digits on one core) and later uses read it back. ``limit`` keeps a seeded random
    subset of that many digits of the split (for quick checks).
    """
    framing = Framing(NMNIST_SENSOR_SIZE, T, slicing, window=window)
    emulator_options = _emulator_options(contrast, refractory_us, mismatch, noise_rate_hz)
    path = locate_mnist5k(root)
    pixels, labels = load_mnist5k(path)
    train_idx, test_idx = stratified_split(labels, test_size, seed)
    idx = np.asarray(train_idx if split == "train" else test_idx)
    if limit is not None:
        if not 1 <= limit <= len(idx):
            raise ValueError(f"limit must be in 1..{len(idx)} for the {split} split, got {limit}")
        idx = np.sort(np.random.default_rng([seed, limit]).permutation(idx)[:limit])
    emulator = DVSEmulator(**emulator_options, seed=seed)
    key = {
        "dataset": name,
        "source": source_key(path),
        "split": split,
        "test_size": int(test_size),
        "seed": int(seed),
        "limit": limit,
        "emulator": emulator_options,
        "framing": framing.key(),
    }
    if motion_key:
        key["motion"] = motion_key
    store = FrameCache(cache if cache is not None else default_cache_dir() / "frames")
    images = pixels[idx].reshape(-1, 28, 28).astype(np.float64) / 255.0
    frames = store.get_or_build(
        key, lambda: emulate_frames(images, idx, emulator, framing, seed, progress, motion)
    )
    transform = RandomTranslate(max_shift, fill=0.0) if augment and split == "train" else None
    return FrameTensorDataset(
        torch.from_numpy(np.ascontiguousarray(frames)),
        labels[idx],
        10,
        transform,
        f"{name}/{split}",
    )


@register_dataset("mnist5k-dvs", frames=True, num_classes=10, input_shape=(2, 34, 34))
@renamed_parameters(steps="T")
@options_from(emulated_mnist5k)
def mnist5k_dvs(root: str | None = None, split: str = "train", **options) -> FrameTensorDataset:
    """MNIST-5k through the emulated event camera: items ``[T, 2, 34, 34]`` event counts,
    each digit moved along N-MNIST-style saccades.

    ``root`` locates ``mnist_5k.csv.gz`` as for ``mnist5k``. The options (``T``, deprecated
    name ``steps``; the emulator's; ``augment``, ``limit``, ``cache``) are those of
    :func:`emulated_mnist5k`.
    """
    return emulated_mnist5k("mnist5k-dvs", root, split, None, {}, None, **options)


@register_dataset("mnist5k-enter", frames=True, num_classes=10, input_shape=(2, 34, 34))
@renamed_parameters(steps="T")
@options_from(emulated_mnist5k)
def mnist5k_enter(
    root: str | None = None,
    split: str = "train",
    *,
    enter_ms: float = 150.0,
    saccade_ms: float = 50.0,
    **options,
) -> FrameTensorDataset:
    """MNIST-5k entering an emulated event camera's view: items ``[T, 2, 34, 34]`` counts.

    Each digit starts out of view on a side drawn per digit (left, right, top or bottom),
    slides in at constant speed until it is centred after ``enter_ms``, then makes three
    N-MNIST-style saccades of ``saccade_ms`` each
    (:func:`~spikecut.data.emulator.entering_frames`). The recording's window, from 0 to
    ``enter_ms + 3 · saccade_ms``, is cut into ``T`` slices, so the first slices hold only
    the leading part of the digit and the answer forms over time (as in gestures and real
    scenes), unlike ``mnist5k-dvs`` where every slice shows the whole digit. The other
    options are those of ``mnist5k-dvs``; same split, same cache.
    """
    if enter_ms <= 0 or saccade_ms <= 0:
        raise ValueError(
            f"enter_ms and saccade_ms must be positive, got {enter_ms!r} and {saccade_ms!r}"
        )
    enter_us, saccade_us = int(round(enter_ms * 1000)), int(round(saccade_ms * 1000))
    n_saccades = len(NMNIST_SACCADE_VERTICES)
    window = (0, enter_us + n_saccades * saccade_us + 1)  # events fall in (0, end]

    def motion(image: np.ndarray, rng: np.random.Generator):
        side = ENTRY_SIDES[int(rng.integers(len(ENTRY_SIDES)))]
        return entering_frames(
            image, NMNIST_SENSOR_SIZE, side=side, enter_us=enter_us, saccade_us=saccade_us
        )

    motion_key = {"enter_us": enter_us, "saccade_us": saccade_us, "sides": ENTRY_SIDES}
    return emulated_mnist5k("mnist5k-enter", root, split, motion, motion_key, window, **options)
