"""QCFS quantisation, its straight-through gradients, and calibration dropout."""

import pytest
import torch
from torch import nn

from spikecut.layers import QCFS, CalibrationDropout, calibration_dropout, clamp_thresholds
from spikecut.neurons import IF, SpikingNetwork


def test_qcfs_levels_on_hand_computed_inputs():
    q = QCFS(levels=4, threshold=2.0)
    z = torch.tensor([-1.0, 0.2, 0.3, 0.9, 1.3, 5.0])
    # L*relu(z)/θ + 1/2 = 0.5, 0.9, 1.1, 2.3, 3.1, 10.5 -> floor 0,0,1,2,3,10 -> /4, clip, ×θ
    assert q(z).tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 2.0])


def test_qcfs_has_exactly_levels_plus_one_output_values():
    q = QCFS(levels=8, threshold=3.0)
    values = torch.unique(q(torch.linspace(-2, 6, 10001)))
    assert values.numel() == 9
    assert values.tolist() == pytest.approx([3.0 * k / 8 for k in range(9)])


def test_qcfs_gradients_reach_input_and_threshold():
    q = QCFS(levels=4, threshold=2.0)
    z = torch.tensor([-1.0, 0.9, 5.0], requires_grad=True)
    q(z).sum().backward()
    # straight-through: d/dz = 1 inside the clip range, 0 below zero and above θ
    assert z.grad.tolist() == pytest.approx([0.0, 1.0, 0.0])
    # d/dθ = q - relu(z)/θ inside the range (0.5 - 0.45), 1 when clipped, 0 below zero
    assert q.threshold.grad.item() == pytest.approx(0.05 + 1.0 + 0.0, abs=1e-6)


def test_qcfs_records_its_input_only_while_asked():
    q = QCFS()
    q(torch.ones(2))
    assert q.input_record is None
    q.input_record = []
    z = torch.randn(3)
    q(z)
    assert len(q.input_record) == 1 and q.input_record[0] is z


def test_qcfs_rejects_bad_arguments():
    with pytest.raises(ValueError, match="levels"):
        QCFS(levels=0)
    with pytest.raises(ValueError, match="threshold"):
        QCFS(threshold=-1.0)


def test_calibration_dropout_is_active_in_eval_mode_and_removed_afterwards():
    neuron = IF(threshold=1.0)
    snn = SpikingNetwork(nn.Sequential(nn.Identity(), neuron, nn.Identity())).eval()
    x = torch.full((4, 256, 10), 2.0)
    with calibration_dropout(snn, p=0.3):
        assert isinstance(snn.body[1], nn.Sequential)
        assert snn.body[1][0] is neuron
        assert isinstance(snn.body[1][1], CalibrationDropout)
        out = snn(x)
        zero_fraction = (out == 0).float().mean().item()
        assert 0.25 < zero_fraction < 0.35
        assert out.max().item() == pytest.approx(1.0 / 0.7)
    assert snn.body[1] is neuron
    snn.reset()
    assert torch.all(snn(x) == 1.0)


def test_calibration_dropout_restores_model_after_an_error():
    neuron = IF()
    model = nn.Sequential(neuron)
    with pytest.raises(RuntimeError), calibration_dropout(model, 0.3):
        raise RuntimeError("boom")
    assert model[0] is neuron


def test_qcfs_threshold_floor_defaults_to_one_percent_and_is_validated():
    assert QCFS(threshold=8.0).min_threshold == pytest.approx(0.08)
    assert QCFS(threshold=1.0, min_threshold=0.2).min_threshold == 0.2
    for bad in (0.0, -1.0, 1.5):
        with pytest.raises(ValueError, match=r"min_threshold must be in \(0, threshold=1.0\]"):
            QCFS(threshold=1.0, min_threshold=bad)


def test_clamp_thresholds_raises_only_those_below_their_floor():
    low, fine = QCFS(threshold=1.0), QCFS(threshold=2.0)
    with torch.no_grad():
        low.threshold.fill_(-0.3)
        fine.threshold.fill_(0.5)
    model = nn.Sequential(nn.Linear(2, 2), low, nn.Linear(2, 2), fine)
    assert clamp_thresholds(model) == 1
    assert low.threshold.item() == pytest.approx(0.01)
    assert fine.threshold.item() == 0.5  # above its floor 0.02: untouched
    assert clamp_thresholds(model) == 0


def test_bn_qcfs_conv_bn_output_is_blind_to_a_joint_scale_so_sgd_only_turns_theta():
    """Why θ can cross zero under plain SGD: between two BatchNorms, scaling the first BN's
    γ, β and θ together leaves the output unchanged, so the gradient is orthogonal to
    (γ, β, θ); SGD keeps their norm (and lets it grow) and only turns the direction."""
    torch.manual_seed(0)
    bn1, q = nn.BatchNorm2d(16), QCFS(levels=4, threshold=1.0)
    bn2 = nn.BatchNorm2d(8, eps=1e-12)  # BN's eps is the only thing a scale would change
    model = nn.Sequential(nn.Conv2d(1, 16, 3), bn1, q, nn.Conv2d(16, 8, 3), bn2)
    x = torch.randn(32, 1, 8, 8)
    target = torch.randn(32, 8, 4, 4)
    with torch.no_grad():
        bn1.bias.normal_(0.0, 0.5)

    def loss():
        return (model(x) - target).pow(2).mean()

    params = (bn1.weight, bn1.bias, q.threshold)
    base = loss()
    grads = torch.autograd.grad(base, params)
    with torch.no_grad():
        for p in params:
            p.mul_(2.0)  # a power of two: the quantisation floors see identical numbers
        scaled = loss()
    assert scaled.item() == pytest.approx(base.item(), rel=1e-5)
    dot = sum((g * p).sum() for g, p in zip(grads, params, strict=True))
    norms = (
        torch.cat([g.flatten() for g in grads]).norm()
        * torch.cat([p.detach().flatten() for p in params]).norm()
    )
    assert norms > 1e-3  # the gradient itself is not zero ...
    assert abs(dot.item()) < 1e-3 * norms.item()  # ... only orthogonal to (γ, β, θ)


def test_calibration_dropout_masks_follow_sample_and_step_not_the_call():
    dropout = CalibrationDropout(0.5, seed=9, bank=64)
    x = torch.ones(6, 10, 32)  # [T, B, features]
    whole = dropout(x)
    assert dropout.steps_seen == 6
    dropout.reset()
    parts = []
    for first in (0, 5):  # two batches of samples, each in time chunks of 4 and 2 steps
        dropout.reset()
        dropout.sample_offset = first
        parts.append(
            torch.cat([dropout(x[:4, first : first + 5]), dropout(x[4:, first : first + 5])])
        )
    assert torch.equal(torch.cat(parts, dim=1), whole)
    assert set(whole.unique().tolist()) == {0.0, 2.0}
    rows = whole.reshape(60, 32)
    assert len({tuple(r.tolist()) for r in rows}) > 30  # rows mostly get different masks
    with pytest.raises(ValueError, match="at least 1 mask"):
        CalibrationDropout(0.3, bank=0)
