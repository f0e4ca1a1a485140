"""The guarantee checked on a real network's outputs (the embedded digits data).

A small QCFS network is trained for 20 epochs on half of the digits training data, until it
fits that half (accuracy at T 100 %); the other half is held out (never trained on). Its SNN
outputs on the held-out half and the test split are pooled (1078 samples), and
:func:`spikecut.cutoff.check_guarantee` recalibrates each rule on i.i.d. draws of 539 samples
from the pool and measures its exact risk on the pool. Learn-then-Test must miss ``risk`` in
at most a fraction δ of the draws. Two invalid calibrators must be caught by the same check
on the same outputs: one without LTT's finite-sample correction (the loosest threshold whose
calibration loss is <= risk), and the paper's Top-K rule at ε = risk fitted on the training
split without dropout, where the network is over-confident.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from spikecut import cutoff as co
from spikecut.config import load_config
from spikecut.convert import to_snn
from spikecut.evaluate import collect_cum_logits
from spikecut.experiment import _datasets, build_model
from spikecut.train import seed_everything, train_ann

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RISK, DELTA = 0.01, 0.1


@pytest.fixture(scope="module")
def digits_outputs():
    cfg = load_config(
        CONFIGS / "digits-qcfs.yaml", ["train.epochs=20", "cutoff.calibration.fraction=0.5"]
    )
    train, plain, _, test, heldout = _datasets(cfg, progress=False)
    seed_everything(0)
    model = build_model(cfg, train.num_classes)
    train_ann(model, train, cfg.train, seed=0, progress=False)
    snn = to_snn(model)
    h = collect_cum_logits(snn, heldout, cfg.T, progress=False, batch_size=500)
    t = collect_cum_logits(snn, test, cfg.T, progress=False, batch_size=500)
    pooled = torch.cat([h[0], t[0]], dim=1), torch.cat([h[1], t[1]])
    return pooled + collect_cum_logits(snn, plain, cfg.T, progress=False, batch_size=500)


def _uncorrected(score: str):
    """Deliberately invalid: the loosest λ whose *calibration* loss is <= risk (what the
    paper's ε-style calibration does), without LTT's correction for the finite sample."""

    def make(cal_logits, cal_labels):
        rule = co.RiskControlledCutoff(score=score, risk=RISK, delta=DELTA)
        grid, counts = rule.calibration_curve(cal_logits, cal_labels)
        within = (counts.double() / cal_logits.shape[1] <= RISK).nonzero().flatten()
        rule.threshold, rule.certified = float(grid[within.max()]), True
        return rule

    return make


def test_real_outputs_are_a_fair_test_bed(digits_outputs):
    Y, labels = digits_outputs[:2]
    acc = co.accuracy_per_step(Y, labels)
    assert Y.shape[:2] == (8, 1078) and acc[-1] >= 0.9
    # Exits can lose answers here: some samples are right at T but wrong earlier.
    assert co.oct_steps(Y, labels).double().mean() > 1.1


@pytest.mark.parametrize("score", ["topk", "softmax"])
def test_ltt_keeps_its_promise_on_real_outputs(digits_outputs, score):
    Y, labels = digits_outputs[:2]

    def ltt(cal_logits, cal_labels):
        rule = co.RiskControlledCutoff(score=score, risk=RISK, delta=DELTA)
        return rule.calibrate(cal_logits, cal_labels)

    check = co.check_guarantee(Y, labels, ltt, risk=RISK, delta=DELTA, repeats=100)
    assert check["certified_rate"] == 1.0  # 539 samples suffice for risk 1 %, δ 0.1
    assert not check["significantly_above_delta"]
    assert check["violation_interval"][0] <= DELTA
    assert check["mean_loss"] <= RISK and check["mean_exit"] < 4.0  # and it does exit early
    # The uncorrected calibrator, checked the same way on the same outputs, is caught.
    naive = co.check_guarantee(Y, labels, _uncorrected(score), risk=RISK, delta=DELTA, repeats=100)
    assert naive["significantly_above_delta"] and naive["violation_rate"] > 0.25
    assert naive["mean_exit"] < check["mean_exit"]  # it buys its earlier exits with the risk


def test_training_split_calibration_is_caught(digits_outputs):
    """The issue's invalid calibrator: thresholds fitted once on the training split, without
    dropout. The network fits that split, so its early steps look surer there than on new
    data and the thresholds let errors through; LTT on the pool keeps the promise."""
    Y, labels, Y_train, labels_train = digits_outputs
    assert co.accuracy_per_step(Y_train, labels_train)[-1] > co.accuracy_per_step(Y, labels)[-1]
    fitted = co.TopKCutoff(epsilon=RISK).calibrate(Y_train, labels_train)
    caught = co.check_guarantee(Y, labels, lambda y, lab: fitted, risk=RISK, delta=DELTA)
    assert caught["significantly_above_delta"] and caught["mean_loss"] > RISK

    def ltt(cal_logits, cal_labels):
        return co.RiskControlledCutoff("topk", RISK, DELTA).calibrate(cal_logits, cal_labels)

    kept = co.check_guarantee(Y, labels, ltt, risk=RISK, delta=DELTA, repeats=100)
    assert not kept["significantly_above_delta"] and kept["mean_loss"] <= RISK


def test_split_mode_counts_test_noise_as_violations(digits_outputs):
    """Without replacement, losses measured on the other half: the uncorrected calibrator
    is caught here too, and LTT's rate is at least the resampled one's (test noise)."""
    Y, labels = digits_outputs[:2]

    def ltt(cal_logits, cal_labels):
        return co.RiskControlledCutoff("topk", RISK, DELTA).calibrate(cal_logits, cal_labels)

    naive = co.check_guarantee(
        Y, labels, _uncorrected("topk"), risk=RISK, delta=DELTA, repeats=60, mode="split"
    )
    assert naive["mode"] == "split" and naive["n_test"] == 1078 - 539
    assert naive["significantly_above_delta"]
    split = co.check_guarantee(Y, labels, ltt, risk=RISK, delta=DELTA, repeats=60, mode="split")
    assert split["violation_rate"] < naive["violation_rate"]
