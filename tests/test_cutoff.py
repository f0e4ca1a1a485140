"""Tests for spikecut.cutoff: exit rules, calibration, OCT and metrics.

Expected values are worked out by hand in the comments next to each case.
"""

from __future__ import annotations

import json
import math
from array import array
from itertools import pairwise

import numpy as np
import pytest
import torch

from spikecut import cutoff as co

# ----------------------------------------------------------------------------- helpers


def two_class(pattern: list[list[float]]) -> torch.Tensor:
    """[T, N] of margins a -> cum_logits [T, N, 2] with Y = [a, 0] (a > 0: class 0 wins)."""
    a = torch.tensor(pattern, dtype=torch.float32)
    return torch.stack([a, torch.zeros_like(a)], dim=-1)


def from_correct(pattern: list[list[int]]) -> torch.Tensor:
    """[T, N] of 1 (correct for label 0) / 0 (wrong) -> Y = [1, 0] or [0, 1]."""
    c = torch.tensor(pattern, dtype=torch.float32)
    return torch.stack([c, 1 - c], dim=-1)


def random_logits(T: int = 6, N: int = 300, K: int = 5, seed: int = 0):
    """Accumulated logits that drift towards the label, with plenty of flips early on."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (N,), generator=g)
    per_step = torch.randn(T, N, K, generator=g) * 1.5
    per_step[:, torch.arange(N), labels] += 2.0
    return per_step.cumsum(dim=0), labels


# The Top-K worked example: T = 3, N = 4, K = 2, all labels 0, Y = [Y0, Y1].
#            s0           s1          s2          s3
TOPK_Y = torch.tensor(
    [
        [[0.5, 0.0], [0.0, 0.5], [0.5, 0.0], [0.25, 0.0]],  # t=1 gaps .5 .5 .5 .25
        [[4.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.5, 0.0]],  # t=2 gaps 4  2  1  .5
        [[3.0, 0.0], [2.5, 0.0], [0.0, 2.0], [1.5, 0.0]],  # t=3 gaps 3 2.5  2 1.5
    ]
)
TOPK_LABELS = torch.zeros(4, dtype=torch.long)
# correct:  s0 111, s1 011, s2 100, s3 111  -> stable: s0 111, s1 011, s2 000, s3 111
# G = 4, bins = 4 -> candidates 0, 1, 2, 3.
# t=1: stable [1,0,0,1]; beta 0: 4 above, 2 stable (1/2); beta 1, 2: nobody above (0/0 ->
#      not met); beta 3: nobody above either, but the last bin is forced -> beta_1 = 3.
#      (If 0/0 counted as met, beta_1 would be 1.)
# t=2: stable [1,1,0,1]; beta 0: 3/4; beta 1: above = {4, 2} (s2's gap 1 is not > 1), 2/2
#      -> beta_2 = 1. (With >= instead of >, s2 would count: 2/3, and beta_2 would be 2.)
# t=3: stable [1,1,0,1]; beta 0: 3/4; beta 1: 3/4; beta 2: above = {3, 2.5}, 2/2 -> beta_3 = 2.
TOPK_BETA_EPS0 = [3.0, 1.0, 2.0]


# --------------------------------------------------------------------------- statistics


def test_stable_mask_and_oct_on_hand_sequences():
    # Columns: correct-wrong-correct-correct, never correct, always correct,
    # correct until T then wrong, wrong-wrong-wrong-correct.
    y = from_correct([[1, 0, 1, 1, 0], [0, 0, 1, 1, 0], [1, 0, 1, 1, 0], [1, 0, 1, 0, 1]])
    labels = torch.zeros(5, dtype=torch.long)
    expected_stable = torch.tensor(
        [
            [False, False, True, False, False],
            [False, False, True, False, False],
            [True, False, True, False, False],
            [True, False, True, False, True],
        ]
    )
    assert torch.equal(co.stable_mask(y, labels), expected_stable)
    oct_ = co.oct_steps(y, labels)
    assert oct_.dtype == torch.long
    assert oct_.tolist() == [3, 4, 1, 4, 4]


def test_accuracy_per_step():
    y = from_correct([[1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    assert co.accuracy_per_step(y, torch.zeros(4, dtype=torch.long)) == [0.75, 0.5, 1.0]


def test_topk_gap_on_raw_logits():
    y = torch.tensor([[[1.0, 5.0, 2.0], [-1.0, -3.0, -1.0]]])
    # 5 - 2 = 3; a tie for the top gives 0.
    assert co.topk_gap(y).tolist() == [[3.0, 0.0]]


# ------------------------------------------------------------------------------ Top-K


def test_topk_calibration_matches_hand_computed_beta():
    rule = co.TopKCutoff(epsilon=0.0, bins=4)
    assert rule.beta is None
    assert rule.calibrate(TOPK_Y, TOPK_LABELS) is rule
    assert rule.beta.shape == (3,)
    assert rule.beta.tolist() == TOPK_BETA_EPS0


def test_topk_exit_steps_on_calibration_data():
    rule = co.TopKCutoff(epsilon=0.0, bins=4).calibrate(TOPK_Y, TOPK_LABELS)
    # beta = [3, 1, 2]: t=1 no gap > 3; t=2 gaps 4 and 2 > 1 (s0, s1); s2, s3 forced at T.
    steps = rule.exit_steps(TOPK_Y)
    assert steps.dtype == torch.long
    assert steps.tolist() == [2, 2, 3, 3]


def test_topk_exit_is_first_strictly_greater_gap_and_forced_at_T():
    rule = co.TopKCutoff(bins=4).calibrate(TOPK_Y, TOPK_LABELS)  # beta = [3, 1, 2]
    y = two_class(
        [
            [3.5, 3.0, 0.0, 0.0, 3.5],  # 3.5 > 3 exits; 3.0 == beta_1 does not
            [0.0, 1.0, 1.5, 0.0, 9.0],  # 1.0 == beta_2 does not; 1.5 > 1 exits
            [0.0, 2.0, 9.0, 0.0, 9.0],  # 2.0 == beta_3 does not, but t = T is forced
        ]
    )
    assert rule.exit_steps(y).tolist() == [1, 3, 2, 3, 1]
    assert rule.fire_matrix(y)[-1].all()


def test_topk_epsilon_tolerates_an_unstable_sample():
    # eps = 0.25 (target 0.75): at t=2 and t=3 beta 0 already has 3/4 -> beta = 0 there;
    # t=1 has only 1/2 at beta 0 and 0/0 above it -> still the forced last bin, 3.
    rule = co.TopKCutoff(epsilon=0.25, bins=4).calibrate(TOPK_Y, TOPK_LABELS)
    assert rule.beta.tolist() == [3.0, 0.0, 0.0]
    # Every sample has a positive gap at t=2 -> all exit at 2, s2 (unstable) included.
    assert rule.exit_steps(TOPK_Y).tolist() == [2, 2, 2, 2]
    # eps = 0.2 (target 0.8) is not enough to accept 3/4: same as eps = 0.
    rule = co.TopKCutoff(epsilon=0.2, bins=4).calibrate(TOPK_Y, TOPK_LABELS)
    assert rule.beta.tolist() == TOPK_BETA_EPS0
    # eps = 0.5: t=1 accepts 1/2 at beta 0 too.
    rule = co.TopKCutoff(epsilon=0.5, bins=4).calibrate(TOPK_Y, TOPK_LABELS)
    assert rule.beta.tolist() == [0.0, 0.0, 0.0]
    assert rule.exit_steps(TOPK_Y).tolist() == [1, 1, 1, 1]


def test_topk_candidates_scale_with_largest_gap_and_bins():
    # One step + T: G = 8 at t=2, bins = 8 -> candidates 0..7.
    # t=1: gaps 5 (stable), 3 (unstable: wrong at T) -> beta 0,1,2: 1/2; beta 3, 4: 1/1 -> 3.
    y = torch.tensor([[[5.0, 0.0], [3.0, 0.0]], [[8.0, 0.0], [0.0, 1.0]]])
    labels = torch.zeros(2, dtype=torch.long)
    rule = co.TopKCutoff(bins=8).calibrate(y, labels)
    # t=2: gaps 8 (stable), 1 (unstable) -> beta 0: 1/2; beta 1: {8} 1/1 -> 1.
    assert rule.beta.tolist() == [3.0, 1.0]
    rule = co.TopKCutoff(bins=1).calibrate(y, labels)  # only candidate 0, forced
    assert rule.beta.tolist() == [0.0, 0.0]


def test_topk_to_dict_is_json():
    rule = co.TopKCutoff(epsilon=0.03, bins=4)
    assert rule.to_dict() == {"rule": "topk", "epsilon": 0.03, "bins": 4, "beta": None}
    rule.calibrate(TOPK_Y, TOPK_LABELS)
    d = json.loads(json.dumps(rule.to_dict()))
    assert d["beta"] == TOPK_BETA_EPS0 and d["rule"] == "topk"


# ------------------------------------------------------------------- softmax / entropy


def test_softmax_confidence_rule():
    # Y = [ln a, 0] -> max softmax = a / (a + 1): ln 9 -> 0.9, ln 3 -> 0.75, 0 -> 0.5.
    l9, l3 = math.log(9.0), math.log(3.0)
    y = two_class([[l9, l3, 0.0], [l9, l9, l3]])
    rule = co.SoftmaxConfidence(epsilon=0.2)  # exit when p > 0.8
    assert rule.calibrate(y, torch.zeros(3, dtype=torch.long)) is rule
    assert rule.fire_matrix(y).tolist() == [[True, False, False], [True, True, True]]
    assert rule.exit_steps(y).tolist() == [1, 2, 2]
    # Strictly greater: [0, 0] gives exactly 0.5, which is not > 1 - 0.5.
    assert co.SoftmaxConfidence(0.5).exit_steps(two_class([[0.0], [0.0]])).tolist() == [2]
    # epsilon 0: p > 1 never holds, only the forced exit.
    assert co.SoftmaxConfidence(0.0).exit_steps(y).tolist() == [2, 2, 2]
    assert co.SoftmaxConfidence(0.2).to_dict() == {"rule": "softmax", "epsilon": 0.2}


def entropy2(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_entropy_rule_with_given_threshold():
    # H(0.9) = 0.325, H(0.75) = 0.562, H(0.5) = ln 2 = 0.693 nats.
    l9, l3 = math.log(9.0), math.log(3.0)
    y = two_class([[l9, l3, 0.0, 0.0], [l9, l9, l3, 0.0], [0.0, 0.0, 0.0, 0.0]])
    rule = co.EntropyCutoff(threshold=0.5)
    assert rule.calibrate(y, torch.zeros(4, dtype=torch.long)).threshold == 0.5  # kept
    assert rule.exit_steps(y).tolist() == [1, 2, 3, 3]
    # A K=4 uniform row has entropy ln 4 = 1.386: below 1.4, not below 1.38.
    u = torch.zeros(2, 1, 4)
    assert co.EntropyCutoff(threshold=1.4).exit_steps(u).tolist() == [1]
    assert co.EntropyCutoff(threshold=1.38).exit_steps(u).tolist() == [2]


# Entropy calibration example: T = 2, K = 2, labels [0, 0, 0, 1].
L9, L3 = math.log(9.0), math.log(3.0)
ENT_Y = torch.tensor(
    [
        [[L9, 0.0], [0.0, L3], [L3, 0.0], [0.0, 0.0]],  # H: h9, h75, h75, ln2
        [[L9, 0.0], [L9, 0.0], [0.0, L9], [0.0, L9]],  # H: h9 everywhere
    ]
)
ENT_LABELS = torch.tensor([0, 0, 0, 1])
# correct: s0 11, s1 01, s2 10, s3 01 -> stable from: s0 1, s1 2, s2 never, s3 2.
# Candidates (all observed values + 0): 0, h9, h75, ln2. A sample exits early (at 1) iff
# H(1) < h. Only s0, s1, s3 (correct at T) count. Safe exits: s0 always; s1 iff not
# h75 < h; s3 iff not ln2 < h. So safe(0) = safe(h9) = safe(h75) = 3/3, safe(ln2) = 2/3.


@pytest.mark.parametrize(
    ("epsilon", "expected"),
    [(0.0, entropy2(0.75)), (0.25, entropy2(0.75)), (0.5, math.log(2.0))],
)
def test_entropy_calibration_picks_largest_safe_threshold(epsilon, expected):
    # eps 0 and 0.25 -> largest h with safe >= 1 (>= 3/4) is h75, since 2/3 < 3/4;
    # eps 0.5 -> ln2. The sample wrong at T (s2) does not block any threshold.
    rule = co.EntropyCutoff(epsilon=epsilon).calibrate(ENT_Y, ENT_LABELS)
    assert rule.threshold == pytest.approx(expected, abs=1e-6)


def test_entropy_calibrated_exits_have_the_promised_safe_fraction():
    rule = co.EntropyCutoff(epsilon=0.25).calibrate(ENT_Y, ENT_LABELS)
    steps = rule.exit_steps(ENT_Y)
    # h = h75: s0 exits at 1 (h9 < h75); the others are not strictly below at t=1.
    assert steps.tolist() == [1, 2, 2, 2]
    stable = co.stable_mask(ENT_Y, ENT_LABELS)
    safe = stable[steps - 1, torch.arange(4)]
    assert safe.tolist() == [True, True, False, True]  # s2 is wrong at T whatever h is


def test_entropy_calibration_property_on_random_data():
    y, labels = random_logits(T=5, N=200, K=4, seed=3)
    stable = co.stable_mask(y, labels)
    for eps in (0.2, 0.4):
        rule = co.EntropyCutoff(epsilon=eps, candidates=50).calibrate(y, labels)
        steps = rule.exit_steps(y)
        correct_at_T = stable[-1]
        safe = stable[steps - 1, torch.arange(200)][correct_at_T].double().mean().item()
        assert safe >= 1 - eps
        if eps == 0.4:
            assert rule.threshold > 0


# -------------------------------------------------------------------------------- fixed


def test_fixed_timestep():
    y, _ = random_logits(T=4, N=10)
    rule = co.FixedTimestep(3)
    assert rule.exit_steps(y).tolist() == [3] * 10
    assert not rule.fires(y[1], 2, 4).any()
    assert rule.fires(y[2], 3, 4).all()
    assert rule.to_dict() == {"rule": "fixed", "epsilon": 0.0, "step": 3}
    assert co.FixedTimestep(4).exit_steps(y).tolist() == [4] * 10
    with pytest.raises(ValueError, match="step = 5 exceeds the T = 4"):
        co.FixedTimestep(5).exit_steps(y)
    with pytest.raises(ValueError, match="step: expected an integer >= 1"):
        co.FixedTimestep(0)


# ------------------------------------------------------------------- online vs offline


def all_rules(cal_y, cal_labels):
    return [
        co.TopKCutoff(epsilon=0.05, bins=50).calibrate(cal_y, cal_labels),
        co.TopKCutoff(epsilon=0.0).calibrate(cal_y, cal_labels),
        co.SoftmaxConfidence(epsilon=0.1),
        co.EntropyCutoff(epsilon=0.1, candidates=64).calibrate(cal_y, cal_labels),
        co.EntropyCutoff(threshold=0.4),
        co.FixedTimestep(2),
    ]


@pytest.mark.parametrize("index", range(6))
def test_online_fires_agree_with_offline_exit_steps(index):
    cal_y, cal_labels = random_logits(T=6, N=400, seed=1)
    y, _ = random_logits(T=6, N=300, seed=2)
    rule = all_rules(cal_y, cal_labels)[index]
    T, N, _ = y.shape
    offline = rule.exit_steps(y)
    fire = rule.fire_matrix(y)

    # An engine that feeds only the samples still running, one step at a time.
    online = torch.zeros(N, dtype=torch.long)
    running = torch.arange(N)
    for t in range(1, T + 1):
        assert torch.equal(rule.fires(y[t - 1], t, T), fire[t - 1])
        f = rule.fires(y[t - 1, running], t, T)
        online[running[f]] = t
        running = running[~f]
    assert running.numel() == 0
    assert torch.equal(online, offline)
    # The random data exercises both early and forced exits for the adaptive rules.
    assert offline.min() >= 1 and offline.max() <= T


def test_random_data_has_early_and_forced_exits():
    cal_y, cal_labels = random_logits(T=6, N=400, seed=1)
    y, _ = random_logits(T=6, N=300, seed=2)
    for rule in all_rules(cal_y, cal_labels)[:4]:
        steps = rule.exit_steps(y)
        assert (steps < 6).any() and (steps == 6).any(), rule


# ------------------------------------------------------------------------------ metrics


def test_exit_predictions_reads_each_sample_at_its_step():
    y = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]]])
    assert co.exit_predictions(y, torch.tensor([2, 1])).tolist() == [1, 2]
    assert co.exit_predictions(y, torch.tensor([1, 2])).tolist() == [0, 0]
    with pytest.raises(ValueError, match="expected values in 1..2"):
        co.exit_predictions(y, torch.tensor([0, 1]))


def test_evaluate_rule_on_topk_example():
    rule = co.TopKCutoff(bins=4).calibrate(TOPK_Y, TOPK_LABELS)
    r = co.evaluate_rule(rule, TOPK_Y, TOPK_LABELS)
    # Exits [2, 2, 3, 3]: s0 right at 2, s1 right at 2, s2 wrong at 3, s3 right at 3.
    assert r["rule"] == "topk" and r["epsilon"] == 0.0
    assert r["accuracy"] == 0.75
    assert r["mean_exit"] == 2.5
    assert r["speedup"] == pytest.approx(3 / 2.5)
    assert r["accuracy_delta"] == pytest.approx(0.0)  # accuracy at T is 3/4 too
    assert r["exit_histogram"] == [0, 2, 2]
    json.dumps(r)


def test_evaluate_rule_reports_accuracy_loss():
    # Fixed at t=1: s0, s2, s3 right -> 3/4 ... labels changed so that t=1 loses one.
    labels = torch.tensor([0, 0, 1, 0])  # s2 is right at t=2, t=3 (class 1), wrong at t=1
    r = co.evaluate_rule(co.FixedTimestep(1), TOPK_Y, labels)
    # t=1 argmax: [0, 1, 0, 0] -> right: s0, s3 -> 1/2; at T: [0, 0, 1, 0] -> all 4 right.
    assert r["accuracy"] == 0.5 and r["accuracy_delta"] == -0.5
    assert r["mean_exit"] == 1.0 and r["speedup"] == 3.0
    assert r["exit_histogram"] == [4, 0, 0]


def test_default_epsilons():
    assert co.DEFAULT_EPSILONS == (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09)


def test_sweep_epsilon_topk_exits_never_later_as_epsilon_grows():
    # Guaranteed by the definition: a larger eps lowers the target 1 - eps, so the set of
    # bins meeting it only grows, the smallest such bin (beta_t) can only drop, and a
    # lower beta_t fires at every step where a higher one did. So every sample's exit
    # step, and hence the mean, is non-increasing in eps. Accuracy is not monotone.
    cal_y, cal_labels = random_logits(T=8, N=500, seed=4)
    y, labels = random_logits(T=8, N=400, seed=5)
    epsilons = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)
    results = co.sweep_epsilon(
        lambda e: co.TopKCutoff(epsilon=e, bins=100), cal_y, cal_labels, y, labels, epsilons
    )
    assert [r["epsilon"] for r in results] == list(epsilons)
    means = [r["mean_exit"] for r in results]
    assert all(a >= b for a, b in pairwise(means)), means
    assert means[0] > means[-1]  # the knob does something on this data
    prev_beta, prev_steps = None, None
    for eps in epsilons:
        rule = co.TopKCutoff(epsilon=eps).calibrate(cal_y, cal_labels)
        steps = rule.exit_steps(y)
        if prev_beta is not None:
            assert (rule.beta <= prev_beta).all()
            assert (steps <= prev_steps).all()
        prev_beta, prev_steps = rule.beta, steps
    for r in results:
        assert sum(r["exit_histogram"]) == 400


def test_sweep_epsilon_default_grid():
    y, labels = random_logits(T=4, N=100, seed=6)
    results = co.sweep_epsilon(co.SoftmaxConfidence, y, labels, y, labels)
    assert [r["epsilon"] for r in results] == list(co.DEFAULT_EPSILONS)
    assert all(r["rule"] == "softmax" for r in results)


# ----------------------------------------------------------------------------- registry


def test_registry_and_make_rule():
    assert set(co.RULES) == {"topk", "softmax", "entropy"}
    rule = co.make_rule("topk", 0.02, bins=10)
    assert isinstance(rule, co.TopKCutoff) and rule.epsilon == 0.02 and rule.bins == 10
    assert isinstance(co.make_rule("softmax", 0.1), co.SoftmaxConfidence)
    assert isinstance(co.make_rule("entropy", 0.1), co.EntropyCutoff)
    assert "fixed" not in co.RULES  # needs a step, not an epsilon; built directly
    with pytest.raises(ValueError, match="unknown cutoff rule 'topq'.*entropy.*softmax.*topk"):
        co.make_rule("topq", 0.0)


# ------------------------------------------------------------------------------- errors


def test_uncalibrated_rules_raise():
    with pytest.raises(RuntimeError, match="calibrate"):
        co.TopKCutoff().exit_steps(TOPK_Y)
    with pytest.raises(RuntimeError, match="calibrate"):
        co.TopKCutoff().fires(TOPK_Y[0], 1, 3)
    with pytest.raises(RuntimeError, match="calibrate"):
        co.EntropyCutoff().exit_steps(TOPK_Y)


def test_topk_T_mismatch_names_both_values():
    rule = co.TopKCutoff(bins=4).calibrate(TOPK_Y, TOPK_LABELS)
    with pytest.raises(ValueError, match="T = 3.*T = 2"):
        rule.exit_steps(TOPK_Y[:2])
    with pytest.raises(ValueError, match="T = 3.*T = 4"):
        rule.fires(TOPK_Y[0], 1, 4)


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (torch.zeros(3, 4), "3-D tensor .* got 2-D"),
        (torch.zeros(3, 4, 1), r"K >= 2\), got K = 1"),
        (torch.zeros(0, 4, 3), r"T >= 1\), got T = 0"),
        (torch.tensor([[[0.0, float("nan")]]]), "finite values, found 1"),
        (torch.tensor([[[0.0, float("inf")]]]), "finite"),
        (torch.zeros(2, 3, 4, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_cum_logits(y, match):
    with pytest.raises(ValueError, match=match):
        co.validate_cum_logits(y)
    with pytest.raises(ValueError, match=match):
        co.SoftmaxConfidence(0.1).exit_steps(y)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.tensor([0, 1, 2, 0]), r"values in \[0, 2\), found values in \[0, 2\]"),
        (torch.tensor([0, -1, 1, 0]), r"\[0, 2\)"),
        (torch.tensor([0, 1, 1]), "length N = 4, got shape \\(3,\\)"),
        (torch.zeros(4, 1, dtype=torch.long), "1-D tensor"),
        (torch.zeros(4), "integer tensor, got torch.float32"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        co.validate_cum_logits(TOPK_Y, labels)
    with pytest.raises(ValueError, match=match):
        co.TopKCutoff().calibrate(TOPK_Y, labels)
    with pytest.raises(ValueError, match=match):
        co.oct_steps(TOPK_Y, labels)


def test_bad_rule_parameters_and_steps():
    for eps in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"epsilon: expected a value in \[0, 1\)"):
            co.TopKCutoff(epsilon=eps)
    with pytest.raises(ValueError, match="bins: expected an integer >= 1"):
        co.TopKCutoff(bins=0)
    with pytest.raises(ValueError, match="threshold"):
        co.EntropyCutoff(threshold=-1.0)
    with pytest.raises(ValueError, match="1 <= t <= T = 3, got t = 4"):
        co.SoftmaxConfidence(0.1).fires(TOPK_Y[0], 4, 3)
    with pytest.raises(ValueError, match="2-D tensor"):
        co.SoftmaxConfidence(0.1).fires(TOPK_Y, 1, 3)
    with pytest.raises(ValueError, match="finite"):
        co.SoftmaxConfidence(0.1).fires(torch.tensor([[float("nan"), 0.0]]), 1, 3)


@pytest.mark.parametrize("classes", [2, 10])
def test_numpy_criterion_equals_the_tensor_one(classes):
    """The anytime engine decides small CPU batches in NumPy: the same decisions, ties
    (equal top logits) included."""
    g = torch.Generator().manual_seed(3)
    T = 6
    cum = torch.randint(-3, 4, (T, 50, classes), generator=g).float().cumsum(0) / 3
    topk = co.TopKCutoff(epsilon=0.0)
    topk.beta = torch.rand(T, generator=g) * 2
    for rule in (topk, co.FixedTimestep(3)):
        for first in (1, 3):
            part = cum[first - 1 :]
            expected = rule._criterion(part, torch.arange(first, T + 1))
            got = rule._criterion_numpy(part.numpy(), first)
            assert got.dtype == bool and np.array_equal(got, expected.numpy())
    assert co.SoftmaxConfidence(0.1)._criterion_numpy(cum.numpy(), 1) is None


@pytest.mark.parametrize("classes", [2, 10])
def test_python_criterion_equals_the_tensor_one(classes):
    """One streamed sample is decided in plain Python: the same decisions, ties (equal top
    logits), a gap that rounds in float32 and one that overflows it included."""
    g = torch.Generator().manual_seed(4)
    T = 6
    cum = torch.randint(-3, 4, (T, 50, classes), generator=g).float().cumsum(0) / 3
    cum[:, 0] = torch.tensor([3.0e38, -3.0e38] + [-3.0e38] * (classes - 2))  # gap: inf
    # gap 1 + 2^-30 in exact arithmetic, 1.0 in float32: not above a β of 1
    cum[:, 1] = torch.tensor([1.0, -(2**-30)] + [-1.0] * (classes - 2))
    topk = co.TopKCutoff(epsilon=0.0)
    topk.beta = torch.rand(T, generator=g) * 2
    topk.beta[0] = 1.0
    for rule in (topk, co.FixedTimestep(3)):
        expected = rule._criterion(cum, torch.arange(1, T + 1))
        criterion = rule._criterion_python()
        got = [
            [criterion(array("f", row.tolist()), t) for row in cum[t - 1]] for t in range(1, T + 1)
        ]
        assert torch.equal(torch.tensor(got), expected)
        if rule is topk:  # the rounded gap stays below β, the infinite one fires
            assert expected[0, 0] and not expected[0, 1]
    assert co.SoftmaxConfidence(0.1)._criterion_python() is None
    topk.beta = topk.beta.double()  # compared in double: left to the NumPy form
    assert topk._criterion_python() is None


def test_fast_topk_criteria_follow_a_float64_beta():
    """A float64 β is compared in float64, as the tensor criterion does: a gap equal to
    float32(1/3) is above a β of 1/3 in double, though not above it rounded to float32."""
    T = 3
    rule = co.TopKCutoff(epsilon=0.0)
    rule.beta = torch.full((T,), 1 / 3, dtype=torch.float64)
    cum = torch.zeros(T, 2, 2)
    cum[..., 0] = 1 / 3
    expected = rule._criterion(cum, torch.arange(1, T + 1))
    assert expected.all()
    assert torch.equal(rule._criterion_at(cum[1], 2), expected[1])
    assert np.array_equal(rule._criterion_numpy(cum.numpy(), 1), expected.numpy())
    rule.beta = rule.beta.float()  # a replaced β is read again
    assert not rule._criterion_at(cum[1], 2).any()
    assert not rule._criterion_numpy(cum.numpy(), 1).any()
