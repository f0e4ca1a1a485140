"""Neuron dynamics on hand-computed inputs, surrogate gradients, chunking and reset scope."""

import pytest
import torch
from torch import nn

from spikecut.neurons import (
    IF,
    LIF,
    ArcTan,
    Sigmoid,
    SpikingNetwork,
    Surrogate,
    Triangle,
    private_state,
    reset,
)


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


class Quadratic(Surrogate):
    """A user's surrogate that defines only ``derivative``: the default in-place slope."""

    def derivative(self, x):
        return (1.0 - x * x).clamp_min(0.0)


@pytest.mark.parametrize(
    "surrogate", [Triangle(1.0), Triangle(0.4), Sigmoid(4.0), ArcTan(2.0), Quadratic()]
)
def test_in_place_slope_equals_the_derivative(surrogate):
    u = torch.linspace(-2.0, 4.0, 601)
    out = torch.full_like(u, float("nan"))
    returned = surrogate.slope(u, 1.3, out)
    assert returned is out
    assert torch.allclose(out, surrogate.derivative(u - 1.3), rtol=1e-6, atol=1e-7)
    assert out.max() > 0 and (out >= 0).all()


@pytest.mark.parametrize("surrogate", [Triangle(0.6), Quadratic()])
def test_training_with_any_surrogate_matches_the_definition(surrogate):
    x = random_drive(4).requires_grad_()
    weights = torch.randn_like(x)
    neuron = LIF(threshold=1.0, leak=0.7, reset="hard", surrogate=surrogate)
    (neuron(x) * weights).sum().backward()
    fast = x.grad.clone()
    x.grad = None
    expected, _, _ = reference_lif(
        x,
        torch.zeros_like(x[0]),
        threshold=1.0,
        leak=0.7,
        reset="hard",
        amplitude=1.0,
        surrogate=surrogate,
    )
    (expected * weights).sum().backward()
    assert torch.allclose(fast, x.grad, atol=1e-5, rtol=1e-5)
    assert fast.abs().sum() > 0


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


# --------------------------------------------------------------------------- fast paths


def reference_lif(x, v, *, threshold, leak, reset, amplitude, surrogate):
    """The per-step definition of SPEC §2, written out with plain autograd ops."""
    spikes, membranes = [], []
    for x_t in x:
        u = v * leak + x_t
        s = surrogate(u - threshold)
        v = u - threshold * s if reset == "soft" else u * (1.0 - s)
        spikes.append(s * amplitude)
        membranes.append(v)
    return torch.stack(spikes), torch.stack(membranes), v


NEURON_CASES = [
    dict(threshold=1.0, leak=0.5, reset="hard", v_init=0.0, amplitude=1.0, surrogate=Triangle()),
    dict(threshold=1.0, leak=1.0, reset="hard", v_init=0.2, amplitude=1.0, surrogate=Sigmoid()),
    dict(threshold=0.7, leak=0.5, reset="soft", v_init=0.35, amplitude=0.7, surrogate=ArcTan()),
    dict(threshold=1.3, leak=1.0, reset="soft", v_init=0.65, amplitude=1.3, surrogate=Triangle()),
    # a leak whose product is inexact (two operations) and another power of two (one)
    dict(threshold=1.0, leak=0.7, reset="hard", v_init=0.1, amplitude=1.0, surrogate=Triangle()),
    dict(threshold=0.8, leak=0.25, reset="soft", v_init=0.0, amplitude=1.0, surrogate=Sigmoid()),
]


def random_drive(seed, steps=7, shape=(3, 5)):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(steps, *shape, generator=generator) * 1.5 + 0.4


@pytest.mark.parametrize("case", NEURON_CASES)
def test_inference_path_is_bit_identical_to_the_definition(case):
    x = random_drive(1)
    neuron = LIF(**case)
    with torch.no_grad():
        out = neuron(x)
        expected, membranes, v_last = reference_lif(
            x, torch.full_like(x[0], case["v_init"]), **{k: case[k] for k in case if k != "v_init"}
        )
    assert torch.equal(out, expected)
    assert torch.equal(neuron.v, v_last)
    assert 0 < out.count_nonzero() < out.numel()  # the case exercises spikes and silence
    # one step per call (a network streamed step by step), the first from the constant v_init
    neuron.reset()
    neuron.folded_steps = 1
    with torch.no_grad():
        stepped = torch.stack([neuron(x_t) for x_t in x])
    assert torch.equal(stepped, expected)
    assert torch.equal(neuron.v, v_last)


@pytest.mark.parametrize("case", NEURON_CASES)
def test_training_path_matches_the_definition_in_values_and_gradients(case):
    x = random_drive(2).requires_grad_()
    weights = torch.randn_like(x)  # a loss that weighs every step and neuron differently
    neuron = LIF(**case)
    out = neuron(x)
    (out * weights).sum().backward()
    fast_grad = x.grad.clone()

    x.grad = None
    params = {k: case[k] for k in case if k != "v_init"}
    expected, _, _ = reference_lif(x, torch.full_like(x[0], case["v_init"]), **params)
    (expected * weights).sum().backward()
    assert torch.equal(out, expected)
    assert torch.allclose(fast_grad, x.grad, atol=1e-5, rtol=1e-5)
    assert fast_grad.abs().sum() > 0


@pytest.mark.parametrize("case", NEURON_CASES)
def test_chunked_training_carries_gradient_across_chunks(case):
    x = random_drive(3, steps=8).requires_grad_()
    weights = torch.randn_like(x)
    neuron = LIF(**case)
    whole = neuron(x)
    (whole * weights).sum().backward()
    whole_grad, whole_v = x.grad.clone(), neuron.v.detach().clone()

    x.grad = None
    neuron.reset()
    chunks = torch.cat([neuron(x[:3]), neuron(x[3:4]), neuron(x[4:])])
    (chunks * weights).sum().backward()
    assert torch.equal(chunks, whole)
    assert torch.equal(neuron.v.detach(), whole_v)
    assert torch.allclose(x.grad, whole_grad, atol=1e-5, rtol=1e-5)
    # the first chunk's inputs only reach the loss through the carried state
    assert x.grad[:3].abs().sum() > 0


def test_gradient_reaches_the_carried_state_of_the_final_membrane():
    # loss on v(T) only: g_I(t) must come from the state output, not from the spikes
    x = torch.tensor([[0.3], [0.4]], requires_grad=True)
    neuron = LIF(threshold=1.0, leak=0.5, reset="soft", surrogate=Triangle())
    neuron(x)
    neuron.v.sum().backward()
    # no spikes; u1 = 0.3, u2 = 0.5·0.3 + 0.4 = 0.55; soft reset: ∂v/∂u = 1 − θ·σ'(u − θ)
    # with the triangle σ'(−0.7) = 0.3 and σ'(−0.45) = 0.55:
    # dv2/dx2 = 1 − 0.55;  dv2/dx1 = (1 − 0.55) · λ · (1 − 0.3)
    assert x.grad.squeeze(1).tolist() == pytest.approx([0.45 * 0.5 * 0.7, 0.45])


def test_membrane_record_in_training_carries_gradient():
    x = random_drive(4).requires_grad_()
    neuron = LIF(threshold=1.0, leak=0.5, reset="hard")
    neuron.membrane_record = []
    out = neuron(x)
    assert len(neuron.membrane_record) == x.shape[0]
    torch.stack(neuron.membrane_record).relu().sum().backward()
    _, membranes, _ = reference_lif(
        x.detach(),
        torch.zeros_like(x[0]),
        threshold=1.0,
        leak=0.5,
        reset="hard",
        amplitude=1.0,
        surrogate=Triangle(),
    )
    assert torch.equal(torch.stack(neuron.membrane_record).detach(), membranes)
    assert out.requires_grad and x.grad.abs().sum() > 0


def test_membrane_record_in_inference_holds_every_step():
    x = random_drive(5)
    neuron = IF(threshold=0.9, v_init=0.45, amplitude=0.9)
    neuron.membrane_record = []
    with torch.no_grad():
        neuron(x[:4])
        neuron(x[4:])
    _, membranes, _ = reference_lif(
        x,
        torch.full_like(x[0], 0.45),
        threshold=0.9,
        leak=1.0,
        reset="soft",
        amplitude=0.9,
        surrogate=Triangle(),
    )
    assert len(neuron.membrane_record) == x.shape[0]
    assert torch.equal(torch.stack(neuron.membrane_record), membranes)


def test_inference_does_not_modify_a_state_the_caller_holds():
    neuron = LIF()
    with torch.no_grad():
        neuron(random_drive(6))
        before = neuron.v
        saved = before.clone()
        neuron(random_drive(7))
    assert torch.equal(before, saved)
    assert neuron.v is not before


def test_inference_mode_and_channels_last_inputs():
    x = random_drive(8, steps=4, shape=(2, 3, 4, 4))
    neuron = LIF(threshold=0.5)
    expected = neuron(x)
    neuron.reset()
    folded = x.reshape(8, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    neuron.folded_steps = 4
    with torch.inference_mode():
        out = neuron(folded)
    assert torch.equal(out.reshape(x.shape), expected)


@pytest.mark.parametrize("chunk", [1, 2, 4, "auto"])
def test_time_chunks_give_the_whole_sequence_output(chunk, monkeypatch):
    import spikecut.memory as memory

    # LIF 1 holds 5·4·8·8 floats per step: a budget of 3 steps gives chunks of 2 (power of 2)
    monkeypatch.setattr(memory, "AUTO_CHUNK_BYTES", 3 * 5 * 4 * 8 * 8 * 4)
    monkeypatch.setattr("spikecut.speed._kept", False)  # the budget without kept blocks
    snn = small_snn()
    x = torch.randn(7, 5, 1, 8, 8) * 2
    whole = snn(x)
    whole_v = [n.v.clone() for n in snn.neurons]
    reset(snn)
    snn.time_chunk = chunk
    calls = []
    snn.body.register_forward_hook(lambda _m, inp, _out: calls.append(inp[0].shape[0] // 5))
    chunked = snn(x)
    assert torch.equal(chunked, whole)
    assert all(torch.equal(n.v, v) for n, v in zip(snn.neurons, whole_v, strict=True))
    expected = {1: [1] * 7, 2: [2, 2, 2, 1], 4: [4, 3], "auto": [1, 2, 2, 2]}[chunk]
    assert calls == expected
    if chunk == "auto":  # the chunk found by the first call's probe step is kept
        calls.clear()
        reset(snn)
        assert torch.equal(snn(x), whole)
        assert calls == [2, 2, 2, 1]


def test_training_mode_always_folds_the_whole_sequence():
    snn = small_snn().train()
    snn.time_chunk = 2
    calls = []
    snn.body.register_forward_hook(lambda _m, inp, _out: calls.append(inp[0].shape[0]))
    snn(torch.randn(6, 3, 1, 8, 8))
    assert calls == [18]
    with pytest.raises(ValueError, match="time_chunk"):
        snn.time_chunk = 0


def test_private_state_is_updated_in_place_only_inside_the_block():
    neuron = LIF()
    net = SpikingNetwork(nn.Sequential(neuron))
    with torch.no_grad():
        net(random_drive(3))
        held = neuron.v
        with private_state(net):
            net(random_drive(4))
            assert neuron.v is held  # updated in place: no copy per chunk or step
        assert not neuron.state_private
        net(random_drive(5))
    assert neuron.v is not held  # outside the block a held state is never touched


@pytest.mark.parametrize("case", NEURON_CASES)
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_one_step_per_call_is_bit_identical_to_the_whole_sequence(case, mode):
    """A network streamed one step per call takes the neuron's single-step path; its
    spikes and membrane equal the whole-sequence loop's, step for step."""
    x = random_drive(11)
    whole = LIF(**case)
    stepped = LIF(**case)
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with context():
        expected = whole(x)
        stepped.folded_steps = 1  # as a SpikingNetwork sets it for a one-step call
        outs = []
        for x_t in x:
            outs.append(stepped(x_t))
            held = stepped.v
            saved = held.clone()
        outs.append(stepped(x[0]))  # one more step must not touch the state held above
    assert torch.equal(torch.stack(outs[:-1]), expected)
    assert torch.equal(held, saved)
    assert 0 < expected.count_nonzero() < expected.numel()


def test_one_step_path_keeps_a_subclass_recurrence_and_checks_the_state_shape():
    class Doubled(LIF):
        def _run(self, seq):
            return super()._run(seq) * 2

    x = random_drive(12, steps=1)[0]
    plain, doubled = LIF(threshold=0.3), Doubled(threshold=0.3)
    with torch.no_grad():
        for neuron in (plain, doubled):
            neuron.folded_steps = 1
        assert torch.equal(doubled(x), plain(x) * 2)
        with pytest.raises(ValueError, match="neuron state has shape"):
            plain(x[:1])
