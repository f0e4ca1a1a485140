"""RCS-ANN on hand-made activations, its aggregation, and the recorder around a model."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spikecut.layers import QCFS
from spikecut.regularizers import (
    RCSRegularizer,
    aggregate_rcs,
    ann_correct_mask,
    rcs_ann_scores,
)


def test_rcs_ann_scores_on_hand_made_activations():
    z = torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.0, 2.0]])
    # relu: [[1,0,3],[0,0,2]]; batch max 3; mean squares 10/3 and 4/3
    expected = [3 / math.sqrt(10 / 3 + 1e-5), 3 / math.sqrt(4 / 3 + 1e-5)]
    assert rcs_ann_scores(z).tolist() == pytest.approx(expected)


def test_rcs_ann_scores_flatten_feature_maps_per_sample():
    z = torch.zeros(2, 2, 2, 2)
    z[0, 0, 0, 0] = 4.0  # sample 0: one active unit of 8; sample 1 all zero
    scores = rcs_ann_scores(z)
    assert scores[0].item() == pytest.approx(4 / math.sqrt(16 / 8 + 1e-5))
    assert scores[1].item() == pytest.approx(4 / math.sqrt(1e-5))


def test_aggregate_takes_max_over_correct_samples_then_mean_over_layers():
    layer1 = torch.tensor([5.0, 9.0, 1.0])
    layer2 = torch.tensor([2.0, 7.0, 3.0])
    mask = torch.tensor([1.0, 0.0, 1.0])  # the sample with the largest scores is wrong
    assert aggregate_rcs([layer1, layer2], mask).item() == pytest.approx((5.0 + 3.0) / 2)


def test_correct_mask_reads_the_prediction():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5]])
    assert ann_correct_mask(logits, torch.tensor([0, 0, 0])).tolist() == [1.0, 0.0, 1.0]


def test_regularizer_matches_manual_computation_and_is_differentiable():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6), QCFS(4, 1.0), nn.Linear(6, 6), QCFS(4, 1.0), nn.Linear(6, 3)
    )
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with RCSRegularizer(model) as rcs:
        logits = model(x)
        loss = rcs.loss(logits, y)
    z1 = model[0](x)
    z2 = model[2](model[1](z1))
    manual = aggregate_rcs([rcs_ann_scores(z1), rcs_ann_scores(z2)], ann_correct_mask(logits, y))
    assert loss.item() == pytest.approx(manual.item())
    if manual.item() > 0:
        loss.backward()
        assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    assert all(q.input_record is None for q in (model[1], model[3]))


def test_regularizer_needs_qcfs_layers_one_pass_per_loss_and_its_block():
    with pytest.raises(ValueError, match="no QCFS"):
        RCSRegularizer(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    model = nn.Sequential(nn.Linear(2, 3), QCFS(), nn.Linear(3, 2))
    x, y = torch.randn(4, 2), torch.zeros(4, dtype=torch.long)
    rcs = RCSRegularizer(model)
    with pytest.raises(RuntimeError, match="outside"):
        rcs.loss(model(x), y)
    with rcs:
        model(x)
        logits = model(x)
        with pytest.raises(RuntimeError, match="recorded 2 inputs"):
            rcs.loss(logits, y)
        rcs.clear()
        assert torch.isfinite(rcs.loss(model(x), y))


def test_rcs_gradient_lowers_the_score_of_a_peaked_correct_sample():
    """A small step against the RCS gradient makes the worst correct sample less peaked."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), QCFS(4, 2.0), nn.Linear(16, 2))
    x = torch.randn(32, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample correct: the mask is all ones
    with RCSRegularizer(model) as rcs:
        before = rcs.loss(model(x), y)
        before.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.01 * p.grad
        after = rcs.loss(model(x), y)
    assert after < before
    assert F.cross_entropy(model(x), y).isfinite()
