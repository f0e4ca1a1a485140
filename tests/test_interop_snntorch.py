"""from_snntorch: the adapted network gives snnTorch's per-step outputs, or refuses clearly."""

import pytest
import snntorch as snn
import torch
from torch import nn

from spikecut.interop import InteropError, MirroredLIF, from_snntorch, snntorch_outputs

T, B = 7, 6


def _conv_net(reset: str, delay: bool) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.AvgPool2d(2),
        snn.Leaky(
            beta=0.8, threshold=0.7, init_hidden=True, reset_mechanism=reset, reset_delay=delay
        ),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
        snn.Leaky(
            beta=torch.full((5,), 0.6),
            init_hidden=True,
            output=True,
            reset_mechanism=reset,
            reset_delay=delay,
        ),
    )
    with torch.no_grad():
        net[4].weight.mul_(4.0)
    return net.eval()


def _inputs() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(T, B, 1, 8, 8) * 2.0


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("delay", [True, False])
@pytest.mark.parametrize("readout", ["spikes", "membrane"])
def test_conv_network_matches_snntorch(reset, delay, readout):
    net, x = _conv_net(reset, delay), _inputs()
    reference = snntorch_outputs(net, x, readout=readout)
    adapted = from_snntorch(net, readout=readout).eval()
    out = adapted(x)
    assert out.shape == reference.shape
    assert (out - reference).abs().max() <= 1e-6
    if readout == "spikes":
        assert 0 < reference.sum() < reference.numel()  # the test sees real spiking


def test_step_by_step_equals_whole_sequence_and_original_is_untouched():
    net, x = _conv_net("subtract", True), _inputs()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    adapted = from_snntorch(net, example=x).eval()
    whole = adapted(x)
    adapted.reset()
    steps = torch.cat([adapted(x[t : t + 1]) for t in range(T)])
    assert torch.equal(whole, steps)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert sum(isinstance(m, MirroredLIF) for m in adapted.modules()) == 2


def test_mlp_with_graded_spikes_and_learnable_beta():
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Linear(10, 8),
        snn.Leaky(
            beta=0.9,
            learn_beta=True,
            learn_threshold=True,
            init_hidden=True,
            graded_spikes_factor=0.5,
        ),
        nn.Linear(8, 4),
    ).eval()
    x = torch.randn(T, B, 10) * 2
    adapted = from_snntorch(net, example=x)
    assert (adapted.eval()(x) - snntorch_outputs(net, x)).abs().max() <= 1e-6


def test_refusals_name_module_and_reason():
    net = nn.Sequential(
        nn.Linear(4, 3),
        snn.Leaky(beta=0.9),  # init_hidden=False
        nn.Linear(3, 3),
        snn.Leaky(beta=torch.tensor([0.5, 0.6, 0.7]), init_hidden=True),
        snn.Synaptic(alpha=0.9, beta=0.8, init_hidden=True),
        snn.Leaky(beta=0.5, init_hidden=True, inhibition=True),
        snn.Leaky(beta=0.5, init_hidden=True, output=True),
    )
    with pytest.raises(InteropError) as info:
        from_snntorch(net)
    text = str(info.value)
    assert "module '1' (Leaky): init_hidden=False" in text
    assert "module '3' (Leaky): beta differs between neurons" in text
    assert "module '4' (Synaptic)" in text
    assert "module '5' (Leaky): lateral inhibition" in text
    assert "module '6'" not in text  # the last module may return (spikes, membrane)


def test_output_true_inside_the_network_is_refused():
    net = nn.Sequential(
        nn.Linear(4, 3), snn.Leaky(beta=0.5, init_hidden=True, output=True), nn.Linear(3, 2)
    )
    with pytest.raises(InteropError, match=r"module '1' \(Leaky\): output=True"):
        from_snntorch(net)


def test_custom_spike_function_is_refused():
    net = nn.Sequential(
        nn.Linear(4, 3), snn.Leaky(beta=0.5, init_hidden=True, spike_grad=torch.sigmoid)
    )
    with pytest.raises(InteropError, match="spike_grad does not compute"):
        from_snntorch(net)


def test_a_network_with_a_membrane_from_training_is_copied():
    net = nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=0.5, init_hidden=True))
    net(torch.randn(2, 4, requires_grad=True)).sum()  # mem now holds a graph
    adapted = from_snntorch(net)
    assert adapted(torch.zeros(3, 2, 4)).shape == (3, 2, 3)
