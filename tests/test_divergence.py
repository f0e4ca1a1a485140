"""A run whose training diverges ends as one line and exit status 2; the runs finished before
it keep their results and report."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from spikecut.cli import main
from spikecut.report import render_markdown, summary_table, validate_results
from spikecut.train import TrainConfig, TrainingDiverged, train_ann

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_training_diverged_names_run_epoch_lr_and_the_fix():
    err = TrainingDiverged(3, 0.25, float("nan"), 0.002)
    assert isinstance(err, FloatingPointError)
    assert str(err) == (
        "training diverged at epoch 3: loss is nan (lr 0.25); lower train.lr or the run's "
        "alpha (0.002)"
    )
    named = err.in_run("rcs")
    assert (named.run, named.epoch, named.lr, named.alpha) == ("rcs", 3, 0.25, 0.002)
    assert str(named).startswith("run 'rcs' diverged at epoch 3")
    assert "alpha" not in str(TrainingDiverged(1, 0.1, float("inf")))  # α = 0: only the lr
    copy = pickle.loads(pickle.dumps(named))
    assert (copy.run, copy.epoch, copy.lr, str(copy)) == ("rcs", 3, 0.25, str(named))


def test_train_ann_raises_training_diverged_with_epoch_and_lr():
    torch.manual_seed(0)
    from spikecut.data import TensorImageDataset
    from spikecut.models import create

    data = TensorImageDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)), 10)
    model = create("digits-cnn", num_classes=10, in_channels=1, threshold=2.0)
    config = TrainConfig(epochs=2, batch_size=32, lr=1.0)
    with pytest.raises(TrainingDiverged) as caught:
        train_ann(model, data, config, alpha=1e38, progress=False)  # α·L_RCS overflows: inf
    err = caught.value
    assert (err.epoch, err.lr, err.alpha, err.run) == (1, 1.0, 1e38, None)


def test_cli_divergence_is_one_line_status_2_and_keeps_the_finished_run(tmp_path, capsys):
    out = tmp_path / "diverge"
    status = main(
        [
            "run",
            str(CONFIGS / "digits-qcfs.yaml"),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "train.epochs=1",
            "--set",
            "T=4",
            "--set",
            "cutoff.epsilons=[0.0]",
            "--set",
            # the second run's α·L_RCS overflows float32 at its first step
            "runs=[{name: calm, alpha: 0.0}, {name: boom, alpha: 1.0e+38}, {name: later}]",
        ]
    )
    captured = capsys.readouterr()
    assert status == 2
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in captured.err
    assert err.startswith("spikecut: error: run 'boom' diverged at epoch 1: loss is inf")
    assert "lower train.lr or the run's alpha (1e+38)" in err
    assert str(out / "report.md") in err

    results = json.loads((out / "results.json").read_text())
    assert [run["name"] for run in results["runs"]] == ["calm"]
    (failed,) = results["failed"]
    assert (failed["name"], failed["epoch"], failed["alpha"]) == ("boom", 1, 1e38)
    assert results["not_run"] == ["later"]
    report = (out / "report.md").read_text()
    assert "## Failed runs" in report and "| boom | 1e+38 | diverged at epoch 1 |" in report
    assert "| later | — | not run |" in report and "**Incomplete:**" in report
    for name in ("accuracy_vs_timestep", "exit_histograms", "beta"):
        assert (out / f"{name}.png").stat().st_size > 0
    assert (out / "weights" / "calm.pt").is_file() and not (out / "weights" / "boom.pt").exists()


def test_cli_divergence_of_the_first_run_writes_nothing(tmp_path, capsys):
    out = tmp_path / "first"
    status = main(
        [
            "run",
            str(CONFIGS / "digits-qcfs.yaml"),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "train.epochs=1",
            "--set",
            "runs=[{name: boom, alpha: 1.0e+38}]",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err
    assert err.endswith("no run had finished, nothing was written")
    assert not (out / "results.json").exists() and not (out / "report.md").exists()


def _results_with_failure() -> dict:
    T = 2
    run = {
        "name": "calm",
        "alpha": 0.0,
        "ann_accuracy": 0.9,
        "snn_accuracy_per_t": [0.5, 0.8],
        "oct_mean": 1.5,
        "rules": [{"rule": "topk", "epsilon": 0.0, "accuracy": 0.8, "mean_exit": 1.2}],
    }
    failure = {"name": "boom", "alpha": 0.5, "seed": 0, "epoch": 2, "lr": 0.1, "error": "x"}
    return {"experiment": "e", "T": T, "runs": [run], "failed": [failure], "not_run": ["z"]}


def test_report_names_failed_and_not_run_runs():
    results = _results_with_failure()
    assert "| boom | 0.5 | diverged at epoch 2 | x |" in render_markdown(results)
    assert summary_table(results).endswith("Failed: x.\nNot run: z.")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("failed", {"name": "boom"}, "failed: expected a list of failed runs, found dict"),
        ("failed", [{"name": "b", "alpha": 0.0, "error": "x"}], "failed[0].epoch: missing"),
        ("failed", [{"name": "b", "alpha": 0.0, "error": "x", "epoch": 0}], "failed[0].epoch:"),
        ("not_run", [1], "not_run: expected a list of run names"),
    ],
)
def test_invalid_failure_records_are_rejected(key, value, message):
    results = _results_with_failure()
    results[key] = value
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_results(results)
