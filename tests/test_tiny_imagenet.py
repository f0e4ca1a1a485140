"""Tests for the Tiny-ImageNet reader on a small tree of JPEGs written by PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spikecut.data import get_dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WNIDS = ["n03", "n01", "n02"]  # listed unsorted: class index = position in sorted order
PER_CLASS = 4
JPEG_TOLERANCE = 3  # a flat colour survives JPEG within a few levels


def colour(label: int, i: int) -> tuple[int, int, int]:
    return (40 + 60 * label, 10 + 30 * i, 200 - 20 * i)


def write_jpeg(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, format="JPEG", quality=95)


def write_tiny(root: Path) -> Path:
    """``root/tiny-imagenet-200`` with PER_CLASS train images per class and 6 val images."""
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for wnid in WNIDS:
        label = sorted(WNIDS).index(wnid)
        for i in range(PER_CLASS):
            write_jpeg(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", colour(label, i))
        boxes = "".join(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(PER_CLASS))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(boxes)
    lines = []
    for k, wnid in enumerate(["n02", "n03", "n01", "n01", "n02", "n03"]):
        write_jpeg(base / "val" / "images" / f"val_{k}.JPEG", colour(sorted(WNIDS).index(wnid), k))
        lines.append(f"val_{k}.JPEG\t{wnid}\t1\t2\t60\t61")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def normalised(rgb: tuple[int, int, int]) -> torch.Tensor:
    return torch.tensor(
        [(v / 255 - m) / s for v, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    )


def assert_flat(x: torch.Tensor, rgb: tuple[int, int, int]) -> None:
    expected = normalised(rgb).view(3, 1, 1).expand(3, 64, 64)
    tolerance = JPEG_TOLERANCE / 255 / min(IMAGENET_STD)
    torch.testing.assert_close(x, expected, atol=tolerance, rtol=0)


def test_train_and_val_items_labels_and_normalisation(tmp_path: Path) -> None:
    write_tiny(tmp_path)
    train = get_dataset("tiny-imagenet", str(tmp_path), "train")
    test = get_dataset("tiny-imagenet", str(tmp_path), "test")
    assert (len(train), len(test)) == (3 * PER_CLASS, 6)
    assert train.num_classes == 3 and train.classes == ["n01", "n02", "n03"]
    assert train.input_shape == (3, 64, 64) and train.name == "tiny-imagenet"
    assert train.labels.tolist() == [0] * PER_CLASS + [1] * PER_CLASS + [2] * PER_CLASS
    for index in (0, PER_CLASS + 2, 2 * PER_CLASS + 3):
        x, label = train[index]
        assert x.dtype == torch.float32 and x.shape == (3, 64, 64)
        assert_flat(x, colour(label, index % PER_CLASS))
    assert test.labels.tolist() == [1, 2, 0, 0, 1, 2]  # from val_annotations.txt
    for k in range(6):
        x, label = test[k]
        assert_flat(x, colour(label, k))
    raw, _ = get_dataset("tiny-imagenet", str(tmp_path), "test", normalize=False)[0]
    assert (raw * 255 - torch.tensor(colour(1, 0)).view(3, 1, 1)).abs().max() <= JPEG_TOLERANCE
    inner = get_dataset("tiny-imagenet", str(tmp_path / "tiny-imagenet-200"), "test")
    assert inner.files == test.files


def test_augmentation_is_crop_and_flip_on_train_only(tmp_path: Path) -> None:
    base = write_tiny(tmp_path)
    # a left/right split image, so a flip or a shifted crop shows
    half = np.zeros((64, 64, 3), dtype=np.uint8)
    half[:, 32:] = 255
    Image.fromarray(half).save(base / "train" / "n01" / "images" / "n01_0.JPEG", quality=95)
    aug = get_dataset("tiny-imagenet", str(tmp_path), "train", augment=True)
    names = [type(t).__name__ for t in aug.transform.transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "ToFloat", "Normalize"]
    assert aug.transform.transforms[0].size == 64 and aug.transform.transforms[0].padding == 4
    plain = get_dataset("tiny-imagenet", str(tmp_path), "train")[0][0]
    torch.manual_seed(0)
    first = [aug[0][0] for _ in range(8)]
    torch.manual_seed(0)
    second = [aug[0][0] for _ in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert any(not torch.equal(a, plain) for a in first)
    test = get_dataset("tiny-imagenet", str(tmp_path), "test", augment=True)
    assert [type(t).__name__ for t in test.transform.transforms] == ["ToFloat", "Normalize"]


def test_limit_picks_per_class(tmp_path: Path) -> None:
    write_tiny(tmp_path)
    small = get_dataset("tiny-imagenet", str(tmp_path), "train", limit=6)
    assert len(small) == 6 and sorted(small.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    again = get_dataset("tiny-imagenet", str(tmp_path), "train", limit=6)
    assert small.files == again.files


def test_missing_layout_lists_the_paths_tried(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        get_dataset("tiny-imagenet", str(tmp_path), "train")
    message = str(info.value)
    assert str(tmp_path / "wnids.txt") in message
    assert str(tmp_path / "tiny-imagenet-200" / "wnids.txt") in message
    assert "train/<wnid>/images" in message and "val_annotations.txt" in message
    with pytest.raises(ValueError, match="never downloads"):
        get_dataset("tiny-imagenet", None, "train")


def test_missing_class_images_and_val_files(tmp_path: Path) -> None:
    base = write_tiny(tmp_path)
    for path in (base / "train" / "n02" / "images").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 classes") as info:
        get_dataset("tiny-imagenet", str(tmp_path), "train")
    assert str(base / "train" / "n02" / "images") in str(info.value)
    (base / "val" / "images" / "val_4.JPEG").unlink()
    with pytest.raises(FileNotFoundError, match="val_4.JPEG"):
        get_dataset("tiny-imagenet", str(tmp_path), "test")


def test_bad_annotations(tmp_path: Path) -> None:
    base = write_tiny(tmp_path)
    annotations = base / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt:1: class id 'n99'"):
        get_dataset("tiny-imagenet", str(tmp_path), "test")
    annotations.write_text("val_0.JPEG n01\n")
    with pytest.raises(ValueError, match="tab-separated"):
        get_dataset("tiny-imagenet", str(tmp_path), "test")
    (base / "wnids.txt").write_text("n01\nn02\nn01\n")
    with pytest.raises(ValueError, match="more than once: n01"):
        get_dataset("tiny-imagenet", str(tmp_path), "train")


def test_wrong_size_or_undecodable_image_names_the_file(tmp_path: Path) -> None:
    base = write_tiny(tmp_path)
    small = base / "train" / "n01" / "images" / "n01_1.JPEG"
    write_jpeg(small, (1, 2, 3), size=(32, 48))
    broken = base / "train" / "n01" / "images" / "n01_2.JPEG"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    train = get_dataset("tiny-imagenet", str(tmp_path), "train")
    train[0]  # the good files still read
    with pytest.raises(ValueError, match=r"expected a 64x64 \(HxW\) image, found 48x32") as info:
        train[1]
    assert str(small) in str(info.value)
    with pytest.raises(ValueError, match="not a decodable image") as info:
        train[2]
    assert str(broken) in str(info.value)
    grey = base / "train" / "n01" / "images" / "n01_3.JPEG"
    Image.new("L", (64, 64), 100).save(grey, format="JPEG")
    x, _ = train[3]  # greyscale files are converted to RGB
    assert x.shape == (3, 64, 64)
