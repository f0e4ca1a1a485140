"""Tests for spikecut.risk: LTT p-values, risk-controlled exits, SpikeCP, the check.

Expected values are worked out by hand in the comments next to each case.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from spikecut import cutoff as co
from spikecut import risk


def random_logits(T: int = 6, N: int = 600, K: int = 5, seed: int = 0):
    """Accumulated logits that drift towards the label, with plenty of flips early on."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (N,), generator=g)
    per_step = torch.randn(T, N, K, generator=g) * 1.5
    per_step[:, torch.arange(N), labels] += 2.0
    return per_step.cumsum(dim=0), labels


# ------------------------------------------------------------------------------ p-values


def test_binomial_cdf_matches_hand_computed_values():
    # P(Binom(10, 1/2) <= 2) = (1 + 10 + 45) / 1024; P(Binom(229, 0.01) = 0) = 0.99^229.
    assert float(risk.binomial_cdf(2, 10, 0.5)) == pytest.approx(56 / 1024, rel=1e-12)
    assert float(risk.binomial_cdf(0, 229, 0.01)) == pytest.approx(0.99**229, rel=1e-10)
    # P(Binom(4, 0.3) <= 1) = 0.7^4 + 4·0.3·0.7^3
    assert float(risk.binomial_cdf(1, 4, 0.3)) == pytest.approx(0.7**4 + 4 * 0.3 * 0.7**3)
    assert risk.binomial_cdf([-1, 10, 12], 10, 0.5).tolist() == [0.0, 1.0, 1.0]


def test_ltt_pvalues_binomial_tail_and_hoeffding_bentkus():
    # 3 losses in 600 at risk 0.01: p = P(Binom(600, 0.01) <= 3) (mean 6, so small).
    p = risk.ltt_pvalues([0, 3, 6, 12], 600, 0.01)
    assert p.tolist() == pytest.approx(risk.binomial_cdf([0, 3, 6, 12], 600, 0.01).tolist())
    assert p[0] == pytest.approx(0.99**600) and p[1] < 0.16 < p[2]
    assert (p.diff() > 0).all()  # more losses, weaker evidence
    hb = risk.ltt_pvalues([0, 3, 6, 12], 600, 0.01, "hoeffding-bentkus")
    # Hoeffding–Bentkus is valid for any bounded loss, so never smaller than the exact tail;
    # at R̂ = 0: min(exp(-n·log(1/(1 - r))), e·(1 - r)^n) = (1 - r)^n.
    assert (hb >= p - 1e-15).all() and float(hb[0]) == pytest.approx(0.99**600)
    with pytest.raises(ValueError, match=r"risk: expected a value in \(0, 1\), got 1.5"):
        risk.ltt_pvalues([0], 10, 1.5)


def test_clopper_pearson_against_beta_quantiles():
    # Beta(5, 46).ppf(0.025) and Beta(6, 45).ppf(0.975), the exact 95 % interval of 5/50.
    lower, upper = risk.clopper_pearson(5, 50)
    assert lower == pytest.approx(0.0332750936, abs=1e-9)
    assert upper == pytest.approx(0.2181353664, abs=1e-9)
    # k = 0: the upper end solves (1 - p)^20 = 0.025.
    assert risk.clopper_pearson(0, 20) == pytest.approx((0.0, 1 - 0.025 ** (1 / 20)))


# ---------------------------------------------------------------- risk-controlled cutoff


def _bad_and_good(n_good: int, n_bad: int = 3, T: int = 4):
    """Two classes, label 0. Good samples: gap 10·t. Bad samples: wrong at t = 1 with gap 5
    (score 5), then right with gap 0.5·(t + 1) <= 2.5 < 5, so they are correct at T and
    lose their answer iff they exit at t = 1."""
    good = torch.tensor([10.0, 0.0]).expand(T, n_good, 2) * torch.arange(1, T + 1).view(T, 1, 1)
    bad = torch.zeros(T, n_bad, 2)
    bad[0, :, 1] = 5.0
    for t in range(1, T):
        bad[t, :, 0] = 5.0 + 0.5 * (t + 1)  # gap 0.5·(t+1) above the stuck 5
        bad[t, :, 1] = 5.0
    labels = torch.zeros(n_good + n_bad, dtype=torch.long)
    return torch.cat([good, bad], dim=1), labels


def test_ltt_keeps_the_bad_samples_running_when_the_risk_is_tight():
    Y, labels = _bad_and_good(597)  # n = 600
    # risk 0.005: exiting everyone at t = 1 loses 3/600 = R̂ 0.005, p = P(Binom(600, .005)
    # <= 3) ≈ 0.65 > δ. Any λ >= 5 loses nothing (p = 0.995^600 ≈ 0.049 <= δ), so LTT keeps
    # the smallest grid value >= 5: good samples exit at 1, bad ones at T.
    rule = co.RiskControlledCutoff(score="topk", risk=0.005, delta=0.1).calibrate(Y, labels)
    assert rule.certified and 5.0 <= rule.threshold < 5.0 * 1.02
    assert rule.empirical_risk == 0.0 and rule.p_value == pytest.approx(0.995**600)
    steps = rule.exit_steps(Y)
    assert steps[:597].eq(1).all() and steps[597:].eq(4).all()
    # risk 0.05: losing 3/600 is certified (p ≈ 3e-9), so the loosest λ = 0 is kept.
    loose = co.RiskControlledCutoff(score="topk", risk=0.05, delta=0.1).calibrate(Y, labels)
    assert loose.threshold == 0.0 and loose.empirical_risk == pytest.approx(3 / 600)
    assert loose.exit_steps(Y).eq(1).all()


def test_nothing_certified_exits_at_T_and_says_so():
    # n = 100 < log(0.1)/log(0.99) ≈ 229: even "never exit early" (loss 0) has p = 0.99^100.
    Y, labels = random_logits(N=100)
    rule = co.RiskControlledCutoff(score="softmax", risk=0.01, delta=0.1).calibrate(Y, labels)
    assert rule.certified is False
    assert rule.exit_steps(Y).eq(Y.shape[0]).all()
    assert not rule.fires(Y[0], 1, Y.shape[0]).any() and rule.fires(Y[-1], 6, 6).all()
    d = rule.to_dict()
    assert d["certified"] is False and d["threshold"] is None and d["n"] == 100
    assert d["p_value"] == pytest.approx(0.99**100)
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize("score", risk.RISK_SCORES)
def test_fixed_sequence_stops_at_the_first_failure_and_is_monotone(score):
    Y, labels = random_logits(N=1500)
    rule = co.RiskControlledCutoff(score=score, risk=0.03, delta=0.1).calibrate(Y, labels)
    grid, counts = rule.calibration_curve(Y, labels)
    p = risk.ltt_pvalues(counts, 1500, 0.03)
    kept = int((grid == rule.threshold).nonzero()[0])
    assert rule.certified and kept > 0
    assert (p[: kept + 1] <= 0.1).all()  # every stricter λ was rejected too
    assert kept == grid.numel() - 1 or p[kept + 1] > 0.1  # stopped at the first failure
    assert rule.empirical_risk == counts[kept] / 1500 <= 0.03
    # A looser risk keeps a looser (or equal) λ; looser λ exits every sample no later.
    looser = co.RiskControlledCutoff(score=score, risk=0.08, delta=0.1).calibrate(Y, labels)
    assert looser.threshold <= rule.threshold
    assert (looser.exit_steps(Y) <= rule.exit_steps(Y)).all()
    assert looser.exit_steps(Y).double().mean() < rule.exit_steps(Y).double().mean()


@pytest.mark.parametrize("T", [1, 2, 6])
@pytest.mark.parametrize("score", risk.RISK_SCORES)
def test_calibration_curve_counts_the_losses_of_every_threshold(score, T):
    # The curve (computed by interval differences) equals applying each λ directly.
    Y, labels = random_logits(T=T, N=300)
    rule = co.RiskControlledCutoff(score=score, risk=0.05)
    grid, counts = rule.calibration_curve(Y, labels)
    for j in list(range(0, grid.numel(), 97)) + [grid.numel() - 1]:
        rule.threshold = float(grid[j])
        steps = rule.exit_steps(Y)
        assert int(counts[j]) == int(risk.exit_loss(Y, labels, steps).sum()), (j, grid[j])
    assert counts[0] == 0  # λ = +inf: nobody exits early


@pytest.mark.parametrize(("score", "power"), [(s, 0.0) for s in risk.RISK_SCORES] + [("topk", 1)])
def test_online_decisions_equal_the_offline_matrix(score, power):
    Y, labels = random_logits(N=600)
    rule = co.RiskControlledCutoff(score=score, risk=0.05, step_power=power)
    rule.calibrate(Y, labels)
    assert rule.to_dict()["step_power"] == power
    T = Y.shape[0]
    matrix = rule.fire_matrix(Y)
    for t in range(1, T + 1):
        assert torch.equal(rule.fires(Y[t - 1], t, T), matrix[t - 1])
    assert 1.0 < rule.exit_steps(Y).double().mean() < T


def test_scores_are_monotone_transforms_of_the_paper_scores():
    Y, _ = random_logits(N=200)
    T = Y.shape[0]
    t = torch.arange(1, T + 1).view(T, 1).double()
    assert torch.allclose(risk.risk_score(Y, "topk"), co.topk_gap(Y).double())
    assert torch.allclose(risk.risk_score(Y, "topk", step_power=1.0), co.topk_gap(Y).double() / t)
    p_max = Y.double().softmax(-1).amax(-1)
    assert torch.allclose(risk.risk_score(Y, "softmax"), -torch.log1p(-p_max))
    h = torch.special.entr(Y.double().softmax(-1)).sum(-1)
    assert torch.allclose(risk.risk_score(Y, "entropy"), 1 / h)


def test_errors_name_what_was_expected():
    with pytest.raises(ValueError, match=r"risk: expected a value in \(0, 1\), got 0.0"):
        co.RiskControlledCutoff(risk=0.0)
    with pytest.raises(ValueError, match=r"delta: expected a value in \(0, 1\), got 1.0"):
        co.RiskControlledCutoff(delta=1.0)
    with pytest.raises(ValueError, match="score: expected one of topk, softmax, entropy"):
        co.RiskControlledCutoff(score="margin")
    with pytest.raises(ValueError, match="step_power: expected a finite value >= 0, got -1"):
        co.RiskControlledCutoff(step_power=-1)
    with pytest.raises(RuntimeError, match="call calibrate"):
        co.RiskControlledCutoff().exit_steps(random_logits(N=5)[0])


# ------------------------------------------------------------------------------- SpikeCP


def _probs_logits(rows: list[list[float]]) -> torch.Tensor:
    """[N, K] probabilities -> logits whose softmax is exactly those probabilities."""
    return torch.tensor(rows, dtype=torch.float64).log()


def test_spikecp_quantile_sets_and_exits_by_hand():
    # Calibration: T = 2, one checkpoint (t = 1), n = 9 samples of label 0 with
    # p_true = 0.95, 0.85, ..., 0.15, so NC = -log p_true.
    p_true = [0.95 - 0.1 * i for i in range(9)]
    cal_t1 = _probs_logits([[p, (1 - p) / 2, (1 - p) / 2] for p in p_true])
    cal = torch.stack([cal_t1, cal_t1]).float()
    labels = torch.zeros(9, dtype=torch.long)
    # α = 0.2, S = 1: rank ⌈0.8 · 10⌉ = 8 -> the 8th smallest NC = -log 0.25.
    rule = co.SpikeCP(alpha=0.2, checkpoints=[1]).calibrate(cal, labels)
    assert float(rule.q[0]) == pytest.approx(-math.log(0.25), rel=1e-6)
    assert math.isinf(rule.q[1])  # t = 2 is not a checkpoint
    # Test: A = [.85, .1, .05] -> NC .16, 2.30, 3.00 -> Γ = {0}; B = [.5, .3, .2] -> NC .69,
    # 1.20, 1.61 -> Γ = {0, 1} (1.61 > 1.386).
    test_t1 = _probs_logits([[0.85, 0.1, 0.05], [0.5, 0.3, 0.2]]).float()
    test = torch.stack([test_t1, test_t1])
    assert rule.sets(test[:1], torch.tensor([1]))[0].tolist() == [
        [True, False, False],
        [True, True, False],
    ]
    assert rule.exit_steps(test).tolist() == [1, 2]  # B waits for the forced exit at T
    assert rule.exit_sets(test).sum(-1).tolist() == [1, 3]  # every label at a forced exit
    wider = co.SpikeCP(alpha=0.2, max_set_size=2, checkpoints=[1]).calibrate(cal, labels)
    assert wider.exit_steps(test).tolist() == [1, 1]
    # α = 0.05, S = 1: rank ⌈0.95 · 10⌉ = 10 > n = 9 -> q = inf, every set is full: exit at T.
    strict = co.SpikeCP(alpha=0.05, checkpoints=[1]).calibrate(cal, labels)
    assert math.isinf(strict.q[0]) and strict.exit_steps(test).tolist() == [2, 2]
    # Two checkpoints split α: α = 0.2, S = 2 -> rank ⌈0.9 · 10⌉ = 9 -> the largest NC.
    both = co.SpikeCP(alpha=0.2).calibrate(cal, labels)
    assert float(both.q[0]) == pytest.approx(-math.log(0.15), rel=1e-6)
    json.dumps(both.to_dict(), allow_nan=False)


def test_spikecp_covers_on_exchangeable_data_and_reports_sets():
    Y, labels = random_logits(N=2000, K=5)
    rule = co.SpikeCP(alpha=0.1, max_set_size=2).calibrate(Y[:, :1000], labels[:1000])
    row = co.evaluate_guaranteed(rule, Y[:, 1000:], labels[1000:])
    assert row["coverage"] >= 0.9 - 0.03  # 1 - α, up to sampling noise of 1000 samples
    assert 1.0 <= row["mean_set_size"] <= 5.0 and row["mean_exit"] < Y.shape[0]
    T = Y.shape[0]
    matrix = rule.fire_matrix(Y)
    for t in range(1, T + 1):
        assert torch.equal(rule.fires(Y[t - 1], t, T), matrix[t - 1])


# ------------------------------------------------------------------------------- check


def test_check_guarantee_counts_violations_on_synthetic_outputs():
    Y, labels = random_logits(N=2000, seed=3)

    def valid(y, lab):
        return co.RiskControlledCutoff(score="softmax", risk=0.05, delta=0.1).calibrate(y, lab)

    def reckless(y, lab):  # exits everyone at t = 1, whatever the split says
        return co.FixedTimestep(1).calibrate(y, lab)

    ok = co.check_guarantee(Y, labels, valid, risk=0.05, delta=0.1, repeats=30)
    assert ok["repeats"] == 30 and ok["n_calibration"] == 1000
    assert not ok["significantly_above_delta"] and ok["violation_interval"][0] <= 0.1
    assert ok["mean_exit"] < Y.shape[0] and ok["certified_rate"] == 1.0
    bad = co.check_guarantee(Y, labels, reckless, risk=0.05, delta=0.1, repeats=30)
    assert bad["violation_rate"] == 1.0 and bad["significantly_above_delta"]
    assert bad["mean_exit"] == 1.0


def test_hoeffding_bentkus_is_never_looser_than_the_binomial_tail():
    Y, labels = random_logits(N=1500, seed=5)
    exact = co.RiskControlledCutoff("softmax", 0.03, 0.1).calibrate(Y, labels)
    hb = co.RiskControlledCutoff("softmax", 0.03, 0.1, pvalue="hoeffding-bentkus")
    hb.calibrate(Y, labels)
    assert hb.certified and hb.threshold >= exact.threshold
    assert (hb.exit_steps(Y) >= exact.exit_steps(Y)).all()
    assert hb.to_dict()["pvalue"] == "hoeffding-bentkus"


# ------------------------------------------------------------------------------ rebuild


def _rebuildable_rules():
    return [
        risk.RiskControlledCutoff("topk", risk=0.05, delta=0.1),
        risk.RiskControlledCutoff("softmax", risk=0.05, delta=0.1, pvalue="hoeffding-bentkus"),
        risk.RiskControlledCutoff("entropy", risk=0.05, delta=0.1, step_power=0.5),
        risk.RiskControlledCutoff("topk", risk=0.01, delta=0.1),  # n = 60: not certified
        risk.SpikeCP(alpha=0.2, max_set_size=2),
        risk.SpikeCP(alpha=0.3, checkpoints=[2, 4, 6]),
        co.TopKCutoff(epsilon=0.02, bins=50),
        co.EntropyCutoff(epsilon=0.03),
        co.SoftmaxConfidence(epsilon=0.05),
        co.FixedTimestep(3),
    ]


@pytest.mark.parametrize("index", range(10))
def test_a_rule_rebuilt_from_its_json_record_exits_exactly_as_the_original(index):
    Y, labels = random_logits(N=800)
    rule = _rebuildable_rules()[index]
    n_cal = 60 if index == 3 else 500
    rule.calibrate(Y[:, :n_cal], labels[:n_cal])
    record = json.loads(json.dumps(rule.to_dict(), allow_nan=False))  # as results.json holds it
    rebuilt = risk.rule_from_dict(record)
    assert type(rebuilt) is type(rule) and rebuilt.to_dict() == rule.to_dict()
    test = Y[:, 500:]
    steps = rule.exit_steps(test)
    assert torch.equal(rebuilt.exit_steps(test), steps)
    if index != 3:  # the rules do exit early on these outputs, so equality means something
        assert steps.double().mean() < Y.shape[0]
    else:
        assert rule.certified is False and (rebuilt.exit_steps(test) == Y.shape[0]).all()
    # An evaluated row (to_dict plus the metrics) rebuilds the same rule.
    row = json.loads(json.dumps(co.evaluate_guaranteed(rule, test, labels[500:])))
    assert torch.equal(risk.rule_from_dict(row).exit_steps(test), steps)


def test_rule_records_that_cannot_be_rebuilt_say_why():
    with pytest.raises(ValueError, match="unknown rule 'magic'; known: topk, softmax"):
        risk.rule_from_dict({"rule": "magic"})
    with pytest.raises(ValueError, match="missing threshold, n"):
        risk.rule_from_dict({"rule": "topk-risk", "risk": 0.01, "delta": 0.1})
    uncalibrated = risk.RiskControlledCutoff("topk").to_dict()
    with pytest.raises(ValueError, match="n is null"):
        risk.rule_from_dict(uncalibrated)
    with pytest.raises(ValueError, match="expected a dict with a 'rule' name"):
        risk.rule_from_dict(["topk"])
