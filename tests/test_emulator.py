"""Tests for spikecut.data.emulator: the DVS pixel model and N-MNIST-style saccades."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spikecut.data.emulator import (
    NMNIST_SACCADE_VERTICES,
    DVSEmulator,
    entering_frames,
    image_to_events,
    saccade_frames,
)
from spikecut.data.events import EVENT_DTYPE

FULL_STEP = math.log(1.1 / 0.1)  # log-intensity change black -> white with eps = 0.1


def ring_image(size: int = 28, radius: float = 8.0) -> np.ndarray:
    """A digit-like stroke: a soft ring of width ~4 px, values in [0, 1]."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    return np.clip(1.0 - np.abs(r - radius) / 2.0, 0.0, 1.0)


def pixel_ramp(values, times) -> tuple[np.ndarray, np.ndarray]:
    """Frames of a 1x1 sensor whose intensity goes through ``values`` at ``times``."""
    return np.asarray(values, dtype=np.float64).reshape(-1, 1, 1), np.asarray(times)


def per_pixel_gaps(events: np.ndarray) -> np.ndarray:
    """Time between consecutive events of the same pixel."""
    order = np.lexsort((events["t"], events["y"], events["x"]))
    ev = events[order]
    same = (ev["x"][1:] == ev["x"][:-1]) & (ev["y"][1:] == ev["y"][:-1])
    return np.diff(ev["t"])[same]


# ---------------------------------------------------------------- pixel model


def test_still_image_emits_nothing():
    frames = np.repeat(ring_image()[None], 10, axis=0)
    times = np.arange(10) * 1000
    emulator = DVSEmulator(contrast=0.05, mismatch=0.03, refractory_us=100, seed=1)
    events = emulator.emulate(frames, times)
    assert events.dtype == EVENT_DTYPE
    assert events.size == 0


def test_bar_moving_right_is_on_at_leading_edge_and_off_at_trailing_edge():
    # A bright 3-px bar on black, stepping one pixel right per frame: in step i the bar goes
    # from columns 2+i-1..4+i-1 to 2+i..4+i, so column 4+i turns on and column 1+i turns off.
    frames = np.zeros((5, 4, 12))
    for i in range(5):
        frames[i, :, 2 + i : 5 + i] = 1.0
    times = np.arange(5) * 1000
    events = DVSEmulator(contrast=0.25).emulate(frames, times)

    per_edge = math.floor(FULL_STEP / 0.25)  # 9 events per pixel and edge
    assert per_edge == 9
    step = (events["t"] - 1) // 1000 + 1  # events of step i lie in ((i-1) ms, i ms]
    on, off = events["p"] == 1, events["p"] == 0
    np.testing.assert_array_equal(events["x"][on], 4 + step[on])
    np.testing.assert_array_equal(events["x"][off], 1 + step[off])
    assert on.sum() == off.sum() == 4 * 4 * per_edge  # 4 steps x 4 rows
    for x in (5, 6, 7, 8):
        assert np.sum(on & (events["x"] == x)) == 4 * per_edge
    for x in (2, 3, 4, 5):
        assert np.sum(off & (events["x"] == x)) == 4 * per_edge


def test_single_pixel_ramp_counts_and_times_by_hand():
    # log(0.9 + 0.1) - log(0.2 + 0.1) = 1.2040: floor(1.2040 / 0.25) = 4 ON events, at the
    # fractions 0.25 k / 1.2040 = 0.2076 k of the 1000 µs interval: 208, 415, 623, 831 µs.
    frames, times = pixel_ramp([0.2, 0.9], [1000, 2000])
    events = DVSEmulator(contrast=0.25).emulate(frames, times)
    np.testing.assert_array_equal(events["t"], [1208, 1415, 1623, 1831])
    np.testing.assert_array_equal(events["p"], [1, 1, 1, 1])
    np.testing.assert_array_equal(events["x"], 0)
    np.testing.assert_array_equal(events["y"], 0)

    # Back down with a separate OFF threshold 0.5: floor(1.2040 / 0.5) = 2 events at
    # 0.5 k / 1.2040 = 0.4153 k: 415 and 831 µs.
    frames, times = pixel_ramp([0.9, 0.2], [0, 1000])
    events = DVSEmulator(contrast=0.25, contrast_off=0.5).emulate(frames, times)
    np.testing.assert_array_equal(events["t"], [415, 831])
    np.testing.assert_array_equal(events["p"], [0, 0])


@pytest.mark.parametrize(("i0", "i1"), [(0.0, 1.0), (0.2, 0.9), (0.9, 0.05), (0.3, 0.31)])
@pytest.mark.parametrize("n_frames", [2, 7, 40])
def test_ramp_count_is_floor_of_log_change_over_threshold(i0, i1, n_frames):
    contrast, eps = 0.2, 0.1
    values = np.linspace(i0, i1, n_frames)
    times = np.linspace(0, 50_000, n_frames).astype(np.int64)
    frames, times = pixel_ramp(values, times)
    events = DVSEmulator(contrast=contrast, eps=eps).emulate(frames, times)
    expected = math.floor(abs(math.log(i1 + eps) - math.log(i0 + eps)) / contrast)
    assert events.size == expected
    assert np.all(events["p"] == (1 if i1 > i0 else 0))
    assert np.all(np.diff(events["t"]) > 0)
    assert np.all((events["t"] > times[0]) & (events["t"] <= times[-1]))


def test_reference_keeps_the_residual_between_frames():
    # 0.2 -> 0.9 -> 0.2: 4 ON events up, and the reference sits at log(0.3) + 4 * 0.25, so
    # coming back to log(0.3) crosses 4 OFF levels again: the pixel is back where it started.
    frames, times = pixel_ramp([0.2, 0.9, 0.2], [0, 1000, 2000])
    events = DVSEmulator(contrast=0.25).emulate(frames, times)
    np.testing.assert_array_equal(events["p"], [1, 1, 1, 1, 0, 0, 0, 0])


def test_refractory_period_by_hand():
    # Black -> white in 1000 µs: the 9 crossings fall at rint(104.26 k) µs, k = 1..9:
    # 104 209 313 417 521 626 730 834 938. With 300 µs refractory the pixel keeps 104, then
    # the first at >= 404 (417), then >= 717 (730). The reference is now log(0.1) + 9 * 0.25,
    # 0.148 below log(1.1); white -> black in 100 µs crosses its OFF levels at
    # 1000 + rint(100 (0.148 + 0.25 k) / 2.398) = 1017, 1027, 1037, ...: the first >= 1030 is 1037.
    frames, times = pixel_ramp([0.0, 1.0, 0.0], [0, 1000, 1100])
    events = DVSEmulator(contrast=0.25, refractory_us=300).emulate(frames, times)
    np.testing.assert_array_equal(events["t"], [104, 417, 730, 1037])
    np.testing.assert_array_equal(events["p"], [1, 1, 1, 0])

    without = DVSEmulator(contrast=0.25).emulate(frames, times)
    assert without.size == 18


def test_no_pixel_fires_twice_within_the_refractory_period():
    frames, times = saccade_frames(ring_image(), steps_per_saccade=10, saccade_us=20_000)
    free = DVSEmulator(contrast=0.1, noise_rate_hz=50, seed=0).emulate(frames, times)
    limited = DVSEmulator(contrast=0.1, noise_rate_hz=50, refractory_us=2000, seed=0)
    events = limited.emulate(frames, times)
    assert per_pixel_gaps(free).min() < 2000  # the test would catch a violation
    assert per_pixel_gaps(events).min() >= 2000
    assert 0 < events.size < free.size


def test_background_noise_rate():
    # 5 Hz per pixel on 16 x 16 pixels for 1 s: Poisson with mean 1280, sd 36.
    frames = np.zeros((2, 16, 16))
    times = np.array([0, 1_000_000])
    events = DVSEmulator(noise_rate_hz=5.0, seed=3).emulate(frames, times)
    assert abs(events.size - 1280) < 5 * math.sqrt(1280)
    assert 0.4 < np.mean(events["p"]) < 0.6
    assert np.all((events["t"] > 0) & (events["t"] <= 1_000_000))
    counts = np.bincount(events["y"].astype(int) * 16 + events["x"], minlength=256)
    assert counts.min() >= 0 and (counts > 0).sum() > 200  # spread over the sensor


def test_noise_is_seeded():
    frames = np.zeros((2, 8, 8))
    times = np.array([0, 500_000])

    def run(seed, **kw):
        return DVSEmulator(noise_rate_hz=10.0, seed=seed).emulate(frames, times, **kw)

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))
    a = run(0, rng=np.random.default_rng(7))
    b = run(1, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)  # an explicit generator overrides the seed

    emulator = DVSEmulator(noise_rate_hz=10.0, seed=0)
    first, second = emulator.emulate(frames, times), emulator.emulate(frames, times)
    assert not np.array_equal(first, second)  # the stream advances between calls


def test_seed_changes_only_the_random_parts():
    frames, times = saccade_frames(ring_image(), steps_per_saccade=5)
    a = DVSEmulator(seed=0).emulate(frames, times)
    b = DVSEmulator(seed=1).emulate(frames, times)
    np.testing.assert_array_equal(a, b)  # no noise, no mismatch: nothing random

    c = DVSEmulator(mismatch=0.05, noise_rate_hz=2.0, seed=0).emulate(frames, times)
    d = DVSEmulator(mismatch=0.05, noise_rate_hz=2.0, seed=0).emulate(frames, times)
    e = DVSEmulator(mismatch=0.05, noise_rate_hz=2.0, seed=1).emulate(frames, times)
    np.testing.assert_array_equal(c, d)
    assert not np.array_equal(c, e)


def test_threshold_mismatch_is_a_fixed_per_pixel_pattern():
    emulator = DVSEmulator(contrast=0.3, contrast_off=0.2, mismatch=0.05, seed=4)
    c_on, c_off = emulator.thresholds(20, 30)
    assert c_on.shape == c_off.shape == (600,)
    assert abs(c_on.mean() - 0.3) < 0.01 and abs(c_on.std() - 0.05) < 0.01
    assert abs(c_off.mean() - 0.2) < 0.01 and abs(c_off.std() - 0.05) < 0.01
    again = DVSEmulator(contrast=0.3, contrast_off=0.2, mismatch=0.05, seed=4)
    np.testing.assert_array_equal(again.thresholds(20, 30)[0], c_on)
    assert DVSEmulator(contrast=0.05, mismatch=1.0).thresholds(10, 10)[0].min() == 0.01

    # A uniform ramp then gives each pixel floor(dL / its own threshold) events.
    frames = np.stack([np.full((20, 30), 0.1), np.full((20, 30), 0.8)])
    events = emulator.emulate(frames, [0, 10_000])
    counts = np.bincount(events["y"].astype(int) * 30 + events["x"], minlength=600)
    np.testing.assert_array_equal(counts, np.floor(math.log(0.9 / 0.2) / c_on))


def test_events_are_well_formed():
    frames, times = saccade_frames(ring_image(), (30, 36), steps_per_saccade=8)
    emulator = DVSEmulator(noise_rate_hz=20.0, mismatch=0.02, refractory_us=500, seed=2)
    events = emulator.emulate(frames, times)
    assert events.dtype == EVENT_DTYPE
    assert events.size > 0
    assert events["x"].min() >= 0 and events["x"].max() < 36
    assert events["y"].min() >= 0 and events["y"].max() < 30
    assert np.all(np.diff(events["t"]) >= 0)
    assert set(np.unique(events["p"])) == {0, 1}


# ---------------------------------------------------------------- saccades


def test_saccade_frames_shape_times_and_closed_path():
    image = ring_image()
    frames, times = saccade_frames(image, steps_per_saccade=20, start_us=7)
    assert frames.shape == (61, 34, 34)
    np.testing.assert_array_equal(times, 7 + np.arange(61) * 5000)
    np.testing.assert_allclose(frames[0], frames[-1], atol=1e-12)  # back to the start
    # The digit stays inside the 3-px margin: nothing is cut, so the light is conserved.
    np.testing.assert_allclose(frames.sum(axis=(1, 2)), image.sum(), rtol=1e-9)
    assert len(NMNIST_SACCADE_VERTICES) == 3


def test_saccade_frames_shift_directions_and_subpixel_interpolation():
    image = np.zeros((4, 4))
    image[1, 2] = 1.0
    # Canvas 8x8: the 4x4 image sits at offset (2, 2), so the dot is at (y, x) = (3, 4).
    # Path (0,0) -> (2,1) -> back, 4 steps per saccade: offsets (0.5, 0.25) per step.
    frames, _ = saccade_frames(image, (8, 8), vertices=[(0, 0), (2, 1)], steps_per_saccade=4)
    assert frames[0][3, 4] == 1.0 and frames[0].sum() == 1.0
    assert frames[4][4, 6] == pytest.approx(1.0)  # dx = +2 moves right, dy = +1 moves down
    # Offset (0.5, 0.25): bilinear weights over (3..4) x (4..5).
    np.testing.assert_allclose(frames[1][3:5, 4:6], [[0.375, 0.375], [0.125, 0.125]])
    assert frames[1].sum() == pytest.approx(1.0)


def test_saccade_of_a_bar_gives_on_ahead_and_off_behind():
    image = np.zeros((10, 10))
    image[:, 4:6] = 1.0  # vertical 2-px bar; on a 10x16 canvas (left margin 3) its centre
    # is at x = 3 + 4.5 + dx, and dx goes -2 -> +2 in the first 10 ms and back in the next.
    frames, times = saccade_frames(
        image, (10, 16), vertices=[(-2, 0), (2, 0)], saccade_us=10_000, steps_per_saccade=16
    )
    events = DVSEmulator(contrast=0.2).emulate(frames, times)
    t = events["t"].astype(float)
    dx = np.where(t <= 10_000, -2 + 4 * t / 10_000, 2 - 4 * (t - 10_000) / 10_000)
    direction = np.where(t <= 10_000, 1, -1)
    ahead = (events["x"] - (7.5 + dx)) * direction  # > 0: in front of the moving bar
    on, off = events["p"] == 1, events["p"] == 0
    for moving in (1, -1):
        assert np.sum(on & (direction == moving)) > 0 and np.sum(off & (direction == moving)) > 0
    # A pixel brightens only while the bar's edge enters it (0.5 to 1.5 px ahead of the
    # centre) and darkens while the back edge leaves it; 0.25 px of slack for the frame step.
    assert np.all((ahead[on] > 0.25) & (ahead[on] < 1.75))
    assert np.all((ahead[off] < -0.25) & (ahead[off] > -1.75))


def test_image_to_events_sees_all_three_saccades():
    events = image_to_events(ring_image(), DVSEmulator(seed=0), steps_per_saccade=10)
    assert events["t"].max() <= 300_000
    for k in range(3):
        window = events[(events["t"] > k * 100_000) & (events["t"] <= (k + 1) * 100_000)]
        assert np.sum(window["p"] == 1) > 50 and np.sum(window["p"] == 0) > 50
    still = image_to_events(ring_image(), vertices=[(0.5, -0.5)], steps_per_saccade=4)
    assert still.size == 0  # a one-vertex path never moves


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"contrast": -0.1}, "contrast must be a positive"),
        ({"contrast": 0.0}, "contrast must be a positive"),
        ({"contrast_off": -1.0}, "contrast_off must be a positive"),
        ({"refractory_us": -5}, "refractory_us must be a non-negative"),
        ({"noise_rate_hz": -1.0}, "noise_rate_hz must be a non-negative"),
        ({"mismatch": float("nan")}, "mismatch must be a non-negative"),
        ({"eps": 0.0}, "eps must be a positive"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DVSEmulator(**kwargs)


@pytest.mark.parametrize(
    ("frames", "times", "message"),
    [
        (np.zeros((4, 4)), [0, 1, 2, 3], r"frames must be a non-empty array \[N, H, W\].*\(4, 4\)"),
        (np.zeros((0, 4, 4)), [], r"got shape \(0, 4, 4\)"),
        (np.zeros((3, 4, 4)), [0, 1], r"timestamps_us must have shape \(3,\).*\(2,\)"),
        (np.zeros((3, 4, 4)), [0, 5, 5], r"strictly increasing.*\[2\] = 5 follows .*\[1\] = 5"),
        (np.zeros((3, 4, 4)), [0, 5, 3], r"strictly increasing"),
        (np.zeros((2, 4, 4)), [0.0, 1.5], "whole microseconds"),
        (np.full((2, 4, 4), 2.0), [0, 1], r"in \[0, 1\], found values in \[2.0, 2.0\]"),
        (np.full((2, 4, 4), -0.5), [0, 1], r"in \[0, 1\]"),
        (np.full((2, 4, 4), np.nan), [0, 1], "NaN"),
        (np.zeros((2, 4, 4), dtype=np.uint8), [0, 1], "uint8.*divide"),
    ],
)
def test_bad_frames_and_timestamps(frames, times, message):
    with pytest.raises(ValueError, match=message):
        DVSEmulator().emulate(frames, times)


def test_bad_saccade_arguments():
    image = ring_image()
    with pytest.raises(ValueError, match=r"image must be a non-empty 2-D array.*\(1, 28, 28\)"):
        saccade_frames(image[None])
    with pytest.raises(ValueError, match="sensor_size must be"):
        saccade_frames(image, (34,))
    with pytest.raises(ValueError, match="vertices must be a non-empty list"):
        saccade_frames(image, vertices=[])
    with pytest.raises(ValueError, match="vertices must be a non-empty list"):
        saccade_frames(image, vertices=[(1, 2, 3)])
    with pytest.raises(ValueError, match="steps_per_saccade must be positive"):
        saccade_frames(image, steps_per_saccade=0)
    with pytest.raises(ValueError, match="needs at least one µs per step"):
        saccade_frames(image, saccade_us=10, steps_per_saccade=20)
    with pytest.raises(ValueError, match=r"image must be intensities in \[0, 1\]"):
        saccade_frames(image * 255)


# ---------------------------------------------------------------- entering the field of view


@pytest.mark.parametrize("side", ["left", "right", "top", "bottom"])
def test_entering_digit_starts_unseen_and_grows_from_its_side(side):
    image = ring_image()
    frames, times = entering_frames(image, side=side, enter_us=100_000, enter_steps=40)
    assert frames.shape == (40 + 3 * 20 + 1, 34, 34)
    assert times[0] == 0 and np.all(np.diff(times) > 0) and times[40] == 100_000
    assert frames[0].max() == 0.0  # nothing of the digit is visible at the start
    visible = frames[:41].sum(axis=(1, 2))
    assert np.all(np.diff(visible) >= -1e-9) and visible[-1] > 0  # more and more comes in
    # Part-way in, the light sits on the side the digit came from.
    half = frames[20]
    cols, rows = half.sum(axis=0), half.sum(axis=1)
    edge = {
        "left": cols[:17].sum() / cols.sum(),
        "right": cols[17:].sum() / cols.sum(),
        "top": rows[:17].sum() / rows.sum(),
        "bottom": rows[17:].sum() / rows.sum(),
    }[side]
    assert edge > 0.9
    # Once in, the saccades are the N-MNIST ones, shifted in time.
    saccades, saccade_times = saccade_frames(image)
    assert np.allclose(frames[40:], saccades) and np.array_equal(
        times[40:], saccade_times + 100_000
    )


def test_entering_digit_events_arrive_late():
    frames, times = entering_frames(ring_image(), side="left", enter_us=150_000, saccade_us=50_000)
    events = DVSEmulator().emulate(frames, times)
    per_slice = np.histogram(events["t"], bins=8, range=(0, 300_000))[0]
    assert per_slice[0] < 0.1 * per_slice[3]  # the first slice sees only an edge coming in
    assert np.all(per_slice[4:] > 0)


def test_entering_frames_rejects_bad_arguments():
    with pytest.raises(ValueError, match="side must be one of left, right, top, bottom"):
        entering_frames(ring_image(), side="front")
    with pytest.raises(ValueError, match="enter_us=10 and enter_steps=60"):
        entering_frames(ring_image(), enter_us=10)
