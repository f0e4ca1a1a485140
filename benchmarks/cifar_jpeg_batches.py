"""Write CIFAR-10 python batches from the image-folder JPEG copy, for experiments here.

The shared copy (``../shared/data/cifar10-jpeg``: ``train-1.zip``, ``train-2.zip``,
``test.zip`` holding ``<split>/<class>/NNNN.jpg``) is not the official pickle format that
``spikecut``'s ``cifar10`` reader takes; this script decodes it (Pillow) into
``OUT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``, with the first
``--per-class`` training images of each class by file name. Figures measured on the result
are "CIFAR-10 (JPEG q75)", never the official CIFAR-10 numbers.

    python benchmarks/cifar_jpeg_batches.py ../shared/data/cifar10-jpeg OUT --per-class 1000
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from spikecut.data.event_datasets import CIFAR10_DVS_CLASSES

CLASSES = CIFAR10_DVS_CLASSES  # the CIFAR-10 names in the official label order 0-9


def read_split(archives: list[Path], split: str, per_class: int | None) -> dict:
    """Decode ``split/<class>/*.jpg`` from ``archives``: the CIFAR batch dict."""
    members: dict[str, list[tuple[zipfile.ZipFile, str]]] = {c: [] for c in CLASSES}
    for archive in archives:
        zf = zipfile.ZipFile(archive)
        for name in zf.namelist():
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == split and parts[2].endswith(".jpg"):
                if parts[1] not in members:
                    raise ValueError(f"{archive}: unknown class folder {parts[1]!r} in {name}")
                members[parts[1]].append((zf, name))
    rows, labels = [], []
    for label, cls in enumerate(CLASSES):
        chosen = sorted(members[cls], key=lambda m: m[1])[:per_class]
        if not chosen:
            raise ValueError(f"{split}/{cls}: no images in {[str(a) for a in archives]}")
        for zf, name in chosen:
            with Image.open(io.BytesIO(zf.read(name))) as img:
                pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
            if pixels.shape != (32, 32, 3):
                raise ValueError(f"{name}: expected a 32x32 RGB image, found {pixels.shape}")
            rows.append(pixels.transpose(2, 0, 1).reshape(-1))
            labels.append(label)
    return {"data": np.stack(rows), "labels": labels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with train-1.zip, train-2.zip, test.zip")
    parser.add_argument("out", type=Path, help="folder to write cifar-10-batches-py/ into")
    parser.add_argument("--per-class", type=int, default=None, help="training images per class")
    args = parser.parse_args(argv)
    folder = args.out / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = read_split(
        [args.source / "train-1.zip", args.source / "train-2.zip"], "train", args.per_class
    )
    test = read_split([args.source / "test.zip"], "test", None)
    parts = np.array_split(np.arange(len(train["labels"])), 5)  # the reader wants five
    batches = [
        (
            f"data_batch_{i + 1}",
            {"data": train["data"][p], "labels": [train["labels"][j] for j in p]},
        )
        for i, p in enumerate(parts)
    ]
    for name, batch in [*batches, ("test_batch", test)]:
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(pickle.dumps(batch))
        tmp.replace(folder / name)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CLASSES)}))
    print(f"{folder}: {len(train['labels'])} training and {len(test['labels'])} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
