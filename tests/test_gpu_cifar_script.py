"""The full-scale GPU script, run on the CPU at toy size: it unpacks zips in the shared copy's
layout, runs the config's pipeline per (model, T), resumes, and writes its summary."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from benchmark_script import load_benchmark
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_zips(folder: Path, train: int, test: int) -> None:
    """``train-1.zip``/``train-2.zip``/``test.zip`` of 32x32 JPEGs, the copy's layout."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    archives = {
        name: zipfile.ZipFile(folder / name, "w")
        for name in ("train-1.zip", "train-2.zip", "test.zip")
    }
    for label, cls in enumerate(CLASSES):
        for split, n in (("train", train), ("test", test)):
            for i in range(n):
                base = rng.integers(0, 60, (32, 32, 3)) + 19 * label  # classes differ in tone
                buffer = io.BytesIO()
                Image.fromarray(base.astype(np.uint8)).save(buffer, "JPEG", quality=75)
                archive = "test.zip" if split == "test" else f"train-{1 + i % 2}.zip"
                archives[archive].writestr(f"{split}/{cls}/{i:04d}.jpg", buffer.getvalue())
    for archive in archives.values():
        archive.close()


def test_gpu_script_runs_resumes_and_summarises(tmp_path, capsys):
    script = load_benchmark("gpu_cifar10jpeg")
    write_zips(tmp_path / "zips", train=8, test=3)
    out = tmp_path / "out"
    options = ["--epochs", "1", "--device", "cpu", "--workers", "0", "--batch-size", "16"]
    argv = [str(tmp_path / "zips"), str(out), "--models", "resnet20", *options, "--quiet"]
    assert script.main([*argv, "--T", "2"]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert [(e["model"], e["T"]) for e in first["experiments"]] == [("resnet20", 2)]
    assert (out / "data" / "train" / "cat" / "0007.jpg").is_file()

    # A second call keeps the finished (model, T) and runs only what is new.
    assert script.main([*argv, "--T", "2", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [(e["model"], e["T"]) for e in summary["experiments"]] == [
        ("resnet20", 2),
        ("resnet20", 3),
    ]
    assert summary["experiments"][0] == first["experiments"][0]
    assert summary["device_seconds"] > first["device_seconds"]
    for entry in summary["experiments"]:
        assert [r["run"] for r in entry["runs"]] == ["alpha=0", "alpha=0.002"]
        for row in entry["runs"]:
            assert len(row["snn_accuracy_per_t"]) == entry["T"]
            assert 1 <= row["topk_mean_exit"] <= entry["T"]
            assert row["topk_speedup"] == entry["T"] / row["topk_mean_exit"]
    n = summary["train_images"]  # 80 less 15 % held out, less 5 % of the rest to validate
    assert 55 <= n <= 68
    table = (out / "summary.md").read_text()
    assert f"CIFAR-10 (JPEG q75), {n} training images" in table and "| resnet20 | 3 |" in table
