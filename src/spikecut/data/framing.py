"""Event streams → ``[T, 2, H, W]`` count frames, and a disk cache for the frames.

Framing: :func:`to_frames` slices a recording into ``T`` bins, by equal time spans or equal
event counts, and counts the events of each polarity per pixel (channel 0 = OFF, ``p = 0``;
channel 1 = ON, ``p = 1``). :class:`Framing` bundles the parameters so that a dataset can
apply them and name them in a cache key.

Cache: :class:`FrameCache` stores one ``.npy`` per key, where the key is a dict naming the
source (e.g. :func:`source_key` of a file: path, size, mtime) and every parameter that shaped
the array. Changing any of them gives another file name, so stale frames are never served.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._deprecation import renamed_parameters, warn_deprecated
from .._io import atomic_write

__all__ = ["SLICINGS", "FrameCache", "Framing", "source_key", "to_frames"]

SLICINGS = ("time", "count")


@renamed_parameters(steps="T")
def to_frames(
    events: np.ndarray,
    sensor_size: tuple[int, int],
    T: int,
    slicing: str = "time",
    window: tuple[int, int] | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Count events into float32 frames ``[T, 2, h, w]`` (channel 0 OFF, channel 1 ON).

    ``T`` is the number of frames (deprecated name: ``steps``).

    ``sensor_size`` is ``(H, W)``; every event must have ``0 <= y < H`` and ``0 <= x < W``.
    ``window = (start, end)`` keeps the events with ``start <= t < end`` (µs); ``None`` keeps
    the whole recording. ``slicing="time"`` splits the window into ``T`` equal spans
    (event at ``t`` goes to bin ``(t - start) * T // (end - start)``; without a window,
    ``start, end = t.min(), t.max() + 1``); ``slicing="count"`` splits the kept events, in
    time order, into ``T`` runs whose lengths differ by at most one.
    ``size = (h, w)`` down-samples by binning coordinates (``x * w // W``), an area sum that
    conserves the event count. Every kept event is counted exactly once.
    """
    height, width = _pair(sensor_size, "sensor_size")
    out_h, out_w = (height, width) if size is None else _pair(size, "size")
    if out_h > height or out_w > width:
        raise ValueError(f"size {(out_h, out_w)} must not exceed sensor_size {(height, width)}")
    if isinstance(T, bool) or not isinstance(T, int | np.integer) or T < 1:
        raise ValueError(f"T (frames per sample) must be a positive int, got {T!r}")
    if slicing not in SLICINGS:
        raise ValueError(f"slicing must be one of {SLICINGS}, got {slicing!r}")

    t = events["t"].astype(np.int64)
    if window is not None:
        start, end = (int(v) for v in window)
        if end <= start:
            raise ValueError(f"window must have end > start, got {window!r}")
        inside = (t >= start) & (t < end)
        events, t = events[inside], t[inside]
    elif len(t):
        start, end = int(t.min()), int(t.max()) + 1

    frames = np.zeros((T, 2, out_h, out_w), dtype=np.float32)
    if len(t) == 0:
        return frames
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    _check_coordinates(x, y, height, width)

    if slicing == "time":
        step = (t - start) * T // (end - start)
    else:
        order = np.argsort(t, kind="stable")
        step = np.empty(len(t), dtype=np.int64)
        step[order] = np.arange(len(t), dtype=np.int64) * T // len(t)
    channel = (np.asarray(events["p"]) > 0).astype(np.int64)
    flat = ((step * 2 + channel) * out_h + y * out_h // height) * out_w + x * out_w // width
    counts = np.bincount(flat, minlength=frames.size)
    frames[...] = counts.reshape(frames.shape)
    return frames


def _pair(value: Any, what: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair of ints (height, width), got {value!r}") from None
    if a < 1 or b < 1:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return a, b


def _check_coordinates(x: np.ndarray, y: np.ndarray, height: int, width: int) -> None:
    bad = (x < 0) | (x >= width) | (y < 0) | (y >= height)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} event(s) fall outside the sensor of size (H={height}, W={width}): "
            f"found x in {int(x.min())}..{int(x.max())}, y in {int(y.min())}..{int(y.max())}"
        )


@dataclass(frozen=True)
class Framing:
    """The parameters of :func:`to_frames`, callable on events and nameable in a cache key."""

    sensor_size: tuple[int, int]
    T: int
    slicing: str = "time"
    window: tuple[int, int] | None = None
    size: tuple[int, int] | None = None

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        """``(T, 2, h, w)`` of the frames this framing produces."""
        h, w = self.sensor_size if self.size is None else self.size
        return (self.T, 2, int(h), int(w))

    @property
    def steps(self) -> int:
        """Deprecated name of :attr:`T`."""
        warn_deprecated("Framing.steps", "Framing.T")
        return self.T

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return to_frames(events, self.sensor_size, self.T, self.slicing, self.window, self.size)

    def key(self) -> dict[str, Any]:
        """Every parameter, as JSON-friendly values, for :meth:`FrameCache.get_or_build`."""
        return {
            "sensor_size": list(self.sensor_size),
            "steps": int(self.T),  # the cache key keeps its old field name
            "slicing": self.slicing,
            "window": None if self.window is None else [int(v) for v in self.window],
            "size": None if self.size is None else [int(v) for v in self.size],
        }


Framing.__init__ = renamed_parameters(steps="T")(Framing.__init__)  # type: ignore[method-assign]


def source_key(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of a source file for a cache key: resolved path, size and mtime (ns)."""
    path = Path(path).resolve()
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class FrameCache:
    """Arrays on disk under ``root``, one ``.npy`` per key, built on first use.

    ``get_or_build(key, build)`` returns the array stored for ``key`` (a JSON-serialisable
    dict) or calls ``build()`` and stores its result. The file name is a SHA-256 of the
    key, so the key must name everything the array depends on: the source (e.g.
    :func:`source_key`) and every parameter (e.g. :meth:`Framing.key`). Files are written
    atomically, so a crash never leaves a half-written entry; an unreadable entry is rebuilt.
    ``hits`` and ``builds`` count what happened, e.g. for tests and logs.
    """

    VERSION = 1  # bump when the stored layout changes, so that old entries are not read

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self.hits = 0
        self.builds = 0

    def path_for(self, key: Mapping[str, Any]) -> Path:
        """Where the array for ``key`` lives (whether or not it exists yet)."""
        text = json.dumps(
            {"cache_version": self.VERSION, **key},
            sort_keys=True,
            separators=(",", ":"),
            default=_json_default,
        )
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.root / digest[:2] / f"{digest}.npy"

    def get_or_build(self, key: Mapping[str, Any], build: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for ``key``, or ``build()``'s result after storing it."""
        path = self.path_for(key)
        if path.is_file():
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError):
                pass  # unreadable entry (e.g. disk trouble): rebuild and overwrite it
            else:
                self.hits += 1
                return array
        array = np.asarray(build())
        self.builds += 1
        atomic_write(path, lambda tmp: _save_npy(tmp, array))
        return array

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append .npy to a name
        np.save(fh, array, allow_pickle=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(
        f"cache keys must be JSON-serialisable (str, numbers, lists, dicts); got {value!r} "
        f"of type {type(value).__name__}"
    )
