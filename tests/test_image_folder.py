"""The ``imagefolder`` dataset on folders of PNG and JPEG files written here, and end to end on
the real digits images saved as PNG files."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spikecut.config import load_config
from spikecut.data import get_dataset
from spikecut.data import image_folder as image_folder_module
from spikecut.data.image_folder import channel_stats, per_class_subset, scan_image_folder
from spikecut.experiment import run_experiment

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CLASSES = ["cat", "ant", "bee"]  # not sorted on purpose


def write_folder(root: Path, counts: dict[str, dict[str, int]], size=(6, 5), seed=0) -> dict:
    """PNG images of random pixels (lossless); returns {(split, class): [uint8 HxWx3, ...]}."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for split, per_class in counts.items():
        for cls, n in per_class.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            pixels[(split, cls)] = []
            for i in range(n):
                image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(image).save(folder / f"{i:03d}.png")
                pixels[(split, cls)].append(image)
    return pixels


@pytest.fixture
def folder(tmp_path):
    counts = {
        "train": {"cat": 5, "ant": 4, "bee": 3},
        "test": {"cat": 2, "ant": 2, "bee": 2},
    }
    return tmp_path, write_folder(tmp_path, counts)


def test_classes_sorted_labels_and_exact_pixels(folder):
    root, pixels = folder
    data = get_dataset("imagefolder", str(root), "train", normalize=False)
    assert data.classes == sorted(CLASSES) and data.num_classes == 3
    assert len(data) == 12 and data.input_shape == (3, 6, 5)
    assert data.labels.tolist() == [0] * 4 + [1] * 3 + [2] * 5  # ant, bee, cat
    x, y = data[4]  # the first bee
    expected = torch.from_numpy(pixels[("train", "bee")][0]).permute(2, 0, 1).float() / 255
    assert y == 1 and torch.equal(x, expected)
    test = get_dataset("imagefolder", str(root), "test", normalize=False)
    assert test.classes == data.classes and len(test) == 6


def test_normalisation_computed_from_train_split_and_recorded(folder):
    root, pixels = folder
    train_pixels = np.stack([p for (s, _), ps in pixels.items() if s == "train" for p in ps])
    mean = train_pixels.reshape(-1, 3).mean(0) / 255
    std = train_pixels.reshape(-1, 3).std(0) / 255
    for split in ("train", "test"):
        data = get_dataset("imagefolder", str(root), split)
        assert data.normalization["mean"] == pytest.approx(mean, abs=1e-5)
        assert data.normalization["std"] == pytest.approx(std, abs=1e-5)
        assert data.normalization["source"] == "computed from the training split (12 images)"
    test = get_dataset("imagefolder", str(root), "test")
    raw = torch.from_numpy(pixels[("test", "ant")][0]).permute(2, 0, 1).double() / 255
    want = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(test[0][0].double(), want, atol=1e-4)

    given = get_dataset("imagefolder", str(root), "test", mean=[0.5] * 3, std=[0.25] * 3)
    assert given.normalization == {"mean": [0.5] * 3, "std": [0.25] * 3, "source": "config"}
    assert torch.allclose(given[0][0].double(), (raw - 0.5) / 0.25, atol=1e-5)


def test_channel_stats_match_numpy():
    images = torch.randint(0, 256, (7, 3, 4, 5), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=3)
    flat = images.permute(1, 0, 2, 3).reshape(3, -1).double().numpy() / 255
    assert mean == pytest.approx(flat.mean(1), abs=1e-6)
    assert std == pytest.approx(flat.std(1), abs=1e-6)


def test_per_class_limit_is_balanced_seeded_and_per_split(folder):
    root, _ = folder
    a = get_dataset("imagefolder", str(root), "train", per_class=2, seed=1)
    again = get_dataset("imagefolder", str(root), "train", per_class=2, seed=1)
    assert np.bincount(a.labels.numpy()).tolist() == [2, 2, 2]
    assert a.files == again.files  # deterministic
    others = {
        tuple(get_dataset("imagefolder", str(root), "train", per_class=2, seed=s).files)
        for s in range(6)
    }
    assert len(others) > 1  # the seed picks the subset
    capped = get_dataset("imagefolder", str(root), "test", per_class={"train": 1})
    assert len(capped) == 6  # the mapping leaves the test split whole
    assert capped.normalization["source"] == "computed from the training split (3 images)"
    labels = np.array([0] * 5 + [1] * 2)
    assert per_class_subset(labels, 3, 0).tolist()[-2:] == [5, 6]
    with pytest.raises(ValueError, match="per_class must be a positive int"):
        per_class_subset(labels, 0, 0)
    with pytest.raises(ValueError, match="per_class names splits 'train' and 'test'"):
        get_dataset("imagefolder", str(root), "train", per_class={"val": 2})


def test_augmentation_only_on_train(folder):
    root, _ = folder
    with pytest.raises(ValueError, match=r"cutout 16 would erase the whole 6x5 image"):
        get_dataset("imagefolder", str(root), "train", augment=True)
    train = get_dataset("imagefolder", str(root), "train", augment=True, cutout=2, padding=1)
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(8)]
    assert all(d.shape == (3, 6, 5) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    test = get_dataset("imagefolder", str(root), "test", augment=True)
    assert torch.equal(test[0][0], test[0][0])


def test_file_backed_and_disk_cached_splits_equal_the_memory_copy(folder, tmp_path, monkeypatch):
    root, _ = folder
    memory = get_dataset("imagefolder", str(root), "train", cache="memory")
    files = get_dataset("imagefolder", str(root), "train", cache="none")
    assert type(files).__name__ == "ImageFolderFileDataset"
    assert all(torch.equal(memory[i][0], files[i][0]) for i in range(len(memory)))
    assert files.normalization == memory.normalization

    cache = tmp_path / "cache"
    first = get_dataset("imagefolder", str(root), "test", cache_dir=str(cache))
    written = list(cache.iterdir())  # the test split and the training split (its statistics)
    assert len(written) == 2 and {p.suffix for p in written} == {".npz"}
    image_folder_module._DECODED.clear()  # as in a new process

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache folder")

    monkeypatch.setattr(image_folder_module, "decode_image_file", refuse)
    second = get_dataset("imagefolder", str(root), "test", cache_dir=str(cache), normalize=False)
    assert torch.equal(first.images, second.images)


def test_disk_cache_is_rebuilt_when_a_file_changes(folder, tmp_path):
    root, _ = folder
    cache = tmp_path / "cache"
    before = get_dataset("imagefolder", str(root), "test", cache_dir=str(cache), normalize=False)
    path = root / "test" / "ant" / "000.png"
    Image.fromarray(np.zeros((6, 5, 3), dtype=np.uint8)).save(path)
    after = get_dataset("imagefolder", str(root), "test", cache_dir=str(cache), normalize=False)
    assert before.images[0].sum() > 0 and after.images[0].sum() == 0
    assert len(list(cache.iterdir())) == 2

    # A damaged cache file is decoded again and replaced, never trusted or left broken.
    image_folder_module._DECODED.clear()
    for saved in cache.iterdir():
        saved.write_bytes(b"truncated")
    again = get_dataset("imagefolder", str(root), "test", cache_dir=str(cache), normalize=False)
    assert torch.equal(again.images, after.images)
    sizes = sorted(p.stat().st_size for p in cache.iterdir())  # the stale key's file stays
    assert sizes[0] == len(b"truncated") and sizes[1] > 100
    assert not list(cache.glob(".*.tmp"))


def test_resize_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls, shape in (("a", (10, 12)), ("b", (7, 7))):
            (tmp_path / split / cls).mkdir(parents=True)
            image = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
            image.save(tmp_path / split / cls / "x.JPG", quality=90)
            image.convert("L").save(tmp_path / split / cls / "y.jpeg")
    with pytest.raises(
        ValueError, match=r"x.JPG: expected a 10x12 \(HxW\) image like .*found 7x7 \(set the 'size'"
    ):
        get_dataset("imagefolder", str(tmp_path), "train")
    data = get_dataset("imagefolder", str(tmp_path), "train", size=8, mode="L")
    assert data.input_shape == (1, 8, 8) and len(data) == 4
    assert data.normalization["mean"][0] > 0.1


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda r: None, FileNotFoundError, r"no 'train' split in .*: .* is not a folder"),
        (lambda r: (r / "train").mkdir(), FileNotFoundError, r"no class folders in .*train"),
        (
            lambda r: (r / "train" / "cat").mkdir(parents=True),
            ValueError,
            r"split 'train' has 1 class folder\(s\) with no image .*cat",
        ),
    ],
)
def test_layout_errors_name_folder_and_split(tmp_path, make, error, message):
    make(tmp_path)
    with pytest.raises(error, match=message):
        get_dataset("imagefolder", str(tmp_path), "train")


def test_split_errors(folder):
    root, _ = folder
    (root / "test" / "dog").mkdir()
    with pytest.raises(ValueError, match=r"test has class folders that are not among .*: dog"):
        scan_image_folder(root, "test")
    (root / "test" / "dog").rmdir()
    for png in (root / "test" / "bee").iterdir():
        png.unlink()
    (root / "test" / "bee").rmdir()
    with pytest.raises(FileNotFoundError, match=r"split 'test' lacks 1 class folder\(s\): .*bee"):
        get_dataset("imagefolder", str(root), "test")
    with pytest.raises(ValueError, match="needs root="):
        get_dataset("imagefolder", None, "train")
    with pytest.raises(ValueError, match="give both mean and std"):
        get_dataset("imagefolder", str(root), "train", mean=[0.5] * 3)
    with pytest.raises(ValueError, match=r"need 3 value\(s\) each"):
        get_dataset("imagefolder", str(root), "train", mean=[0.5], std=[0.2])


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_unreadable_image_is_named(folder, cache):
    root, _ = folder
    bad = root / "train" / "ant" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    data = get_dataset("imagefolder", str(root), "train", cache="none", normalize=False)
    with pytest.raises(ValueError, match=r"broken\.jpg: not a decodable image file"):
        if cache == "none":
            data[data.files.index(str(bad))]
        else:
            get_dataset("imagefolder", str(root), "train", cache=cache)


def test_digits_as_png_folder_end_to_end(tmp_path):
    """The real digits, saved as 8x8 grey PNG files, train and exit early through imagefolder."""
    digits_train = get_dataset("digits", None, "train")
    digits_test = get_dataset("digits", None, "test")
    root = tmp_path / "digits"
    for split, data in (("train", digits_train), ("test", digits_test)):
        for index in range(len(data)):
            x = data.images[index, 0]
            x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-6)
            folder = root / split / f"digit{int(data.labels[index])}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (x.numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{index:04d}.png")
    cfg = load_config(
        CONFIGS / "digits-qcfs.yaml",
        [
            "data.name=imagefolder",
            f"data.root={root}",
            "data.options={mode: L, padding: 1, flip: false, autoaugment: false, cutout: 2}",
            "train.epochs=8",
            "runs=[{name: a0, alpha: 0.0}]",
        ],
    )
    out = tmp_path / "run"
    results = run_experiment(cfg, out, progress=False)
    run = results["runs"][0]
    assert run["ann_accuracy"] >= 0.9 and run["snn_accuracy_per_t"][-1] >= 0.9
    topk = next(r for r in run["rules"] if r["rule"] == "topk" and r["epsilon"] == 0.0)
    assert topk["mean_exit"] < 8.0
    recorded = json.loads((out / "results.json").read_text())["data"]
    assert recorded["test_size"] == 360 and recorded["num_classes"] == 10
    assert recorded["normalization"]["source"].startswith("computed from the training split")


def test_cifar10jpeg_config_is_the_issue_setting():
    """The CPU-sized CIFAR-10 config: balanced 1,000 per class to train, the whole test split,
    T = 16, α = 0 and RCS-ANN, every rule including the guaranteed ones."""
    cfg = load_config(CONFIGS / "cifar10jpeg-resnet20-qcfs.yaml", ["data.root=/data"])
    assert cfg.data.name == "imagefolder" and cfg.data.augment
    assert cfg.data.options["per_class"] == {"train": 1000}
    assert cfg.model.name == "resnet20" and cfg.T == 16
    assert [r.alpha for r in cfg.runs] == [0.0, 0.002]
    assert set(cfg.cutoff.rules) == {"topk", "softmax", "entropy"}
    assert cfg.cutoff.calibration.source == "heldout"
    assert set(cfg.cutoff.guarantee.rules) == {
        "topk-risk",
        "softmax-risk",
        "entropy-risk",
        "spikecp",
    }
