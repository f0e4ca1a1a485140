"""Tiny-ImageNet (200 classes, 64×64 RGB) from the extracted ``tiny-imagenet-200`` folder.

Layout (``root`` is that folder or its parent)::

    wnids.txt                          one WordNet id per line, 200 lines
    train/<wnid>/images/*.JPEG         500 per class (``<wnid>_boxes.txt`` beside is ignored)
    val/images/*.JPEG                  10 000 images
    val/val_annotations.txt            tab-separated: file name, wnid, box x0 y0 x1 y1

Class index = position of the wnid in ``sorted(wnids.txt)``. Split ``"train"`` is the train
folder; split ``"test"`` is the labelled val folder (the held-out set papers report; the
official test folder has no labels). Images are decoded with PIL on every access, not
cached (the train split is 100k files, 1.2 GB as pixels): an item costs one small JPEG
decode, which DataLoader workers parallelise. A file that does not decode to 64×64 raises
ValueError naming it when it is read.

Normalised with the ImageNet mean/std. The paper's code uses no augmentation for
Tiny-ImageNet (SPEC §7); ``augment=True`` (train split) gives a random crop 64 with padding
4 and a horizontal flip, the CIFAR recipe without AutoAugment and Cutout.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from .augment import pipeline
from .images import ImageFileDataset, image_files, locate_folder, stratified_subset
from .registry import register_dataset

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TINY_IMAGENET_FOLDER", "tiny_imagenet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
SIZE = 64


@register_dataset("tiny-imagenet", frames=False, num_classes=200, input_shape=(3, SIZE, SIZE))
def tiny_imagenet(
    root: str | None = None,
    split: str = "train",
    *,
    augment: bool = False,
    limit: int | None = None,
    seed: int = 0,
    normalize: bool = True,
) -> ImageFileDataset:
    """Tiny-ImageNet as ``[3, 64, 64]`` images; see the module docstring for the layout.

    ``augment`` (train split only): crop 64 pad 4 and flip. ``limit``: keep that many
    samples, spread evenly over the classes by a ``seed``-ed pick (for smoke runs).
    """
    base = locate_tiny_imagenet(root)
    wnids = read_wnids(base / "wnids.txt")
    if split == "train":
        files, labels = _train_files(base, wnids)
    else:
        files, labels = _val_files(base, wnids)
    keep = stratified_subset(labels, limit, seed)
    train = augment and split == "train"
    transform = pipeline(
        SIZE,
        (IMAGENET_MEAN, IMAGENET_STD) if normalize else None,
        padding=4 if train else None,
        flip=train,
    )
    return ImageFileDataset(
        [files[i] for i in keep],
        labels[keep],
        len(wnids),
        (SIZE, SIZE),
        transform,
        "tiny-imagenet",
        wnids,
    )


def locate_tiny_imagenet(root: str | os.PathLike | None) -> Path:
    """The folder holding ``wnids.txt``: ``root`` or ``root / "tiny-imagenet-200"``."""
    layout = (
        f"root is the extracted {TINY_IMAGENET_FOLDER}/ folder or its parent: wnids.txt, "
        "train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt"
    )
    return locate_folder("tiny-imagenet", root, TINY_IMAGENET_FOLDER, ["wnids.txt"], layout)


def read_wnids(path: Path) -> list[str]:
    """The class ids of ``wnids.txt``, sorted (a class's index is its position here)."""
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wnids:
        raise ValueError(f"{path}: no class ids (expected one WordNet id per line)")
    repeated = sorted(w for w, n in Counter(wnids).items() if n > 1)
    if repeated:
        raise ValueError(f"{path}: class ids listed more than once: {', '.join(repeated[:10])}")
    return sorted(wnids)


def _train_files(base: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    """Sorted image files of every class folder ``train/<wnid>/images``, with labels."""
    files: list[Path] = []
    labels: list[int] = []
    empty = []
    for index, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        found = image_files(folder)
        if not found:
            empty.append(str(folder))
        files += found
        labels += [index] * len(found)
    if empty:
        raise FileNotFoundError(
            f"tiny-imagenet: {len(empty)} of {len(wnids)} classes in wnids.txt have no images; "
            f"expected image files (*.JPEG) in: {', '.join(empty[:10])}"
            + (f" (and {len(empty) - 10} more)" if len(empty) > 10 else "")
        )
    return files, np.asarray(labels, dtype=np.int64)


def _val_files(base: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    """The files of ``val/val_annotations.txt``, in its order, with their labels."""
    annotations = base / "val" / "val_annotations.txt"
    folder = base / "val" / "images"
    if not annotations.is_file() or not folder.is_dir():
        missing = [str(p) for p in (annotations, folder) if not p.exists()]
        raise FileNotFoundError(
            f"tiny-imagenet test split (the val folder) not found; missing: {', '.join(missing)}"
        )
    index = {wnid: i for i, wnid in enumerate(wnids)}
    present = {p.name for p in image_files(folder)}
    files: list[Path] = []
    labels: list[int] = []
    missing = []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(
                f"{annotations}:{number}: expected tab-separated file name, wnid and box, "
                f"found {line!r}"
            )
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in index:
            raise ValueError(f"{annotations}:{number}: class id {wnid!r} is not in wnids.txt")
        if name not in present:
            missing.append(str(folder / name))
        files.append(folder / name)
        labels.append(index[wnid])
    if missing:
        raise FileNotFoundError(
            f"tiny-imagenet: {len(missing)} image(s) listed in {annotations} are missing: "
            + ", ".join(missing[:10])
            + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
        )
    if not files:
        raise ValueError(f"{annotations}: no annotated images")
    return files, np.asarray(labels, dtype=np.int64)
