"""Neuron dynamics on hand-computed inputs, surrogate gradients, chunking and reset scope."""

import pytest
import torch
from torch import nn

from spikecut.neurons import IF, LIF, ArcTan, Sigmoid, SpikingNetwork, Triangle, reset


def column(values):
    """A [T, 1] sequence from a list of per-step inputs."""
    return torch.tensor(values, dtype=torch.float32).unsqueeze(1)


def test_lif_hard_reset_with_leak_matches_hand_computation():
    # u1=0.6; u2=0.3+0.6=0.9; u3=0.45+0.6=1.05 -> spike, v=0; u4=0+1.5 -> spike, v=0
    neuron = LIF(threshold=1.0, leak=0.5, reset="hard")
    out = neuron(column([0.6, 0.6, 0.6, 1.5]))
    assert out.squeeze(1).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert neuron.v.item() == pytest.approx(0.0)


def test_if_soft_reset_with_v_init_and_amplitude():
    # v0=0.5: u=0.8 | u=1.1 -> spike, v=0.1 | u=1.0 (not > 1) | u=1.1 -> spike, v=0.1
    neuron = IF(threshold=1.0, v_init=0.5, amplitude=2.0)
    out = neuron(column([0.3, 0.3, 0.9, 0.1]))
    assert out.squeeze(1).tolist() == [0.0, 2.0, 0.0, 2.0]
    assert neuron.v.item() == pytest.approx(0.1, abs=1e-6)


def test_soft_reset_keeps_the_surplus_and_hard_reset_drops_it():
    soft = LIF(threshold=1.0, leak=1.0, reset="soft")
    hard = LIF(threshold=1.0, leak=1.0, reset="hard")
    x = column([1.75, 0.5])
    # soft: v=0.75 after the first spike, u=1.25 -> second spike; hard: v=0, u=0.5 -> none
    assert soft(x).squeeze(1).tolist() == [1.0, 1.0]
    assert hard(x).squeeze(1).tolist() == [1.0, 0.0]


def test_leak_scales_the_previous_membrane():
    neuron = LIF(threshold=10.0, leak=0.25, reset="hard", v_init=4.0)
    neuron(column([1.0, 2.0]))
    # u1 = 0.25*4 + 1 = 2; u2 = 0.25*2 + 2 = 2.5
    assert neuron.v.item() == pytest.approx(2.5)


def test_reset_restores_v_init():
    neuron = IF(threshold=1.0, v_init=0.5)
    first = neuron(column([0.6, 0.0]))
    neuron.reset()
    again = neuron(column([0.6, 0.0]))
    assert torch.equal(first, again)
    assert first.squeeze(1).tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    "gamma, x, expected",
    [
        (1.0, [-1.5, -0.5, 0.0, 0.25, 1.0], [0.0, 0.5, 1.0, 0.75, 0.0]),
        (0.5, [-0.25, 0.0, 0.5, 0.1], [1.0, 2.0, 0.0, 1.6]),
    ],
)
def test_triangle_surrogate_gradient_values(gamma, x, expected):
    x = torch.tensor(x, requires_grad=True)
    spikes = Triangle(gamma)(x)
    spikes.sum().backward()
    assert spikes.tolist() == [float(v > 0) for v in x.tolist()]
    assert x.grad.tolist() == pytest.approx(expected)


def test_other_surrogates_peak_at_threshold():
    x = torch.tensor([0.0, 1.0])
    for surrogate, peak in ((Sigmoid(4.0), 1.0), (ArcTan(2.0), 1.0)):
        d = surrogate.derivative(x)
        assert d[0].item() == pytest.approx(peak)
        assert d[1] < d[0]


def test_gradient_flows_from_spikes_to_input_current():
    neuron = LIF(threshold=1.0, leak=0.5)
    x = torch.tensor([[1.25]], requires_grad=True)
    neuron(x).sum().backward()
    assert x.grad.item() == pytest.approx(0.75)  # triangle at u - θ = 0.25


def small_snn():
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        LIF(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 8),
        IF(threshold=0.7, v_init=0.35, amplitude=0.7),
        nn.Linear(8, 3),
    )
    return SpikingNetwork(body).eval()


def test_chunked_run_equals_whole_sequence():
    snn = small_snn()
    x = torch.randn(6, 5, 1, 8, 8) * 2
    whole = snn(x)
    reset(snn)
    steps = torch.cat([snn(x[t : t + 1]) for t in range(6)])
    reset(snn)
    chunks = torch.cat([snn(x[:2]), snn(x[2:5]), snn(x[5:])])
    assert whole.shape == (6, 5, 3)
    assert torch.equal(whole, steps)
    assert torch.equal(whole, chunks)
    assert whole.abs().sum() > 0


def test_reset_is_scoped_to_one_network():
    a, b = small_snn(), small_snn()
    x = torch.randn(3, 2, 1, 8, 8)
    a(x)
    b(x)
    reset(a)
    assert all(n.v is None for n in a.neurons)
    assert all(n.v is not None for n in b.neurons)


def test_state_of_another_batch_size_is_a_clear_error():
    snn = small_snn()
    snn(torch.randn(2, 4, 1, 8, 8))
    with pytest.raises(ValueError, match="reset"):
        snn(torch.randn(2, 3, 1, 8, 8))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="reset"):
        LIF(reset="sideways")
    with pytest.raises(ValueError, match="threshold"):
        LIF(threshold=0.0)
    with pytest.raises(ValueError, match="T, B"):
        LIF()(torch.ones(3))
