"""Mean and TET losses against their formulas on hand-made per-step logits."""

import math

import pytest
import torch

from spikecut.losses import mean_loss, snn_loss, tet_loss

# Two steps, one sample, two classes, label 0:
# step 1 logits (0, 0)     -> CE = ln 2
# step 2 logits (ln 3, 0)  -> softmax = (3/4, 1/4), CE = ln(4/3)
OUTPUTS = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
LABELS = torch.tensor([0])


def test_mean_loss_is_cross_entropy_of_the_time_average():
    # mean logits (ln3 / 2, 0) -> p0 = √3 / (√3 + 1)
    expected = -math.log(math.sqrt(3.0) / (math.sqrt(3.0) + 1.0))
    assert mean_loss(OUTPUTS, LABELS).item() == pytest.approx(expected, rel=1e-6)


def test_tet_loss_averages_per_step_cross_entropy_and_adds_the_mse_term():
    per_step = (math.log(2.0) + math.log(4.0 / 3.0)) / 2.0
    mse = (1.0 + 1.0 + (math.log(3.0) - 1.0) ** 2 + 1.0) / 4.0  # every element against φ = 1
    lam = 0.25
    expected = (1.0 - lam) * per_step + lam * mse
    assert tet_loss(OUTPUTS, LABELS, tet_lambda=lam).item() == pytest.approx(expected, rel=1e-6)
    assert tet_loss(OUTPUTS, LABELS, tet_lambda=0.0).item() == pytest.approx(per_step, rel=1e-6)
    assert snn_loss("tet", OUTPUTS, LABELS, tet_lambda=lam).item() == pytest.approx(expected)


def test_tet_differs_from_mean_loss_when_steps_disagree():
    # A late step that is very confident dominates the mean loss but not TET.
    outputs = torch.tensor([[[0.0, 2.0]], [[20.0, 0.0]]])
    assert mean_loss(outputs, LABELS).item() < 1e-3
    assert tet_loss(outputs, LABELS, tet_lambda=0.0).item() > 1.0


def test_losses_refuse_wrong_shapes_and_names():
    with pytest.raises(ValueError, match=r"\[T, B, K\]"):
        mean_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        tet_loss(OUTPUTS, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unknown SNN loss 'ce'"):
        snn_loss("ce", OUTPUTS, LABELS)
