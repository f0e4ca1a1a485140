"""Tests for spikecut.data.event_datasets on tiny fake datasets in the published layouts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from test_events import encode_aedat2, encode_aedat3, encode_atis, gesture_csv

from spikecut.data import event_datasets, get_dataset
from spikecut.data.event_datasets import CIFAR10_DVS_CLASSES, EventSourceDataset
from spikecut.data.events import make_events
from spikecut.data.framing import FrameCache, to_frames


def one_event_recording(x: int, y: int, n: int = 3, p: int = 1) -> np.ndarray:
    """``n`` events at pixel (x, y), 1 ms apart."""
    return make_events([x] * n, [y] * n, np.arange(n) * 1000, [p] * n)


def write_cifar10_dvs(root: Path, per_class: int = 10) -> None:
    """``root/<class>/cifar10_<class>_<i>.aedat``; sample i of class c has 1 + i events at x=c."""
    for c, name in enumerate(CIFAR10_DVS_CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            events = one_event_recording(x=c, y=i, n=1 + i)
            (folder / f"cifar10_{name}_{i}.aedat").write_bytes(encode_aedat2(events))


def test_cifar10_dvs_split_labels_shapes_and_orientation(tmp_path: Path) -> None:
    write_cifar10_dvs(tmp_path)
    train = get_dataset("cifar10-dvs", str(tmp_path), "train")
    test = get_dataset("cifar10-dvs", str(tmp_path), "test")
    assert (len(train), len(test)) == (90, 10)  # 9 + 1 per class
    assert train.num_classes == 10 and train.input_shape == (10, 2, 128, 128)
    assert sorted(test.labels.tolist()) == list(range(10))
    train_files = {s.key["path"] for s in train.samples}
    test_files = {s.key["path"] for s in test.samples}
    assert not train_files & test_files and len(train_files | test_files) == 100
    again = get_dataset("cifar10-dvs", str(tmp_path), "test")
    assert [s.key["path"] for s in again.samples] == [s.key["path"] for s in test.samples]
    other_seed = get_dataset("cifar10-dvs", str(tmp_path), "test", seed=1)
    assert {s.key["path"] for s in other_seed.samples} != test_files

    frames, label = test[0]
    assert frames.dtype == torch.float32 and frames.shape == (10, 2, 128, 128)
    # Class `label` stores its ON events at x = label; re-oriented they land at
    # row 127 - label (y' = 127 - x) in the OFF channel (p' = 1 - p).
    assert frames[:, 0, 127 - label].sum() == frames.sum() > 0
    raw, _ = get_dataset("cifar10-dvs", str(tmp_path), "test", reorient=False)[0]
    assert raw[:, 1, :, label].sum() == frames.sum()


def test_cifar10_dvs_options_reach_the_framing(tmp_path: Path) -> None:
    write_cifar10_dvs(tmp_path)
    ds = get_dataset("cifar10-dvs", str(tmp_path), "test", T=4, size=(48, 48))
    frames, _ = ds[0]
    assert frames.shape == (4, 2, 48, 48)
    with pytest.raises(TypeError, match="unknown option.*'frames'"):
        get_dataset("cifar10-dvs", str(tmp_path), "test", frames=4)


def test_missing_files_error_lists_expected_places(tmp_path: Path) -> None:
    (tmp_path / "airplane").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        get_dataset("cifar10-dvs", str(tmp_path), "train")
    message = str(info.value)
    assert str(tmp_path / "CIFAR10DVS") in message and "airplane" in message
    assert "*.aedat" in message
    for name in ("ncaltech101", "nmnist", "dvs128-gesture"):
        with pytest.raises(FileNotFoundError, match=str(tmp_path)):
            get_dataset(name, str(tmp_path), "train")
    with pytest.raises(ValueError, match="never\\s+downloads"):
        get_dataset("nmnist", None, "train")


def write_ncaltech101(root: Path, counts: dict[str, int]) -> None:
    for name, n in counts.items():
        folder = root / "Caltech101" / name
        folder.mkdir(parents=True)
        for i in range(n):
            # One event inside 240x180 and one outside (x = 250), which is dropped.
            events = make_events([10 + i, 250], [170, 5], [0, 10], [1, 0])
            (folder / f"image_{i + 1:04d}.bin").write_bytes(encode_atis(events))


def test_ncaltech101_stratified_split_and_crop(tmp_path: Path) -> None:
    write_ncaltech101(tmp_path, {"accordion": 20, "BACKGROUND_Google": 10, "yin_yang": 30})
    train = get_dataset("ncaltech101", str(tmp_path), "train")
    test = get_dataset("ncaltech101", str(tmp_path), "test")
    assert train.classes == ["BACKGROUND_Google", "accordion", "yin_yang"]
    assert train.num_classes == 3
    assert np.bincount(test.labels.numpy()).tolist() == [1, 2, 3]  # 10% of each class
    assert np.bincount(train.labels.numpy()).tolist() == [9, 18, 27]
    frames, _ = test[0]
    assert frames.shape == (10, 2, 180, 240)
    assert frames.sum() == 1 and frames[:, 1, 170].sum() == 1  # the x = 250 event is dropped


def write_nmnist(root: Path, per_digit: dict[str, int]) -> None:
    for folder, n in per_digit.items():
        for d in range(10):
            digit = root / folder / str(d)
            digit.mkdir(parents=True)
            for i in range(n):
                events = one_event_recording(x=d, y=33 - i, n=2)
                (digit / f"{i:05d}.bin").write_bytes(encode_atis(events))


@pytest.mark.parametrize("prefix", ["", "NMNIST"])
def test_nmnist_train_test_folders(tmp_path: Path, prefix: str) -> None:
    write_nmnist(tmp_path / prefix, {"Train": 2, "Test": 1})
    train = get_dataset("nmnist", str(tmp_path), "train")
    test = get_dataset("nmnist", str(tmp_path), "test")
    assert (len(train), len(test)) == (20, 10)
    assert test.labels.tolist() == list(range(10))
    for i in (0, 7):
        frames, label = test[i]
        assert frames.shape == (10, 2, 34, 34)
        assert frames[:, 1, 33, label].sum() == 2 == frames.sum()  # events at x = digit


def write_gesture_aedat(base: Path) -> None:
    """Two recordings of three gestures each; gesture g of recording r has 1 + g events."""
    base.mkdir(parents=True)
    for r, name in enumerate(("user01_fluorescent", "user02_led")):
        xs, ts, rows = [], [], []
        for g, label in enumerate((1 + r, 5, 11)):
            start = 1_000_000 * (g + 1)
            rows.append((label, start, start + 500_000))
            xs += [10 * g + r] * (1 + g)
            ts += [start + 1000 * k for k in range(1 + g)]
        events = make_events(xs, [64] * len(xs), ts, [1] * len(xs))
        (base / f"{name}.aedat").write_bytes(encode_aedat3(events))
        (base / f"{name}_labels.csv").write_text(gesture_csv(rows))
    (base / "trials_to_train.txt").write_text("user01_fluorescent.aedat\n")
    (base / "trials_to_test.txt").write_text("user02_led.aedat\n\n")


def test_dvs128_gesture_official_split_cut_per_gesture(tmp_path: Path) -> None:
    write_gesture_aedat(tmp_path / "DvsGesture")
    train = get_dataset("dvs128-gesture", str(tmp_path), "train", T=4)
    test = get_dataset("dvs128-gesture", str(tmp_path), "test", T=4)
    assert train.labels.tolist() == [0, 4, 10] and test.labels.tolist() == [1, 4, 10]
    assert train.num_classes == 11
    for g in range(3):
        frames, _ = test[g]
        assert frames.shape == (4, 2, 128, 128)
        assert frames.sum() == 1 + g and frames[:, 1, 64, 10 * g + 1].sum() == 1 + g


def test_dvs128_gesture_missing_recording_is_named(tmp_path: Path) -> None:
    base = tmp_path / "DvsGesture"
    write_gesture_aedat(base)
    (base / "user02_led_labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="user02_led_labels.csv"):
        get_dataset("dvs128-gesture", str(tmp_path), "test")


@pytest.mark.parametrize("layout", ["tonic", "folders"])
def test_dvs128_gesture_npy_layouts(tmp_path: Path, layout: str) -> None:
    rows = {3: [[5, 6, 1, 0.0], [5, 6, 1, 100.0]], 7: [[1, 2, 0, 3.5]]}
    for label, table in rows.items():
        if layout == "tonic":
            path = (
                tmp_path / "DVSGesture" / "ibmGestureTest" / f"user24_led_{label}" / f"{label}.npy"
            )
        else:
            path = tmp_path / "test" / str(label) / "sample0.npy"
        path.parent.mkdir(parents=True)
        np.save(path, np.asarray(table))
    test = get_dataset("dvs128-gesture", str(tmp_path), "test", T=2)
    assert test.labels.tolist() == [3, 7]
    frames, _ = test[0]
    assert frames[0, 1, 6, 5] == 1 and frames[1, 1, 6, 5] == 1  # t = 0 and 100 ms
    frames, _ = test[1]
    assert frames[:, 0, 2, 1].sum() == 1 == frames.sum()


def test_augmentation_shifts_within_bounds_train_only(tmp_path: Path) -> None:
    write_cifar10_dvs(tmp_path, per_class=10)
    train = get_dataset("cifar10-dvs", str(tmp_path), "train", augment=True)
    test = get_dataset("cifar10-dvs", str(tmp_path), "test", augment=True)
    assert test.transform is None and train.transform.max_shift == 25
    base = train.frames(0)
    (y0,), (x0,) = np.nonzero(base.sum(axis=(0, 1)))
    torch.manual_seed(0)
    shifts = set()
    for _ in range(60):
        frames, _ = train[0]
        ys, xs = np.nonzero(frames.numpy().sum(axis=(0, 1)))
        if len(ys):  # shifted out of the frame (zero fill) happens near the border
            shifts.add((int(ys[0]) - y0, int(xs[0]) - x0))
            assert frames.sum() == base.sum()
    assert all(abs(dy) <= 25 and abs(dx) <= 25 for dy, dx in shifts)
    assert len(shifts) > 10  # really random
    small = get_dataset("cifar10-dvs", str(tmp_path), "train", augment=True, size=(48, 48))
    assert small.transform.max_shift == round(25 * 48 / 128)


def test_cache_hit_skips_reading_and_parameter_change_rebuilds(tmp_path, monkeypatch) -> None:
    write_nmnist(tmp_path / "data", {"Train": 1, "Test": 1})
    reads = []
    real_read = event_datasets.read_events

    def counting_read(path, format=None):
        reads.append(Path(path).name)
        return real_read(path, format)

    monkeypatch.setattr(event_datasets, "read_events", counting_read)
    cache = FrameCache(tmp_path / "cache")
    test = get_dataset("nmnist", str(tmp_path / "data"), "test", cache=cache)
    first, _ = test[3]
    second, _ = test[3]
    assert len(reads) == 1 and (cache.builds, cache.hits) == (1, 1)
    torch.testing.assert_close(first, second)
    # A fresh dataset over the same cache folder (a path this time) still hits.
    again = get_dataset("nmnist", str(tmp_path / "data"), "test", cache=str(tmp_path / "cache"))
    torch.testing.assert_close(again[3][0], first)
    assert len(reads) == 1
    changed = get_dataset("nmnist", str(tmp_path / "data"), "test", cache=cache, T=5)
    assert changed[3][0].shape == (5, 2, 34, 34)
    assert len(reads) == 2 and cache.builds == 2
    count_sliced = get_dataset(
        "nmnist", str(tmp_path / "data"), "test", cache=cache, slicing="count"
    )
    count_sliced[3]
    assert len(reads) == 3 and cache.builds == 3


def test_event_source_dataset_frames_tonic_style_list() -> None:
    tonic = np.dtype([("t", "<i8"), ("x", "<i8"), ("y", "<i8"), ("p", "?")])
    a = np.array([(0, 1, 2, True), (50, 3, 4, False), (99, 3, 4, True)], dtype=tonic)
    b = np.array([(0, 0, 0, False)], dtype=tonic)
    source = [(a, 0), (b, 2)]
    ds = EventSourceDataset(source, (34, 34), T=2)
    assert len(ds) == 2 and ds.num_classes == 3 and ds.input_shape == (2, 2, 34, 34)
    frames, label = ds[0]
    assert label == 0 and frames.dtype == torch.float32
    expected = to_frames(make_events([1, 3, 3], [2, 4, 4], [0, 50, 99], [1, 0, 1]), (34, 34), T=2)
    np.testing.assert_array_equal(frames.numpy(), expected)
    assert frames[0, 1, 2, 1] == 1 and frames[1, 0, 4, 3] == 1 and frames[1, 1, 4, 3] == 1
    shifted = EventSourceDataset(source, (34, 34), T=2, augment=True, size=(17, 17))
    assert shifted.transform.max_shift == round(25 * 17 / 34)
    assert shifted[0][0].shape == (2, 2, 17, 17)


def test_event_source_dataset_caches_only_with_source_id(tmp_path: Path) -> None:
    calls = []

    class Source:
        classes = ["a", "b"]

        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int):
            calls.append(i)
            return make_events([1], [1], [0], [1]), 1

    cache = FrameCache(tmp_path)
    anonymous = EventSourceDataset(Source(), (4, 4), T=1, cache=cache)
    assert anonymous.num_classes == 2
    anonymous[0]
    assert cache.builds == 0
    named = EventSourceDataset(Source(), (4, 4), T=1, cache=cache, source_id="toy-v1")
    named[0]
    named[0]
    assert (cache.builds, cache.hits) == (1, 1)


def test_datasets_pickle_for_spawned_workers(tmp_path: Path) -> None:
    write_cifar10_dvs(tmp_path / "c10")
    write_gesture_aedat(tmp_path / "gesture" / "DvsGesture")
    write_ncaltech101(tmp_path / "caltech", {"a": 10, "b": 10})
    for name, sub in (
        ("cifar10-dvs", "c10"),
        ("dvs128-gesture", "gesture"),
        ("ncaltech101", "caltech"),
    ):
        ds = get_dataset(name, str(tmp_path / sub), "test", T=3)
        copy = pickle.loads(pickle.dumps(ds))
        torch.testing.assert_close(copy[1][0], ds[1][0])
        assert copy[1][1] == ds[1][1]


def test_frame_cache_auto_lives_under_spikecut_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKECUT_CACHE", str(tmp_path / "c"))
    cache = event_datasets._as_cache("auto")
    assert isinstance(cache, FrameCache) and cache.root == tmp_path / "c" / "frames"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert event_datasets._as_cache("~/frames").root == tmp_path / "home" / "frames"
    assert event_datasets._as_cache(None) is None
