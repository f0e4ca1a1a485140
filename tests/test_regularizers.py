"""RCS for ANNs and SNNs on hand-made activations, the aggregation, and the recorder."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spikecut.convert import to_trainable_snn
from spikecut.layers import QCFS
from spikecut.regularizers import (
    RCSRegularizer,
    aggregate_rcs,
    ann_correct_mask,
    rcs_ann_scores,
    rcs_snn_scores,
    snn_correct_mask,
    window,
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
    with pytest.raises(ValueError, match="neither spiking neurons nor QCFS"):
        RCSRegularizer(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
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


# --------------------------------------------------------------------------- SNN version


def test_window_is_max_one_floor_rho_t():
    assert [window(t) for t in (1, 2, 3, 4, 10, 20)] == [1, 1, 1, 1, 3, 6]
    assert window(10, 0.5) == 5
    with pytest.raises(ValueError):
        window(0)


def test_rcs_snn_scores_on_hand_made_spikes_and_membranes():
    # T = 2, one sample, two neurons, θ = 2. r(t) = s(t) + ReLU(v(t)/θ):
    # r(1) = (1 + 0.5, 0) = (1.5, 0); r(2) = (0, 1 + 0.2) = (0, 1.2) (negative v ignored).
    spikes = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    membranes = torch.tensor([[[1.0, -3.0]], [[-1.0, 0.4]]])
    # K = max(1, ⌊0.6⌋) = 1: the reference is r(2) = (0, 1.2).
    cs1 = 0.0
    cs2 = 1.44 / (math.sqrt(1.44 + 1e-5) * math.sqrt(1.44 + 1e-5))
    expected = 1.0 / ((cs1 + cs2) / 2 + 1e-5)
    got = rcs_snn_scores(spikes, membranes, threshold=2.0)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("steps", "expected"), [(2, 2.0), (3, 3.0), (4, 4.0), (10, 10 / 3)])
def test_rcs_snn_reference_window_edge_cases(steps, expected):
    """Response e0 for the first T − K steps and e1 for the last K: mean cos = K / T."""
    k = window(steps)
    response = torch.zeros(steps, 1, 2)
    response[: steps - k, 0, 0] = 1.0
    response[steps - k :, 0, 1] = 1.0
    got = rcs_snn_scores(response, torch.zeros_like(response))
    assert got.item() == pytest.approx(expected, rel=1e-4)
    # With the reference over all steps (the authors' code when ⌊ρT⌋ = 0) T = 2 would give √2.
    assert got.item() != pytest.approx(math.sqrt(2.0), rel=1e-2)


def test_rcs_snn_reference_is_not_differentiated():
    response = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]], requires_grad=True)
    rcs_snn_scores(response, torch.zeros(2, 1, 2)).sum().backward()
    # Only the cosine of each step's own response carries gradient; step 2 equals the
    # reference, so its cosine is at its maximum and its gradient vanishes.
    assert response.grad[1].abs().max() < 1e-3
    assert response.grad[0].abs().max() > 1e-2


def test_snn_mask_needs_correct_predictions_at_each_of_the_last_steps():
    T = 10  # K' = 3: steps 8, 9, 10
    outputs = torch.zeros(T, 3, 2)
    outputs[:, :, 0] = 1.0  # everyone predicts class 0 at every step
    outputs[7, 1] = torch.tensor([0.0, 1.0])  # sample 1 wrong at step 8
    outputs[6, 2] = torch.tensor([0.0, 1.0])  # sample 2 wrong at step 7 only
    mask = snn_correct_mask(outputs, torch.tensor([0, 0, 0]))
    assert mask.tolist() == [1.0, 0.0, 1.0]
    assert snn_correct_mask(outputs, torch.tensor([1, 1, 1])).tolist() == [0.0, 0.0, 0.0]


def _tiny_snn():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    for layer in ann[::2]:
        nn.init.uniform_(layer.weight, -1.0, 1.0)  # strong enough for every layer to spike
    return to_trainable_snn(ann)


def test_snn_regularizer_matches_manual_computation_and_is_differentiable():
    snn = _tiny_snn()
    x = torch.rand(4, 5, 6) * 3  # [T, B, features]
    with torch.no_grad():
        y = snn(x).sum(0).argmax(1)  # labels = the SNN's own answers: mask mostly ones
    snn.reset()
    neurons = snn.neurons
    with RCSRegularizer(snn) as rcs:
        out = snn(x)
        spikes = [s[0].detach().clone() for s in rcs._spikes.values()]
        membranes = [torch.stack(n.membrane_record).detach() for n in neurons]
        # Spikes and membranes are aligned per step: a hard reset leaves v = 0 where s = 1.
        for s, v in zip(spikes, membranes, strict=True):
            assert s.shape == v.shape == (4, 5, v.shape[-1])
            assert s.sum() > 0 and (v[s == 1] == 0).all() and (v[s == 0] <= 1.0).all()
        loss = rcs.loss(out, y)
        mask = snn_correct_mask(out, y)
        manual = torch.stack(
            [(rcs_snn_scores(s, v) * mask).max() for s, v in zip(spikes, membranes, strict=True)]
        ).mean()
        assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
        loss.backward()
    assert snn.body[0].weight.grad is not None and snn.body[0].weight.grad.abs().sum() > 0
    # Outside the block nothing is recorded: inference pays nothing.
    assert all(n.membrane_record is None for n in neurons)
    assert not any(n._forward_hooks for n in neurons)


def test_snn_regularizer_wants_one_whole_sequence_per_loss():
    snn = _tiny_snn()
    x, y = torch.rand(4, 2, 6), torch.zeros(2, dtype=torch.long)
    with RCSRegularizer(snn) as rcs:
        snn(x[:2])
        out = snn(x[2:])
        with pytest.raises(RuntimeError, match="recorded 2 forward calls"):
            rcs.loss(out, y)
        snn.reset()
        assert torch.isfinite(rcs.loss(snn(x), y))


def test_degenerate_samples_score_high_with_bounded_gradients():
    """A sample whose layer input is <= 0 everywhere (ANN) or that is silent (SNN) gets the
    SPEC's eps-limited score, and no NaN or unbounded gradient reaches the network."""
    z = torch.randn(4, 16 * 7 * 7)
    z[0] = -1.0
    z.requires_grad_(True)
    scores = rcs_ann_scores(z)
    batch_max = torch.relu(z).max().item()
    assert scores[0].item() == pytest.approx(batch_max / math.sqrt(1e-5), rel=1e-5)
    (grad,) = torch.autograd.grad(scores[0], z)
    assert torch.isfinite(grad).all() and grad.abs().max().item() <= 1 / math.sqrt(1e-5) + 1e-3
    assert grad[0].abs().max().item() == 0.0  # ReLU passes nothing to the silent sample

    spikes = torch.zeros(8, 2, 10)
    membranes = torch.rand(8, 2, 10)
    membranes[:, 0] = 0.0  # sample 0 is silent at every step
    membranes.requires_grad_(True)
    snn = rcs_snn_scores(spikes, membranes)
    assert snn[0].item() == pytest.approx(1e5)
    (grad,) = torch.autograd.grad(snn[0], membranes)
    assert torch.equal(grad, torch.zeros_like(grad))
