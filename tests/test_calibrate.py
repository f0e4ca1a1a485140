"""`spikecut calibrate` (guaranteed rules recalibrated without retraining), the stored rules
driving the anytime engine and the bench, and the accuracy/exit trade-off in the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from spikecut import cutoff
from spikecut.anytime import AnytimeClassifier
from spikecut.cli import main
from spikecut.config import load_config
from spikecut.experiment import run_experiment

DIGITS = Path(__file__).resolve().parents[1] / "configs" / "digits-qcfs.yaml"
T = 8


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished digits run with a 30 % held-out split (431 samples) and three ε sweeps."""
    out = tmp_path_factory.mktemp("calibrate") / "run"
    cfg = load_config(
        DIGITS,
        [
            "train.epochs=2",
            "runs=[{name: a, alpha: 0.0}]",
            "cutoff.epsilons=[0.0, 0.02, 0.05]",
            "cutoff.calibration.fraction=0.3",
        ],
    )
    return run_experiment(cfg, out, progress=False), out


def _copy(finished, tmp_path) -> Path:
    """A private copy of the finished run's folder, for tests that change it."""
    _, out = finished
    return Path(shutil.copytree(out, tmp_path / "run"))


def test_a_run_records_the_risk_sweep_and_draws_the_tradeoff(finished):
    results, out = finished
    run = results["runs"][0]
    sweep = run["guaranteed_sweep"]
    assert [(r["rule"], r["risk"]) for r in sweep] == [
        (rule, risk)
        for rule in ("topk-risk", "softmax-risk", "entropy-risk")
        for risk in (0.005, 0.01, 0.02, 0.05)
    ]
    for r in sweep:
        assert 1.0 <= r["mean_exit"] <= T and 0.0 <= r["accuracy"] <= 1.0
        assert r["n"] == 431 and r["delta"] == 0.1 and 0.0 <= r["loss"] <= 1.0
    for rule in ("topk-risk", "softmax-risk", "entropy-risk"):
        exits = [r["mean_exit"] for r in sweep if r["rule"] == rule]
        assert all(b <= a for a, b in zip(exits, exits[1:], strict=False)), (rule, exits)
    # the loosest risk lets samples out early; the guarantee's price is visible
    assert min(r["mean_exit"] for r in sweep) < T
    # the sweep at the run's own risk is the run's guaranteed row
    at_run_risk = {r["rule"]: r for r in sweep if r["risk"] == 0.01}
    for row in run["guaranteed"]:
        if row["rule"] in at_run_risk:
            assert row["mean_exit"] == at_run_risk[row["rule"]]["mean_exit"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"][0]["guaranteed_sweep"] == sweep
    png = out / "tradeoff-a.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "## Accuracy against mean exit step" in report and "![a](tradeoff-a.png)" in report
    assert "| topk-risk | 0.05 |" in report


def test_calibrate_recomputes_missing_outputs_then_reuses_the_cache(
    finished, tmp_path, monkeypatch, capsys
):
    out = _copy(finished, tmp_path)
    before = json.loads((out / "results.json").read_text())
    (out / "outputs" / "a.pt").unlink()  # as if the run predates the cache
    argv = ["calibrate", str(out), "--rule", "topk-risk", "--rule", "spikecp"]
    argv += ["--risk", "0.05", "--alpha", "0.2", "--sweep-risks", "0.02", "0.1", "--quiet"]
    assert main(argv) == 0
    assert "a: topk-risk     risk 0.05" in capsys.readouterr().out
    cached = torch.load(out / "outputs" / "a.pt", weights_only=True)
    Y, labels = cached["test"]
    assert Y.shape == (T, 360, 10) and cached["heldout"][0].shape == (T, 431, 10)
    results = json.loads((out / "results.json").read_text())
    run = results["runs"][0]
    rows = {r["rule"]: r for r in run["guaranteed"]}
    assert list(rows) == ["topk-risk", "spikecp"]
    assert (rows["topk-risk"]["risk"], rows["topk-risk"]["n"]) == (0.05, 431)
    assert rows["spikecp"]["alpha"] == 0.2
    # what was stored is what calibrating on the cached held-out outputs gives
    fresh = cutoff.RiskControlledCutoff("topk", risk=0.05, delta=0.1)
    fresh.calibrate(*cached["heldout"])
    assert rows["topk-risk"]["threshold"] == fresh.to_dict()["threshold"]
    expected = fresh.exit_steps(Y).double().mean().item()
    assert rows["topk-risk"]["mean_exit"] == pytest.approx(expected)
    assert [(r["rule"], r["risk"]) for r in run["guaranteed_sweep"]] == [
        ("topk-risk", 0.02),
        ("topk-risk", 0.1),
    ]
    guarantee = results["config"]["cutoff"]["guarantee"]
    assert (guarantee["risk"], guarantee["alpha"], guarantee["rules"]) == (
        0.05,
        0.2,
        ["topk-risk", "spikecp"],
    )
    # everything else about the run is as it was
    assert run["rules"] == before["runs"][0]["rules"] and run["beta"] == before["runs"][0]["beta"]
    resume_entry = json.loads((out / "runs" / "a.json").read_text())["entry"]
    assert resume_entry["guaranteed"] == run["guaranteed"]
    assert "| topk-risk | risk 0.05, δ 0.1 | 431 |" in (out / "report.md").read_text()
    assert not list(out.glob(".*.tmp"))

    def no_network(*args, **kwargs):
        raise AssertionError("the cached outputs should have been used")

    monkeypatch.setattr("spikecut.experiment.load_run_snn", no_network)
    assert main(["calibrate", str(out), "--run", "a", "--risk", "0.02", "--quiet"]) == 0
    again = json.loads((out / "results.json").read_text())["runs"][0]["guaranteed"]
    assert [(r["rule"], r["epsilon"]) for r in again] == [("topk-risk", 0.02), ("spikecp", 0.0)]
    assert again[1]["alpha"] == 0.2  # the settings not given stay as the last calibration


def test_calibrate_errors_are_one_line_with_exit_status_2(finished, tmp_path, capsys):
    results, out = finished
    without = tmp_path / "train-only"
    without.mkdir()
    saved = dict(results, calibration_split={"source": "train", "size": 0})
    (without / "results.json").write_text(json.dumps(saved))
    assert main(["calibrate", str(without)]) == 2
    err = capsys.readouterr().err
    assert "has no held-out calibration split" in err
    assert "re-run it with `cutoff.calibration.source: heldout`" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["calibrate", str(out), "--run", "b"]) == 2
    assert "no run named 'b'" in capsys.readouterr().err
    assert main(["calibrate", str(out), "--risk", "1.5"]) == 2
    assert "'cutoff.guarantee.risk' must be in (0, 1), got 1.5" in capsys.readouterr().err


def test_a_stored_rule_drives_the_engine_and_the_bench_to_the_offline_exits(finished, monkeypatch):
    from spikecut.bench.anytime import rule_for_run, run_anytime_bench
    from spikecut.data import get_dataset
    from spikecut.experiment import load_run_snn

    _, out = finished
    snn, run, cfg = load_run_snn(out, "a")

    def no_calibration(*args, **kwargs):
        raise AssertionError("a stored guaranteed rule must not be calibrated again")

    monkeypatch.setattr("spikecut.evaluate.calibration_cum_logits", no_calibration)
    stored = {r["rule"]: r for r in run["guaranteed"]}
    Y, labels = torch.load(out / "outputs" / "a.pt", weights_only=True)["test"]
    test = get_dataset("digits", split="test", augment=False)
    x = torch.stack([test[i][0] for i in range(len(test))])
    for name in ("topk-risk", "spikecp"):
        rule = rule_for_run(snn, run, cfg, name)
        offline = rule.exit_steps(Y)
        assert offline.double().mean().item() == pytest.approx(stored[name]["mean_exit"])
        result = AnytimeClassifier(snn, rule, T, count_ops=False).run(x)
        assert torch.equal(result.exit_steps, offline), name
        assert torch.equal(result.predictions, cutoff.exit_predictions(Y, offline))
    assert (rule_for_run(snn, run, cfg, "softmax-risk").exit_steps(Y) < T).any()

    row, single = run_anytime_bench(
        [out], rule="topk-risk", repeats=1, single_samples=10, log=lambda _: None
    )  # the batch of batch_size_eval, then one sample at a time
    assert row["rule"] == "topk-risk" and row["agreement"] == 1.0
    assert single["batch_size"] == 1 and single["agreement"] == 1.0
    assert row["mean_exit"] == pytest.approx(stored["topk-risk"]["mean_exit"], abs=0.02)

    bare = dict(run, guaranteed=[])
    with pytest.raises(ValueError, match="has no stored guaranteed rule 'spikecp'"):
        rule_for_run(snn, bare, cfg, "spikecp")
