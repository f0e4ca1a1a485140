"""Tests for the CIFAR-10/100 readers on tiny batches written in the real pickle formats."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from spikecut.data import BatchUnpickler, get_dataset, read_cifar_batch

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # SPEC §7
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (129.3 / 255, 124.1 / 255, 112.4 / 255)
CIFAR100_STD = (68.2 / 255, 65.4 / 255, 70.4 / 255)
NAMES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- writing batches as Python 2's cPickle did (protocol 2, str objects), numpy 1.x arrays ----


def _py2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` (SHORT_BINSTRING / BINSTRING); Python 3 reads it back as bytes."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _py2_int(i: int) -> bytes:
    if 0 <= i < 256:
        return b"K" + bytes([i])
    if 0 <= i < 65536:
        return b"M" + struct.pack("<H", i)
    return b"J" + struct.pack("<i", i)


def _py2_value(v: object) -> bytes:
    if isinstance(v, np.ndarray):  # numpy 1.x: _reconstruct(ndarray, (0,), 'b') + BUILD state
        shape = b"".join(_py2_int(d) for d in v.shape) + {1: b"\x85", 2: b"\x86"}[v.ndim]
        dtype_state = b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) * 2
        dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
        dtype += dtype_state + _py2_int(0) + b"tb"
        head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        head += _py2_int(0) + b"\x85" + _py2_str(b"b") + b"\x87R"
        return head + b"(" + _py2_int(1) + shape + dtype + b"\x89" + _py2_str(v.tobytes()) + b"tb"
    if isinstance(v, list):
        return b"](" + b"".join(_py2_value(x) for x in v) + b"e"
    if isinstance(v, bytes):
        return _py2_str(v)
    if isinstance(v, int):
        return _py2_int(v)
    raise TypeError(type(v))


def py2_pickle(batch: dict[str, object]) -> bytes:
    """The dict as the official (Python 2) CIFAR files store it: every key a py2 str."""
    items = b"".join(_py2_str(k.encode()) + _py2_value(v) for k, v in batch.items())
    return b"\x80\x02}(" + items + b"u."


def dump(batch: dict[str, object], style: str) -> bytes:
    if style == "py2":
        text = {k: [s.encode() if isinstance(s, str) else s for s in v] if k.endswith("names")
                else v for k, v in batch.items()}  # fmt: skip
        return py2_pickle(text)
    if style == "bytes-keys":
        return pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=4)
    return pickle.dumps(batch, protocol=2)  # a Python 3 re-pickle with str keys


def images_for(labels: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (len(labels), 3072), dtype=np.uint8)


def write_cifar10(root: Path, style: str = "py2", per_batch: int = 20, n_test: int = 10) -> dict:
    """``root/cifar-10-batches-py`` with 5 training batches, a test batch and the meta file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        labels = np.random.default_rng(100 + i).permutation(np.arange(n) % 10)
        batch = {"batch_label": b"batch", "labels": labels.tolist(), "data": images_for(labels, i)}
        (folder / name).write_bytes(dump(batch, style))
        written[name] = batch
    meta = {"label_names": NAMES10, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(dump(meta, style))
    return written


def write_cifar100(root: Path, style: str = "str-keys", n: int = 200) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate(["train", "test"]):
        fine = np.random.default_rng(i).permutation(np.arange(n) % 100)
        batch = {"fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist()}
        batch["data"] = images_for(fine, 10 + i)
        (folder / name).write_bytes(dump(batch, style))
        written[name] = batch
    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"coarse{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(dump(meta, style))
    return written


def expected_item(row: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(row.reshape(3, 32, 32).astype(np.float32)) / 255
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


# --- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["py2", "bytes-keys", "str-keys"])
def test_cifar10_items_labels_and_normalisation(tmp_path: Path, style: str) -> None:
    written = write_cifar10(tmp_path, style)
    train = get_dataset("cifar10", str(tmp_path), "train")
    test = get_dataset("cifar10", str(tmp_path), "test")
    assert (len(train), len(test)) == (100, 10)
    assert train.num_classes == test.num_classes == 10 and train.name == "cifar10"
    assert train.input_shape == (3, 32, 32) and train.classes == NAMES10
    batch3 = written["data_batch_3"]
    for i in (0, 7):
        x, label = train[40 + i]  # batches are read in order 1..5
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        assert label == batch3["labels"][i]
        torch.testing.assert_close(x, expected_item(batch3["data"][i], CIFAR10_MEAN, CIFAR10_STD))
    x, label = test[3]
    assert label == written["test_batch"]["labels"][3]
    raw = get_dataset("cifar10", str(tmp_path), "test", normalize=False)[3][0]
    torch.testing.assert_close(raw * 255, torch.from_numpy(
        written["test_batch"]["data"][3].reshape(3, 32, 32).astype(np.float32)))  # fmt: skip


def test_row_layout_is_red_green_blue_planes_row_major(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(tmp_path, "str-keys")
    data = np.zeros((10, 3072), dtype=np.uint8)
    data[0, 1024 + 32 * 2 + 5] = 255  # green plane, row 2, column 5
    batch = {"labels": list(range(10)), "data": data}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    x, _ = get_dataset("cifar10", str(folder), "test", normalize=False)[0]
    assert x[1, 2, 5] == 1.0 and int((x != 0).sum()) == 1


def test_root_may_be_the_batch_folder_or_its_parent(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    parent = get_dataset("cifar10", str(tmp_path), "test")
    inner = get_dataset("cifar10", str(tmp_path / "cifar-10-batches-py"), "test")
    assert torch.equal(parent.images, inner.images) and torch.equal(parent.labels, inner.labels)


def test_cifar100_fine_and_coarse_labels(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path)
    fine = get_dataset("cifar100", str(tmp_path), "train")
    coarse = get_dataset("cifar100", str(tmp_path), "test", label="coarse")
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert fine.classes[7] == "fine7" and coarse.classes[3] == "coarse3"
    assert fine.labels.tolist() == written["train"]["fine_labels"]
    assert coarse.labels.tolist() == written["test"]["coarse_labels"]
    x, _ = fine[5]
    torch.testing.assert_close(
        x, expected_item(written["train"]["data"][5], CIFAR100_MEAN, CIFAR100_STD)
    )
    with pytest.raises(ValueError, match="'fine' or 'coarse'"):
        get_dataset("cifar100", str(tmp_path), "train", label="super")


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    write_cifar10(tmp_path, "str-keys")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    before = get_dataset("cifar10", str(tmp_path), "test")
    again = get_dataset("cifar10", str(tmp_path), "test")
    assert again.images is before.images  # parsed once, shared (e.g. train + calibration)
    data = np.full((10, 3072), 9, dtype=np.uint8)
    path.write_bytes(pickle.dumps({"labels": [3] * 10, "data": data}))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    after = get_dataset("cifar10", str(tmp_path), "test")
    assert after.labels.tolist() == [3] * 10 and (after.images == 9).all()


# --- errors ---------------------------------------------------------------------------------


def test_missing_file_lists_every_path_tried(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        get_dataset("cifar10", str(tmp_path), "train")
    message = str(info.value)
    assert str(tmp_path / "data_batch_3") in message
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in message
    assert "cifar-10-batches-py" in message and "data_batch_1" in message
    get_dataset("cifar10", str(tmp_path), "test")  # the test split is complete
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*train"):
        get_dataset("cifar100", str(tmp_path), "train")
    with pytest.raises(ValueError, match="never downloads"):
        get_dataset("cifar10", None, "test")


def _write_test_batch(tmp_path: Path, batch: object) -> Path:
    write_cifar10(tmp_path, "str-keys")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps(batch))
    return path


GOOD = np.zeros((4, 3072), dtype=np.uint8)


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        ({"labels": [0] * 4, "data": GOOD.astype(np.int64)}, r"uint8 array \[N, 3072\].*int64"),
        ({"labels": [0] * 4, "data": GOOD[:, :3000]}, r"uint8 array \[N, 3072\].*\(4, 3000\)"),
        ({"labels": [0] * 4, "data": GOOD.tolist()}, r"uint8 array \[N, 3072\].*found list"),
        ({"labels": [0, 1, 10, 2], "data": GOOD}, r"'labels' must lie in 0..9, found 10 at .* 2"),
        ({"labels": [0, -1, 1, 2], "data": GOOD}, r"must lie in 0..9, found -1"),
        ({"labels": [0, 1, 2], "data": GOOD}, r"expected 4 'labels'.*found 3"),
        ({"labels": ["a"] * 4, "data": GOOD}, r"'labels' to be a list of integers"),
        ({"fine_labels": [0] * 4, "data": GOOD}, r"keys 'data' and 'labels', found keys"),
        ([GOOD], r"expected a pickled dict, found list"),
    ],
)
def test_malformed_batches_name_the_file_and_the_problem(
    tmp_path: Path, batch: object, expected: str
) -> None:
    path = _write_test_batch(tmp_path, batch)
    with pytest.raises(ValueError, match=expected) as info:
        get_dataset("cifar10", str(tmp_path), "test")
    assert str(path) in str(info.value)


def test_truncated_pickle_is_a_clear_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="not a readable CIFAR pickle batch") as info:
        get_dataset("cifar10", str(tmp_path), "test")
    assert str(path) in str(info.value)


class _Payload:
    """Unpickling this would create a folder: proof that the code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _write_test_batch(tmp_path, {"labels": [0] * 4, "data": _Payload(marker)})
    with pytest.raises(ValueError, match=r"refusing to load global (posix|os|nt)\.mkdir"):
        read_cifar_batch(path)
    assert not marker.exists()
    for proto in (2, 4):
        blob = pickle.dumps(_Payload(marker), protocol=proto)
        with pytest.raises(pickle.UnpicklingError, match="refusing"):
            BatchUnpickler(io.BytesIO(blob)).load()
    assert not marker.exists()
    builtin_call = b"cbuiltins\neval\n(V1+1\ntR."  # eval("1+1") in protocol 0
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        BatchUnpickler(io.BytesIO(builtin_call)).load()


# --- augmentation, limit --------------------------------------------------------------------


def test_training_augmentation_follows_spec_and_is_seeded(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    aug = get_dataset("cifar10", str(tmp_path), "train", augment=True)
    names = [type(t).__name__ for t in aug.transform.transforms]
    assert names == [
        "RandomCrop",
        "RandomHorizontalFlip",
        "AutoAugment",
        "ToFloat",
        "Normalize",
        "Cutout",
    ]
    crop, cutout = aug.transform.transforms[0], aug.transform.transforms[-1]
    assert (crop.size, crop.padding, cutout.size) == (32, 4, 16)
    stored = aug.images.clone()
    plain = get_dataset("cifar10", str(tmp_path), "train")
    torch.manual_seed(0)
    first = [aug[i][0] for i in range(20)]
    torch.manual_seed(0)
    second = [aug[i][0] for i in range(20)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert all(not torch.equal(a, plain[i][0]) for i, a in enumerate(first))
    # Cutout leaves a 0 (the mean colour) square of at least 8x8 in every item
    assert all(int((a == 0).all(dim=0).sum()) >= 64 for a in first)
    assert torch.equal(aug.images, stored)  # the stored bytes are never modified

    light = get_dataset(
        "cifar10", str(tmp_path), "train", augment=True, autoaugment=False, cutout=0
    )
    assert [type(t).__name__ for t in light.transform.transforms] == [
        "RandomCrop",
        "RandomHorizontalFlip",
        "ToFloat",
        "Normalize",
    ]
    test = get_dataset("cifar10", str(tmp_path), "test", augment=True)
    assert [type(t).__name__ for t in test.transform.transforms] == ["ToFloat", "Normalize"]
    with pytest.raises(ValueError, match="cutout"):
        get_dataset("cifar10", str(tmp_path), "train", cutout=-1)


def test_limit_keeps_a_seeded_class_balanced_subset(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    full = get_dataset("cifar10", str(tmp_path), "train")
    small = get_dataset("cifar10", str(tmp_path), "train", limit=20)
    assert len(small) == 20 and torch.bincount(small.labels, minlength=10).tolist() == [2] * 10
    again = get_dataset("cifar10", str(tmp_path), "train", limit=20)
    other = get_dataset("cifar10", str(tmp_path), "train", limit=20, seed=1)
    assert torch.equal(small.images, again.images)
    assert not torch.equal(small.images, other.images)
    # every kept image is one of the full set, with its label
    rows = {bytes(full.images[i].flatten().numpy()): int(full.labels[i]) for i in range(len(full))}
    for i in range(len(small)):
        assert rows[bytes(small.images[i].flatten().numpy())] == int(small.labels[i])
    assert len(get_dataset("cifar10", str(tmp_path), "test", limit=1000)) == 10
    with pytest.raises(ValueError, match="limit"):
        get_dataset("cifar10", str(tmp_path), "test", limit=0)
