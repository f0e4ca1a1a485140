"""Tests for spikecut.data.framing: count frames and the frame cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from spikecut.data.events import make_events
from spikecut.data.framing import FrameCache, Framing, source_key, to_frames


def random_events(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 1_000_000, n)  # deliberately not sorted
    return make_events(
        rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n)
    )


def test_hand_computed_time_frames() -> None:
    # Window [0, 100) in 2 steps of 50 µs; sensor 2x3 (H x W).
    events = make_events(x=[0, 2, 2, 1], y=[1, 0, 0, 1], t=[0, 49, 50, 99], p=[1, 0, 0, 1])
    frames = to_frames(events, (2, 3), T=2, window=(0, 100))
    expected = np.zeros((2, 2, 2, 3), np.float32)
    expected[0, 1, 1, 0] = 1  # t=0, ON at (y=1, x=0)
    expected[0, 0, 0, 2] = 1  # t=49, OFF at (0, 2)
    expected[1, 0, 0, 2] = 1  # t=50
    expected[1, 1, 1, 1] = 1  # t=99
    assert frames.dtype == np.float32
    np.testing.assert_array_equal(frames, expected)


@pytest.mark.parametrize("slicing", ["time", "count"])
@pytest.mark.parametrize("size", [None, (48, 48), (7, 5)])
def test_event_count_and_polarity_conserved(slicing: str, size) -> None:
    events = random_events(5000, 128, 128)
    frames = to_frames(events, (128, 128), T=10, slicing=slicing, size=size)
    assert frames.shape == (10, 2, *(size or (128, 128)))
    assert frames.sum() == len(events)
    assert frames[:, 1].sum() == (events["p"] == 1).sum()


def test_downsampling_is_an_area_sum() -> None:
    events = random_events(3000, 128, 128, seed=1)
    fine = to_frames(events, (128, 128), T=3)
    coarse = to_frames(events, (128, 128), T=3, size=(48, 48))
    # Reference: add every fine pixel into the coarse pixel that holds it (x * 48 // 128).
    rows = np.arange(128) * 48 // 128
    expected = np.zeros_like(coarse)
    for y in range(128):
        for x in range(128):
            expected[:, :, rows[y], rows[x]] += fine[:, :, y, x]
    np.testing.assert_array_equal(coarse, expected)


def test_window_keeps_only_events_inside() -> None:
    events = make_events(x=[0] * 5, y=[0] * 5, t=[5, 10, 19, 20, 30], p=[1] * 5)
    frames = to_frames(events, (1, 1), T=3, window=(10, 20))
    # [10, 20) in thirds: t=10 -> bin 0, t=19 -> bin (9 * 3) // 10 = 2.
    assert frames[:, 1, 0, 0].tolist() == [1, 0, 1]
    assert frames.sum() == 2
    # No window: [5, 31), bin (t - 5) * 5 // 26 -> 0, 0, 2, 2, 4.
    whole = to_frames(events, (1, 1), T=5)
    assert whole[:, 1, 0, 0].tolist() == [2, 0, 2, 0, 1]


def test_count_slicing_gives_equal_runs_in_time_order() -> None:
    events = random_events(103, 4, 4, seed=2)
    frames = to_frames(events, (4, 4), T=10, slicing="count")
    per_step = frames.sum(axis=(1, 2, 3))
    assert per_step.sum() == 103 and set(per_step.tolist()) <= {10.0, 11.0}
    # Event i (in time order) goes to bin i * 10 // 103: bin 0 holds i = 0..10, the
    # earliest 11 events.
    assert per_step[0] == 11
    first = np.sort(events, order="t")[:11]
    expected = to_frames(first, (4, 4), T=1)[0]
    np.testing.assert_array_equal(frames[0], expected)


def test_empty_events_and_bad_arguments() -> None:
    empty = make_events([], [], [], [])
    assert not to_frames(empty, (4, 4), T=3).any()
    events = make_events(x=[4], y=[0], t=[0], p=[1])
    with pytest.raises(ValueError, match="outside the sensor.*x in 4..4"):
        to_frames(events, (4, 4), T=1)
    with pytest.raises(ValueError, match="slicing"):
        to_frames(empty, (4, 4), T=1, slicing="rate")
    with pytest.raises(ValueError, match="T \\(frames per sample\\)"):
        to_frames(empty, (4, 4), T=0)
    with pytest.raises(ValueError, match="end > start"):
        to_frames(empty, (4, 4), T=1, window=(5, 5))
    with pytest.raises(ValueError, match="must not exceed"):
        to_frames(empty, (4, 4), T=1, size=(8, 8))


def test_framing_object_matches_function_and_names_every_parameter() -> None:
    events = random_events(500, 34, 34)
    framing = Framing((34, 34), T=4, slicing="count", window=(0, 900_000), size=(17, 17))
    np.testing.assert_array_equal(
        framing(events), to_frames(events, (34, 34), 4, "count", (0, 900_000), (17, 17))
    )
    assert framing.frame_shape == (4, 2, 17, 17)
    assert set(framing.key()) == {"sensor_size", "steps", "slicing", "window", "size"}


# ---------------------------------------------------------------------------------------------
# FrameCache


class CountingBuild:
    def __init__(self, value: float) -> None:
        self.calls = 0
        self.value = value

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return np.full((2, 3), self.value, np.float32)


def test_cache_hit_does_not_rebuild(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "cache")
    build = CountingBuild(1.5)
    key = {"path": "/data/a.bin", "framing": Framing((34, 34), 10).key()}
    first = cache.get_or_build(key, build)
    second = FrameCache(tmp_path / "cache").get_or_build(dict(reversed(key.items())), build)
    assert build.calls == 1 and cache.builds == 1
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32 and second[0, 0] == 1.5
    stored = list((tmp_path / "cache").rglob("*"))
    assert [p.suffix for p in stored if p.is_file()] == [".npy"]  # no temporary left over


@pytest.mark.parametrize(
    "change",
    [
        {"T": 16},
        {"slicing": "count"},
        {"size": (17, 17)},
        {"window": (0, 1000)},
        {"sensor_size": (35, 34)},
    ],
)
def test_changed_framing_parameter_rebuilds(tmp_path: Path, change: dict) -> None:
    cache = FrameCache(tmp_path)
    base = {"sensor_size": (34, 34), "T": 10}
    build = CountingBuild(1.0)
    cache.get_or_build({"src": "a", "framing": Framing(**base).key()}, build)
    changed = Framing(**{**base, **change}).key()
    rebuilt = cache.get_or_build({"src": "a", "framing": changed}, CountingBuild(2.0))
    assert rebuilt[0, 0] == 2.0 and cache.builds == 2 and cache.hits == 0
    again = cache.get_or_build({"src": "a", "framing": Framing(**base).key()}, build)
    assert again[0, 0] == 1.0 and build.calls == 1 and cache.hits == 1


def test_changed_source_file_rebuilds(tmp_path: Path) -> None:
    source = tmp_path / "rec.bin"
    source.write_bytes(b"12345")
    cache = FrameCache(tmp_path / "cache")
    build = CountingBuild(0.0)
    cache.get_or_build(source_key(source), build)
    cache.get_or_build(source_key(source), build)
    assert build.calls == 1
    source.write_bytes(b"1234567890")  # new size (and mtime): a different source
    os.utime(source, ns=(1, 1))
    cache.get_or_build(source_key(source), build)
    assert build.calls == 2


def test_unreadable_entry_is_rebuilt_and_bad_keys_rejected(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path)
    key = {"src": "x"}
    cache.get_or_build(key, CountingBuild(1.0))
    cache.path_for(key).write_bytes(b"garbage")
    build = CountingBuild(3.0)
    assert cache.get_or_build(key, build)[0, 0] == 3.0 and build.calls == 1
    assert cache.get_or_build(key, build)[0, 0] == 3.0 and build.calls == 1
    with pytest.raises(TypeError, match="JSON-serialisable"):
        cache.path_for({"fn": object()})


def test_failed_build_writes_nothing(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path)

    def broken() -> np.ndarray:
        raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError, match="decoder failed"):
        cache.get_or_build({"src": "y"}, broken)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
