"""End to end on the real digits data: train, convert, calibrate, evaluate, report."""

import json
from pathlib import Path

import pytest

from spikecut.cli import main
from spikecut.config import load_config
from spikecut.experiment import run_experiment
from spikecut.report import load_results

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    cfg = load_config(CONFIGS / "digits-qcfs.yaml", ["train.epochs=8"])
    return run_experiment(cfg, out, progress=False), out


def test_digits_end_to_end_accuracy_floor_and_early_exit(digits_run):
    results, _ = digits_run
    assert results["T"] == 8 and len(results["runs"]) == 2
    for run in results["runs"]:
        snn_at_T = run["snn_accuracy_per_t"][-1]
        assert run["ann_accuracy"] >= 0.93
        assert snn_at_T >= 0.93
        assert abs(snn_at_T - run["ann_accuracy"]) <= 0.03
        topk = next(r for r in run["rules"] if r["rule"] == "topk" and r["epsilon"] == 0.0)
        assert topk["accuracy"] >= snn_at_T - 0.02
        assert 1.0 <= topk["mean_exit"] < 8.0  # really exits early on average
        assert sum(topk["exit_histogram"]) == 360
        assert 1.0 <= run["oct_mean"] <= topk["mean_exit"]
        assert len(run["beta"]) == 8
        fixed = next(r for r in run["rules"] if r["rule"] == "fixed")
        assert fixed["mean_exit"] == 8.0 and fixed["accuracy"] == pytest.approx(snn_at_T)
        assert {r["rule"] for r in run["rules"]} == {"fixed", "topk", "softmax", "entropy"}
        assert run["train"]["epochs"] == 8 and run["train"]["final_rcs"] > 0


def test_digits_run_writes_every_artefact(digits_run):
    results, out = digits_run
    for name in (
        "results.json",
        "report.md",
        "accuracy_vs_timestep.png",
        "exit_histograms.png",
        "beta.png",
    ):
        assert (out / name).stat().st_size > 100, name
    assert load_results(out / "results.json")["experiment"] == "digits-qcfs"
    assert json.loads((out / "results.json").read_text())["runs"][0]["name"] == "alpha=0"
    assert sorted(p.name for p in (out / "weights").iterdir()) == [
        "alpha_0.pt",
        "rcs_alpha_0.002.pt",
    ]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_cli_run_and_report(tmp_path, capsys):
    out = tmp_path / "cli"
    status = main(
        [
            "run",
            str(CONFIGS / "digits-qcfs.yaml"),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "train.epochs=2",
            "--set",
            "runs=[{name: only, alpha: 0.0}]",
            "--set",
            "cutoff.epsilons=[0.0, 0.05]",
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0
    assert "| only |" in printed and "results.json" in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["epsilon"] for r in results["runs"][0]["rules"] if r["rule"] == "topk"] == [0.0, 0.05]
    (out / "report.md").unlink()
    assert main(["report", str(out / "results.json")]) == 0
    assert (out / "report.md").read_text().startswith("#")


def test_seeds_repeat_every_run_and_differ(tmp_path):
    cfg = load_config(
        CONFIGS / "digits-qcfs.yaml",
        [
            "train.epochs=1",
            "seeds=[0, 1]",
            "runs=[{name: base, alpha: 0.0}]",
            "cutoff.epsilons=[0.0]",
        ],
    )
    results = run_experiment(cfg, tmp_path, progress=False)
    assert [r["name"] for r in results["runs"]] == ["base seed=0", "base seed=1"]
    assert [r["seed"] for r in results["runs"]] == [0, 1]
    assert {r["group"] for r in results["runs"]} == {"base"}
    assert results["runs"][0]["train"]["history"] != results["runs"][1]["train"]["history"]
    assert "## Mean ± std over seeds" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("method", ["conversion", "direct"])
def test_validation_split_selects_the_best_epoch_and_is_recorded(tmp_path, method):
    cfg = load_config(
        CONFIGS / "digits-qcfs.yaml",
        [
            "train.epochs=2",
            "train.validation_fraction=0.1",
            "train.select=best",
            f"method={method}",
            "T=4",
            "runs=[{name: a, alpha: 0.002}]",
            "cutoff.rules=[topk]",
        ],
    )
    results = run_experiment(cfg, tmp_path, progress=False)
    train = results["runs"][0]["train"]
    scores = [e["validation_accuracy"] for e in train["history"]]
    assert all(s is not None and 0.5 < s <= 1.0 for s in scores)
    assert train["selected_epoch"] == scores.index(max(scores)) + 1
    assert (tmp_path / "checkpoints" / "a.ckpt").is_file()
    assert (tmp_path / "runs" / "a.json").is_file()


def _small_digits(tmp_path, name, *overrides):
    cfg = load_config(
        CONFIGS / "digits-qcfs.yaml",
        ["train.epochs=1", "T=4", "runs=[{name: a, alpha: 0.0}]", "cutoff.rules=[topk]"]
        + list(overrides),
    )
    run = run_experiment(cfg, tmp_path / name, progress=False)["runs"][0]
    return [e["loss"] for e in run["train"]["history"]], run["snn_accuracy_per_t"], run["beta"]


def test_dataloader_workers_keep_runs_reproducible(tmp_path):
    """Worker processes load the batches (training, validation, evaluation); augmentation in
    workers is seeded per epoch, so a run repeats exactly, and without augmentation it equals
    the run that loads in the main process."""
    augmented = _small_digits(tmp_path, "w2a", "train.workers=2")
    assert _small_digits(tmp_path, "w2b", "train.workers=2") == augmented
    plain = _small_digits(tmp_path, "w0", "data.augment=false")
    assert _small_digits(tmp_path, "w2", "data.augment=false", "train.workers=2") == plain
