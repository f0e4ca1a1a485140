"""mnist5k-dvs: MNIST-5k through the DVS emulator, framed, split like mnist5k, cached on disk."""

import numpy as np
import pytest
import torch

from spikecut.data import emulated, get_dataset
from spikecut.data.emulated import FrameTensorDataset, emulate_frames
from spikecut.data.emulator import DVSEmulator
from spikecut.data.framing import Framing


@pytest.fixture
def count_emulations(monkeypatch):
    calls = []
    original = emulated.emulate_frames

    def counted(images, *args, **kwargs):
        calls.append(len(images))
        return original(images, *args, **kwargs)

    monkeypatch.setattr(emulated, "emulate_frames", counted)
    return calls


def _dvs(tmp_path, **options):
    options = {"test_size": 60, "T": 4, "cache": str(tmp_path), "progress": False, **options}
    return get_dataset("mnist5k-dvs", split="test", **options)


def test_same_split_as_mnist5k_and_real_event_frames(tmp_path):
    data = _dvs(tmp_path)
    static = get_dataset("mnist5k", split="test", test_size=60)
    assert len(data) == 60 and torch.equal(data.labels, static.labels)
    frames, label = data[0]
    assert frames.shape == (4, 2, 34, 34) and frames.dtype == torch.float32
    assert label == int(static.labels[0])
    counts = data.frames_data.float()
    per_sample = counts.sum(dim=(1, 2, 3, 4))
    assert (per_sample > 1000).all()  # a saccading digit makes thousands of events
    assert (counts[:, :, 0].sum() > 0) and (counts[:, :, 1].sum() > 0)  # OFF and ON
    assert (counts.sum(dim=(0, 2, 3, 4)) > 0).all()  # every time slice holds events
    # The digit is centred: the border of the 34×34 sensor sees far fewer events.
    border = counts[..., :3, :].sum() + counts[..., -3:, :].sum()
    assert border < 0.05 * counts.sum()


def test_frames_are_cached_and_rebuilt_when_a_parameter_changes(tmp_path, count_emulations):
    first = _dvs(tmp_path)
    again = _dvs(tmp_path)
    assert count_emulations == [60]  # the second call read the cache
    assert torch.equal(first.frames_data, again.frames_data)
    for change in ({"contrast": 0.4}, {"T": 5}, {"slicing": "count"}, {"refractory_us": 0}):
        _dvs(tmp_path, **change)
    assert count_emulations == [60] * 5
    assert _dvs(tmp_path, T=5).frames_data.shape[1] == 5
    assert len(count_emulations) == 5


def test_emulation_does_not_depend_on_the_order_of_digits():
    rng = np.random.default_rng(0)
    images = rng.random((3, 28, 28)) * (rng.random((3, 28, 28)) > 0.7)
    emulator = DVSEmulator(noise_rate_hz=5.0, mismatch=0.02, seed=1)
    framing = Framing((34, 34), 4)
    forward = emulate_frames(images, np.array([5, 6, 7]), emulator, framing, 1, progress=False)
    backward = emulate_frames(
        images[::-1], np.array([7, 6, 5]), emulator, framing, 1, progress=False
    )
    assert np.array_equal(forward, backward[::-1])


def test_limit_augmentation_and_bad_options(tmp_path):
    small = _dvs(tmp_path, limit=10)
    assert len(small) == 10 and set(small.labels.tolist()) <= set(range(10))
    train = get_dataset(
        "mnist5k-dvs",
        split="train",
        test_size=4900,
        T=4,
        augment=True,
        max_shift=3,
        cache=str(tmp_path),
        progress=False,
    )
    x, _ = train[0]
    assert x.sum() <= train.frames_data[0].float().sum()  # a shift only loses events
    assert train.without_transform().transform is None
    with pytest.raises(ValueError, match="limit must be in 1..60"):
        _dvs(tmp_path, limit=61)
    with pytest.raises(ValueError, match=r"frames must be \[N, T, 2, H, W\]"):
        FrameTensorDataset(np.zeros((2, 4, 3, 5, 5)), np.zeros(2), 10)


def _enter(tmp_path, **options):
    options = {"test_size": 60, "T": 8, "cache": str(tmp_path), "progress": False, **options}
    return get_dataset("mnist5k-enter", split="test", **options)


def test_entering_digits_hold_little_evidence_early(tmp_path, count_emulations):
    data = _enter(tmp_path)
    dvs = _dvs(tmp_path, T=8)
    assert len(data) == 60 and torch.equal(data.labels, dvs.labels)  # same split
    assert data[0][0].shape == (8, 2, 34, 34)
    per_slice = data.frames_data.float().sum(dim=(0, 2, 3, 4))
    # Slice 1 sees only the leading edges; from the middle on the whole digit saccades.
    assert per_slice[0] < 0.1 * per_slice[3]
    assert (per_slice[4:] > 0.2 * per_slice[3]).all()
    # Saccading digits (mnist5k-dvs) give every slice about the same evidence.
    dvs_slices = dvs.frames_data.float().sum(dim=(0, 2, 3, 4))
    assert dvs_slices[0] > 0.3 * dvs_slices.max()
    # Each digit comes from one of the four sides: the first events sit near one border.
    first = data.frames_data[:, 1].float().sum(dim=1)  # [N, 34, 34], slice 2
    cols, rows = first.sum(dim=1), first.sum(dim=2)
    near = torch.stack(
        [cols[:, :12].sum(1), cols[:, -12:].sum(1), rows[:, :12].sum(1), rows[:, -12:].sum(1)]
    ) / first.sum(dim=(1, 2)).clamp_min(1)
    sides = near.argmax(0)
    assert (near.max(0).values > 0.7).float().mean() > 0.9
    assert len(set(sides.tolist())) == 4
    _enter(tmp_path)
    _enter(tmp_path, enter_ms=100.0)
    assert count_emulations == [60, 60, 60]  # cached; a new motion builds anew
    with pytest.raises(ValueError, match="enter_ms and saccade_ms must be positive"):
        _enter(tmp_path, saccade_ms=0.0)
