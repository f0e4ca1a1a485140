"""The held-out calibration split (cutoff.calibration) and the guaranteed rules in a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spikecut.cli import main
from spikecut.config import ConfigError, load_config
from spikecut.experiment import _datasets, run_experiment, run_fingerprint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DIGITS = CONFIGS / "digits-qcfs.yaml"


def _indices(subset) -> set[int]:
    """Indices into the underlying dataset, through nested subsets."""
    indices = list(map(int, subset.indices))
    while hasattr(subset.dataset, "indices"):
        subset = subset.dataset
        indices = [int(subset.indices[i]) for i in indices]
    return set(indices)


def test_heldout_split_is_stratified_disjoint_and_fixed_by_the_seed():
    cfg = load_config(DIGITS, ["train.validation_fraction=0.1"])
    train, plain, validation, _, heldout = _datasets(cfg, progress=False)
    # 1437 training images: 144 held out (10 %), then 10 % of the remaining 1293 validate.
    assert len(heldout) == 144 and len(train) == len(plain) == 1293 - 129
    assert len(validation) == 129
    held, kept, val = _indices(heldout), _indices(train), _indices(validation)
    assert not held & kept and not held & val  # never trained or selected on
    assert _indices(plain) == kept
    counts = np.bincount(heldout.labels.numpy(), minlength=10)
    assert counts.min() >= 13 and counts.max() <= 16  # every class, in proportion (~14.4)
    again = _datasets(cfg, progress=False)[4]
    other = _datasets(load_config(DIGITS, ["seed=1"]), progress=False)[4]
    assert _indices(again) == held and _indices(other) != held


def test_train_source_carves_nothing_and_keeps_the_fingerprint():
    cfg = load_config(DIGITS, ["cutoff.calibration.source=train"])
    train, plain, validation, _, heldout = _datasets(cfg, progress=False)
    assert heldout is None and validation is None and len(train) == len(plain) == 1437
    run = cfg.runs[0]
    # The held-out settings change what a run trains on only when the split is carved.
    other = load_config(
        DIGITS, ["cutoff.calibration.source=train", "cutoff.calibration.fraction=0.3"]
    )
    assert run_fingerprint(cfg, run, 0) == run_fingerprint(other, run, 0)
    heldout_cfg = load_config(DIGITS)
    assert run_fingerprint(heldout_cfg, run, 0) != run_fingerprint(cfg, run, 0)


def test_calibration_samples_caps_the_paper_pass_with_a_stratified_sample():
    cfg = load_config(DIGITS, ["cutoff.calibration_samples=300"])
    train, plain, _, _, heldout = _datasets(cfg, progress=False)
    assert len(plain) == 300 and len(train) == 1293  # training itself is untouched
    assert _indices(plain) <= _indices(train) and not _indices(plain) & _indices(heldout)
    counts = np.bincount(plain.labels.numpy(), minlength=10)
    assert counts.min() >= 28 and counts.max() <= 32  # every class, in proportion (~30)
    assert _indices(_datasets(cfg, progress=False)[1]) == _indices(plain)  # fixed by the seed
    everything = load_config(DIGITS, ["cutoff.calibration_samples=5000"])
    assert len(_datasets(everything, progress=False)[1]) == 1293  # a cap, not a demand


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cutoff.calibration_samples=0", "'cutoff.calibration_samples' must be >= 1 or null"),
        ("cutoff.calibration.source=val", "'cutoff.calibration.source' is 'val'; expected"),
        ("cutoff.calibration.fraction=1.0", r"'cutoff.calibration.fraction' must be in \(0, 1\)"),
        ("cutoff.guarantee.risk=0", r"'cutoff.guarantee.risk' must be in \(0, 1\), got 0.0"),
        ("cutoff.guarantee.rules=[topk]", r"'cutoff.guarantee.rules\[0\]' is 'topk'"),
    ],
)
def test_bad_calibration_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DIGITS, [override])


@pytest.fixture(scope="module")
def guaranteed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("guaranteed")
    cfg = load_config(
        DIGITS,
        [
            "train.epochs=2",
            "runs=[{name: a, alpha: 0.0}]",
            "cutoff.rules=[topk]",
            "cutoff.epsilons=[0.0]",
            "cutoff.calibration.fraction=0.3",  # 431 held out: enough for risk 1 %, δ 0.1
        ],
    )
    return run_experiment(cfg, out, progress=False), out


def test_a_run_reports_the_guaranteed_rules(guaranteed_run):
    results, tmp_path = guaranteed_run
    split = results["calibration_split"]
    assert split == {
        "source": "heldout",
        "size": 431,
        "fraction": 0.3,
        "seed": 0,
        "train_size": 1006,
        "paper_pass_size": 1006,  # the paper's Top-K pass ran every remaining training image
    }
    run = results["runs"][0]
    rows = {r["rule"]: r for r in run["guaranteed"]}
    assert list(rows) == ["topk-risk", "softmax-risk", "entropy-risk", "spikecp"]
    for name in ("topk-risk", "softmax-risk", "entropy-risk"):
        r = rows[name]
        assert (r["risk"], r["delta"], r["n"]) == (0.01, 0.1, 431)
        assert r["certified"] and r["empirical_risk"] <= 0.01 and r["p_value"] <= 0.1
        assert 1.0 <= r["mean_exit"] <= 8.0 and sum(r["exit_histogram"]) == 360
        assert "mean_sops" in r
    cp = rows["spikecp"]
    assert cp["n"] == 431 and 0.0 <= cp["coverage"] <= 1.0 and cp["mean_set_size"] >= 1.0
    # The paper's rule is still there, calibrated on the (remaining) training data.
    assert [r["rule"] for r in run["rules"]] == ["fixed", "topk"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["calibration_split"]["size"] == 431
    report = (tmp_path / "report.md").read_text()
    assert "## Guaranteed rules (held-out calibration)" in report
    assert "| topk-risk | risk 0.01, δ 0.1 | 431 |" in report


def test_cli_check_pools_the_cached_outputs_and_counts_violations(guaranteed_run, capsys):
    results, out = guaranteed_run
    cached = torch.load(out / "outputs" / "a.pt", weights_only=True)
    assert cached["heldout"][0].shape == (8, 431, 10) and cached["test"][1].shape == (360,)
    assert main(["check", str(out), "--repeats", "20", "--train-split"]) == 0
    printed = capsys.readouterr().out
    assert "791 pooled held-out + test samples, risk 0.01" in printed
    report = json.loads((out / "check-a.json").read_text())
    assert report["pool"] == 791
    ltt = report["checks"]["topk-risk"]
    assert ltt["repeats"] == 20 and ltt["n_calibration"] == 396 and ltt["mode"] == "resample"
    lo, hi = ltt["violation_interval"]
    assert lo <= ltt["violation_rate"] <= hi
    assert "topk (paper, as run: ε = 0, training split)" in report["checks"]
    fitted = report["checks"]["topk-risk (training split, no dropout)"]
    assert fitted["certified_rate"] == 1.0 and 0.0 <= fitted["violation_rate"] <= 1.0


def test_cli_check_refuses_a_run_without_a_heldout_split(guaranteed_run, tmp_path, capsys):
    results, _ = guaranteed_run
    saved = dict(results, calibration_split={"source": "train", "size": 0})
    (tmp_path / "results.json").write_text(json.dumps(saved))
    assert main(["check", str(tmp_path)]) == 2
    assert "has no held-out calibration split" in capsys.readouterr().err
