"""An event-camera (DVS) emulator: turn still images into ON/OFF event streams.

Two small pieces, usable on their own:

* :func:`saccade_frames` renders an image on a sensor-sized canvas at sub-pixel offsets
  along a closed saccade path, the way N-MNIST was recorded (Orchard et al. 2015: an ATIS
  sensor on a pan-tilt unit made three ~100 ms saccades in front of each MNIST digit, giving
  34x34-pixel recordings of 28x28 digits, ~300 ms long).
* :class:`DVSEmulator` is the pixel model (as in ESIM / v2e): each pixel keeps a reference log
  intensity and emits one event per contrast threshold its current log intensity crosses,
  timestamped by linear interpolation between frames, with a refractory period, optional
  per-pixel threshold mismatch and Poisson background noise.

:func:`image_to_events` chains the two. Events come back as ``EVENT_DTYPE`` arrays
(``x, y, t`` in µs, ``p``: 1 = ON, 0 = OFF) sorted by time.

Log intensity is ``log(I + eps)`` with ``I`` in [0, 1] and ``eps = 0.1`` by default: the
offset keeps a black background (``I = 0``) finite and, like v2e's linear-log mapping, makes
the sensor less sensitive in the dark. A full black-to-white step is ``log(1.1 / 0.1) ≈ 2.40``,
i.e. 9 events at the default threshold 0.25.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .events import EVENT_DTYPE, make_events

__all__ = [
    "NMNIST_SACCADE_VERTICES",
    "NMNIST_SENSOR_SIZE",
    "ENTRY_SIDES",
    "DVSEmulator",
    "entering_frames",
    "image_to_events",
    "render_at_offsets",
    "saccade_frames",
]

NMNIST_SENSOR_SIZE = (34, 34)
"""(height, width) of the N-MNIST recordings: a 28x28 digit plus a 3-pixel margin each side."""

NMNIST_SACCADE_VERTICES: tuple[tuple[float, float], ...] = ((-1.5, -3.0), (1.5, 0.0), (-1.5, 3.0))
"""Corners ``(dx, dy)`` in pixels of a closed triangular path, relative to the centred image.

The image moves right-down, then left-down, then straight up back to the start: three
saccades, as in N-MNIST. The amplitudes are chosen to stay inside the 3-pixel margin of a
34x34 sensor; they do not reproduce the original rig's exact angles.
"""

_MIN_THRESHOLD = 0.01  # mismatch never makes a threshold smaller than this (log units)
_NEVER = np.iinfo(np.int64).min // 2  # "last event time" of a pixel that has not fired yet


class DVSEmulator:
    """A DVS pixel array driven by a sequence of intensity frames.

    Args:
        contrast: ON threshold ``C_on`` on the change of ``log(I + eps)`` (v2e/ESIM use 0.2-0.3).
        contrast_off: OFF threshold ``C_off``; ``None`` uses ``contrast``.
        refractory_us: after an event a pixel stays silent for this many µs; threshold
            crossings inside the window are swallowed (the reference still moves past them,
            as if the pixel had reset) so they never come back as late events.
        noise_rate_hz: rate of background events per pixel (Poisson, half ON, half OFF). Noise
            events obey the refractory period but do not move the reference.
        mismatch: standard deviation of the per-pixel thresholds around ``contrast`` and
            ``contrast_off`` (log units, drawn once per sensor size; thresholds are kept
            above 0.01).
        eps: offset of the log, ``log(I + eps)``; must be positive.
        seed: seeds both the mismatch pattern and the noise stream; same seed and the same
            calls give identical events.

    ``emulate`` starts every call from the first frame (the reference is that frame's log
    intensity), so calls are independent except for the noise stream, which advances.
    """

    def __init__(
        self,
        contrast: float = 0.25,
        contrast_off: float | None = None,
        *,
        refractory_us: int = 0,
        noise_rate_hz: float = 0.0,
        mismatch: float = 0.0,
        eps: float = 0.1,
        seed: int = 0,
    ) -> None:
        contrast_off = contrast if contrast_off is None else contrast_off
        for name, value in (("contrast", contrast), ("contrast_off", contrast_off)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a positive finite number, got {eps!r}")
        for name, value in (
            ("refractory_us", refractory_us),
            ("noise_rate_hz", noise_rate_hz),
            ("mismatch", mismatch),
        ):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
        self.contrast = float(contrast)
        self.contrast_off = float(contrast_off)
        self.refractory_us = int(refractory_us)
        self.noise_rate_hz = float(noise_rate_hz)
        self.mismatch = float(mismatch)
        self.eps = float(eps)
        self.seed = seed
        mismatch_seq, noise_seq = np.random.SeedSequence(seed).spawn(2)
        self._mismatch_seq = mismatch_seq
        self.rng = np.random.default_rng(noise_seq)
        self._thresholds_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(contrast={self.contrast}, contrast_off={self.contrast_off}, "
            f"refractory_us={self.refractory_us}, noise_rate_hz={self.noise_rate_hz}, "
            f"mismatch={self.mismatch}, eps={self.eps}, seed={self.seed})"
        )

    def log_intensity(self, frames: np.ndarray) -> np.ndarray:
        """The photoreceptor signal ``log(I + eps)`` the thresholds apply to."""
        return np.log(np.asarray(frames, dtype=np.float64) + self.eps)

    def thresholds(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel ``(C_on, C_off)`` as flat arrays of ``height * width``.

        Drawn once per sensor size from the seed, so the same emulator is one fixed sensor.
        """
        key = (height, width)
        if key not in self._thresholds_cache:
            n = height * width
            c_on = np.full(n, self.contrast)
            c_off = np.full(n, self.contrast_off)
            if self.mismatch > 0:
                # One independent stream per sensor size keeps the pattern order-independent.
                rng = np.random.default_rng(
                    np.random.SeedSequence(
                        self._mismatch_seq.entropy,
                        spawn_key=(*self._mismatch_seq.spawn_key, height, width),
                    )
                )
                c_on = np.maximum(c_on + self.mismatch * rng.standard_normal(n), _MIN_THRESHOLD)
                c_off = np.maximum(c_off + self.mismatch * rng.standard_normal(n), _MIN_THRESHOLD)
            self._thresholds_cache[key] = (c_on, c_off)
        return self._thresholds_cache[key]

    def emulate(
        self,
        frames: np.ndarray,
        timestamps_us: np.ndarray | Sequence[int],
        *,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Events of a pixel array watching ``frames`` ``[N, H, W]`` (intensities in [0, 1]).

        ``timestamps_us`` ``[N]`` are strictly increasing integer times of the frames. The
        first frame sets the reference; events fall in ``(timestamps_us[0], timestamps_us[-1]]``.
        ``rng`` replaces the emulator's own noise stream for this call (e.g. one generator
        per sample, so that a dataset converts the same in any order).
        Returns an ``EVENT_DTYPE`` array sorted by ``t``.
        """
        frames = _check_frames(frames)
        times = _check_timestamps(timestamps_us, frames.shape[0])
        n_frames, height, width = frames.shape
        logs = self.log_intensity(frames).reshape(n_frames, height * width)
        c_on, c_off = self.thresholds(height, width)
        noise = self._noise(height * width, times[0], times[-1], rng or self.rng)
        noise_bounds = np.searchsorted(noise[1], times, side="right")

        ref = logs[0].copy()
        last_fire = np.full(height * width, _NEVER, dtype=np.int64)
        chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for i in range(1, n_frames):
            pix, t, pol = _crossings(logs[i - 1], logs[i], ref, c_on, c_off, times[i - 1], times[i])
            lo, hi = noise_bounds[i - 1], noise_bounds[i]
            with_noise = hi > lo
            if with_noise:
                pix = np.concatenate([pix, noise[0][lo:hi]])
                t = np.concatenate([t, noise[1][lo:hi]])
                pol = np.concatenate([pol, noise[2][lo:hi]])
            if pix.size == 0:
                continue
            if self.refractory_us > 0:
                keep = _refractory_filter(
                    pix, t, last_fire, self.refractory_us, grouped=not with_noise
                )
                pix, t, pol = pix[keep], t[keep], pol[keep]
            chunks.append((pix, t, pol))
        return _pack(chunks, width)

    def _noise(
        self, n_pixels: int, t_start: int, t_end: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Background events ``(pixel, t, polarity)`` uniform in ``(t_start, t_end]``, by time."""
        if self.noise_rate_hz == 0 or t_end <= t_start:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.int8)
        count = rng.poisson(self.noise_rate_hz * (t_end - t_start) * 1e-6 * n_pixels)
        t = np.sort(rng.integers(t_start + 1, t_end + 1, size=count, dtype=np.int64))
        pix = rng.integers(0, n_pixels, size=count, dtype=np.int64)
        pol = (rng.random(count) < 0.5).astype(np.int8)
        return pix, t, pol


def _crossings(
    log_prev: np.ndarray,
    log_cur: np.ndarray,
    ref: np.ndarray,
    c_on: np.ndarray,
    c_off: np.ndarray,
    t_prev: int,
    t_cur: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Threshold crossings between two frames, and move ``ref`` (in place) past them.

    A pixel whose log intensity rose by ``diff >= C_on`` above its reference emits
    ``floor(diff / C_on)`` ON events at the levels ``ref + k C_on``; OFF likewise. Each event
    is timed where the straight line from ``log_prev`` to ``log_cur`` meets its level.
    Returns ``(pixel, t, polarity)`` grouped by pixel, increasing in time within a pixel.
    """
    diff = log_cur - ref
    n_on = np.floor(diff / c_on)
    n_off = np.floor(-diff / c_off)
    on_idx = np.flatnonzero(n_on >= 1)
    off_idx = np.flatnonzero(n_off >= 1)
    if on_idx.size == 0 and off_idx.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.int8)
    idx = np.concatenate([on_idx, off_idx])
    counts = np.concatenate([n_on[on_idx], n_off[off_idx]]).astype(np.int64)
    step = np.concatenate([c_on[on_idx], -c_off[off_idx]])  # signed level spacing

    pix = np.repeat(idx, counts)
    starts = np.cumsum(counts) - counts
    k = np.arange(pix.size) - np.repeat(starts, counts) + 1
    level = np.repeat(ref[idx], counts) + np.repeat(step, counts) * k
    rise = log_cur[pix] - log_prev[pix]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(rise != 0, (level - log_prev[pix]) / rise, 1.0)
    t = t_prev + np.rint(np.clip(frac, 0.0, 1.0) * (t_cur - t_prev)).astype(np.int64)
    pol = np.repeat((step > 0).astype(np.int8), counts)

    ref[idx] += step * counts
    return pix, t, pol


def _refractory_filter(
    pix: np.ndarray,
    t: np.ndarray,
    last_fire: np.ndarray,
    refractory_us: int,
    *,
    grouped: bool = False,
) -> np.ndarray:
    """Keep events at least ``refractory_us`` after the pixel's previous kept event.

    Greedy in time per pixel; ``last_fire`` is updated in place. Vectorised over pixels,
    with a loop over the (few) candidates one pixel has in one frame step. ``grouped``
    says the candidates already come grouped by pixel and in time order within a pixel
    (as :func:`_crossings` returns them), which saves a sort.
    """
    order = np.arange(pix.size) if grouped else np.lexsort((t, pix))
    pix_s, t_s = pix[order], t[order]
    new_group = np.ones(pix_s.size, dtype=bool)
    new_group[1:] = pix_s[1:] != pix_s[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(pix_s.size), 0))
    rank = np.arange(pix_s.size) - group_start
    keep_sorted = np.zeros(pix_s.size, dtype=bool)
    for r in range(int(rank.max()) + 1):
        at = np.flatnonzero(rank == r)
        p, tt = pix_s[at], t_s[at]
        ok = tt - last_fire[p] >= refractory_us
        last_fire[p[ok]] = tt[ok]
        keep_sorted[at[ok]] = True
    keep = np.empty_like(keep_sorted)
    keep[order] = keep_sorted
    return keep


def _pack(chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]], width: int) -> np.ndarray:
    """Concatenate per-step events into one ``EVENT_DTYPE`` array sorted by time."""
    if not chunks:
        return np.zeros(0, dtype=EVENT_DTYPE)
    pix = np.concatenate([c[0] for c in chunks])
    t = np.concatenate([c[1] for c in chunks])
    pol = np.concatenate([c[2] for c in chunks])
    order = np.argsort(t, kind="stable")
    pix, t, pol = pix[order], t[order], pol[order]
    return make_events(pix % width, pix // width, t, pol)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 3 or min(frames.shape) == 0:
        raise ValueError(
            f"frames must be a non-empty array [N, H, W] of intensities, got shape {frames.shape}"
        )
    if max(frames.shape[1:]) > np.iinfo(np.int16).max:
        raise ValueError(f"sensor {frames.shape[1:]} too large for int16 event coordinates")
    return _check_intensities(frames, "frames")


def _check_intensities(values: np.ndarray, name: str) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(
            f"{name} must be floating-point intensities in [0, 1], got dtype {values.dtype} "
            "(divide uint8 images by 255)"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contain NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise ValueError(f"{name} must be intensities in [0, 1], found values in [{low}, {high}]")
    return values


def _check_timestamps(timestamps_us: np.ndarray | Sequence[int], n_frames: int) -> np.ndarray:
    times = np.asarray(timestamps_us)
    if times.shape != (n_frames,):
        raise ValueError(
            f"timestamps_us must have shape ({n_frames},) to match the frames, got {times.shape}"
        )
    if not np.issubdtype(times.dtype, np.integer):
        if not (np.all(np.isfinite(times)) and np.all(times == np.round(times))):
            raise ValueError("timestamps_us must be whole microseconds")
        times = times.astype(np.int64)
    times = times.astype(np.int64)
    bad = np.flatnonzero(np.diff(times) <= 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            "timestamps_us must be strictly increasing, but timestamps_us"
            f"[{i + 1}] = {times[i + 1]} follows timestamps_us[{i}] = {times[i]}"
        )
    return times


def _hat_matrix(out_size: int, in_size: int, origins: np.ndarray) -> np.ndarray:
    """``[N, out_size, in_size]`` bilinear weights placing the input at sub-pixel ``origins``.

    Output pixel ``o`` reads input position ``o - origin``; the weight of input pixel ``j`` is
    the hat function ``max(0, 1 - |o - origin - j|)``, zero outside the input (background).
    """
    pos = np.arange(out_size)[None, :, None] - origins[:, None, None]
    return np.maximum(0.0, 1.0 - np.abs(pos - np.arange(in_size)[None, None, :]))


def saccade_frames(
    image: np.ndarray,
    sensor_size: tuple[int, int] = NMNIST_SENSOR_SIZE,
    *,
    vertices: Sequence[tuple[float, float]] = NMNIST_SACCADE_VERTICES,
    saccade_us: int = 100_000,
    steps_per_saccade: int = 20,
    start_us: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames of ``image`` ``[h, w]`` (in [0, 1]) moving along a closed saccade path.

    The image sits centred on a black canvas of ``sensor_size = (height, width)`` (note:
    Tonic writes sensor sizes as ``(width, height, polarities)``), shifted by ``(dx, dy)``
    pixels that move at constant speed from vertex to vertex and back to the first:
    ``len(vertices)`` saccades of ``saccade_us`` each, sampled ``steps_per_saccade`` times
    (bilinear interpolation at sub-pixel offsets). Returns ``frames`` ``[S + 1, height,
    width]`` float64 and ``timestamps_us`` ``[S + 1]`` int64, starting at ``start_us``, where
    ``S = len(vertices) * steps_per_saccade``.
    """
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) == 0:
        raise ValueError(f"image must be a non-empty 2-D array [h, w], got shape {image.shape}")
    image = _check_intensities(image, "image").astype(np.float64)
    if len(sensor_size) != 2 or min(sensor_size) <= 0:
        raise ValueError(f"sensor_size must be (height, width) > 0, got {sensor_size!r}")
    corners = np.asarray(vertices, dtype=np.float64)
    if corners.ndim != 2 or corners.shape[1] != 2 or corners.shape[0] == 0:
        raise ValueError(f"vertices must be a non-empty list of (dx, dy), got {vertices!r}")
    if not np.all(np.isfinite(corners)):
        raise ValueError(f"vertices must be finite, got {vertices!r}")
    if saccade_us <= 0 or steps_per_saccade <= 0:
        raise ValueError(
            "saccade_us and steps_per_saccade must be positive, "
            f"got {saccade_us!r} and {steps_per_saccade!r}"
        )
    if saccade_us < steps_per_saccade:
        raise ValueError(
            f"steps_per_saccade={steps_per_saccade} needs at least one µs per step, "
            f"but saccade_us={saccade_us}"
        )

    closed = np.concatenate([corners, corners[:1]])
    frac = np.arange(steps_per_saccade) / steps_per_saccade
    path = closed[:-1, None, :] + frac[None, :, None] * np.diff(closed, axis=0)[:, None, :]
    path = np.concatenate([path.reshape(-1, 2), closed[-1:]])  # [S + 1, (dx, dy)]

    n_saccades = corners.shape[0]
    times = np.rint(np.linspace(0, n_saccades * saccade_us, path.shape[0])).astype(np.int64)
    return render_at_offsets(image, sensor_size, path), times + int(start_us)


def render_at_offsets(
    image: np.ndarray, sensor_size: tuple[int, int], offsets: np.ndarray
) -> np.ndarray:
    """Frames ``[N, height, width]`` of ``image`` centred on a black canvas, shifted by
    ``offsets`` ``[N, (dx, dy)]`` pixels (bilinear at sub-pixel offsets; parts of the image
    shifted off the canvas are not seen)."""
    height, width = (int(s) for s in sensor_size)
    h, w = image.shape
    weights_y = _hat_matrix(height, h, (height - h) / 2 + offsets[:, 1])
    weights_x = _hat_matrix(width, w, (width - w) / 2 + offsets[:, 0])
    frames = weights_y @ image @ weights_x.transpose(0, 2, 1)
    return np.clip(frames, 0.0, 1.0)


_OUT_OF_VIEW_MARGIN = 4.0  # pixels beyond the edge: covers the saccade offsets and bilinear blur

ENTRY_SIDES = ("left", "right", "top", "bottom")
"""Where a digit of :func:`entering_frames` comes from, as seen on the sensor."""


def entering_frames(
    image: np.ndarray,
    sensor_size: tuple[int, int] = NMNIST_SENSOR_SIZE,
    *,
    side: str = "left",
    enter_us: int = 150_000,
    enter_steps: int = 60,
    **saccade_options,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames of ``image`` sliding into view from ``side``, then making saccades.

    The image starts just outside the canvas (not a pixel of it visible) and moves at
    constant speed, sampled ``enter_steps`` times, until it sits centred at ``enter_us``;
    then it follows :func:`saccade_frames` (``saccade_options``) from there. So the first
    part of the recording shows a growing part of the digit, its leading edge first: the
    evidence arrives over time, as with a gesture or an object entering a scene. Returns
    ``frames`` ``[enter_steps + S + 1, height, width]`` and ``timestamps_us`` from 0.
    """
    if side not in ENTRY_SIDES:
        raise ValueError(f"side must be one of {', '.join(ENTRY_SIDES)}, got {side!r}")
    if enter_us < enter_steps or enter_steps <= 0:
        raise ValueError(
            f"enter_us={enter_us} and enter_steps={enter_steps} must be positive, with at "
            "least one µs per step"
        )
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) == 0:
        raise ValueError(f"image must be a non-empty 2-D array [h, w], got shape {image.shape}")
    height, width = (int(s) for s in sensor_size)
    h, w = image.shape
    # Distance from the centred position to the first position where nothing is visible.
    away = {
        "left": (-((width + w) / 2 + _OUT_OF_VIEW_MARGIN), 0.0),
        "right": ((width + w) / 2 + _OUT_OF_VIEW_MARGIN, 0.0),
        "top": (0.0, -((height + h) / 2 + _OUT_OF_VIEW_MARGIN)),
        "bottom": (0.0, (height + h) / 2 + _OUT_OF_VIEW_MARGIN),
    }[side]
    vertices = saccade_options.get("vertices", NMNIST_SACCADE_VERTICES)
    first = np.asarray(vertices[0], dtype=np.float64)  # where the saccades start
    frac = np.arange(enter_steps)[:, None] / enter_steps
    path = first + (1.0 - frac) * np.asarray(away)[None, :]
    entry = render_at_offsets(
        _check_intensities(image, "image").astype(np.float64), sensor_size, path
    )
    entry_times = np.rint(frac[:, 0] * enter_us).astype(np.int64)
    frames, times = saccade_frames(image, sensor_size, start_us=enter_us, **saccade_options)
    return np.concatenate([entry, frames]), np.concatenate([entry_times, times])


def image_to_events(
    image: np.ndarray,
    emulator: DVSEmulator | None = None,
    *,
    sensor_size: tuple[int, int] = NMNIST_SENSOR_SIZE,
    rng: np.random.Generator | None = None,
    **saccade_options,
) -> np.ndarray:
    """Events of a DVS making N-MNIST-style saccades in front of ``image`` ``[h, w]``.

    ``emulator`` defaults to ``DVSEmulator()`` (threshold 0.25, no refractory period, no
    noise); ``saccade_options`` go to :func:`saccade_frames`; ``rng`` to
    :meth:`DVSEmulator.emulate`.
    """
    emulator = DVSEmulator() if emulator is None else emulator
    frames, times = saccade_frames(image, sensor_size, **saccade_options)
    return emulator.emulate(frames, times, rng=rng)
