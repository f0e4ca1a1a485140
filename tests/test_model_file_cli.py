"""`spikecut evaluate --model FILE.nir` and `spikecut calibrate --model FILE.nir` write the
results.json and report of a run, without training fields."""

import json
from pathlib import Path

import nir
import pytest
import torch
from torch import nn

from spikecut import nir as scnir
from spikecut.cli import main
from spikecut.convert import to_trainable_snn

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits-qcfs.yaml"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    ann = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 10)
    )
    snn = to_trainable_snn(ann).eval()
    path = tmp_path_factory.mktemp("model") / "digits-lif.nir"
    nir.write(path, scnir.export(snn, torch.zeros(1, 1, 1, 8, 8)))
    return path


@pytest.mark.parametrize("command", ["evaluate", "calibrate"])
def test_model_file_is_evaluated_like_a_run(model_file, tmp_path, command, capsys):
    out = tmp_path / command
    status = main(
        [
            command,
            "--model",
            str(model_file),
            "--config",
            str(CONFIG),
            "--out",
            str(out),
            "--set",
            "T=4",
            "--quiet",
        ]
    )
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    assert results["T"] == 4 and results["method"] == "imported"
    (run,) = results["runs"]
    assert run["name"] == "digits-lif" and run["ann_accuracy"] is None and "train" not in run
    assert len(run["snn_accuracy_per_t"]) == 4
    assert {r["rule"] for r in run["rules"]} >= {"topk", "fixed"}
    assert run["firing_rates"] and run["ann_macs"] > 0
    assert (out / "report.md").is_file()
    assert "digits-lif" in capsys.readouterr().out


def test_calibrate_needs_a_folder_or_a_model(capsys):
    assert main(["calibrate"]) == 2
    assert "--model FILE.nir" in capsys.readouterr().err


def test_missing_model_file_is_one_line(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "nope.nir"), "--config", str(CONFIG)]) == 2
    assert "model file not found" in capsys.readouterr().err
