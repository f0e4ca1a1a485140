"""from_spikingjelly: the adapted network gives SpikingJelly's per-step outputs, or refuses."""

import pytest
import torch
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

from spikecut.interop import InteropError, from_spikingjelly, spikingjelly_outputs

T, B = 6, 5


def _conv_net(mode: str, v_reset, decay_input: bool) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(1, 4, 3, step_mode=mode),
        layer.BatchNorm2d(4, step_mode=mode),
        neuron.LIFNode(tau=2.0, decay_input=decay_input, v_reset=v_reset, step_mode=mode),
        layer.AvgPool2d(2, step_mode=mode),
        layer.Flatten(step_mode=mode),
        layer.Linear(36, 8, step_mode=mode),
        neuron.IFNode(v_reset=v_reset, step_mode=mode),
        layer.Linear(8, 6, step_mode=mode),
        neuron.ParametricLIFNode(
            init_tau=1.5, v_reset=v_reset, decay_input=decay_input, step_mode=mode
        ),
        layer.Linear(6, 3, step_mode=mode),
    )
    with torch.no_grad():
        for i in (5, 7):
            net[i].weight.mul_(3.0)
        net[1].running_var.fill_(0.5)
        net[1].running_mean.fill_(0.1)
    return net.eval()


def _inputs() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(T, B, 1, 8, 8) * 3.0


@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("v_reset", [0.0, None, -0.25])
@pytest.mark.parametrize("decay_input", [True, False])
def test_conv_network_matches_spikingjelly(mode, v_reset, decay_input):
    net, x = _conv_net(mode, v_reset, decay_input), _inputs()
    reference = spikingjelly_outputs(net, x)
    adapted = from_spikingjelly(net).eval()
    out = adapted(x)
    assert out.shape == reference.shape == (T, B, 3)
    assert (out - reference).abs().max() <= 1e-6
    assert reference.abs().sum() > 0 and reference.std() > 0


def test_containers_half_threshold_and_simple_nodes():
    torch.manual_seed(2)
    net = nn.Sequential(
        layer.SeqToANNContainer(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)),
        neuron.HalfThresholdIFNode(v_threshold=0.8, step_mode="m"),
        layer.SeqToANNContainer(nn.Flatten(), nn.Linear(3 * 6 * 6, 7)),
        layer.MultiStepContainer(neuron.SimpleLIFNode(tau=3.0, decay_input=False)),
        layer.SeqToANNContainer(nn.Linear(7, 4), nn.Dropout(0.2)),
        layer.MultiStepContainer(neuron.SimpleIFNode(v_reset=None)),
    ).eval()
    with torch.no_grad():
        net[2][1].weight.mul_(4.0)
        net[4][0].weight.mul_(4.0)
    x = _inputs()
    adapted = from_spikingjelly(net, example=x)
    reference = spikingjelly_outputs(net, x)
    assert (adapted.eval()(x) - reference).abs().max() <= 1e-6
    assert 0 < reference.sum() < reference.numel()


def test_fires_at_threshold_exactly_as_spikingjelly():
    net = nn.Sequential(neuron.IFNode(v_threshold=1.0, step_mode="m"))
    x = torch.tensor([0.5, 0.5, 1.0, 0.25]).view(4, 1, 1)  # reaches 1.0 exactly at t = 2
    assert spikingjelly_outputs(net, x).flatten().tolist() == [0.0, 1.0, 1.0, 0.0]
    assert from_spikingjelly(net)(x).flatten().tolist() == [0.0, 1.0, 1.0, 0.0]


def test_refusals_name_module_and_reason():
    net = nn.Sequential(
        layer.Linear(4, 4),
        neuron.IzhikevichNode(),
        neuron.LIFNode(surrogate_function=surrogate.Sigmoid(spiking=False)),
        layer.ElementWiseRecurrentContainer(neuron.IFNode(), element_wise_function=torch.add),
        layer.WSLinear(4, 4),
    )
    with pytest.raises(InteropError) as info:
        from_spikingjelly(net)
    text = str(info.value)
    assert "module '1' (IzhikevichNode): a neuron model with no exact spikecut equivalent" in text
    assert "module '2' (LIFNode): its surrogate_function does not compute the Heaviside" in text
    assert "module '3' (ElementWiseRecurrentContainer): recurrent container" in text
    assert "module '4' (WSLinear)" in text


def test_example_check_catches_a_forward_that_reshapes_time():
    class TimeFlattening(nn.Module):  # a multi-step forward written by hand
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.sn = neuron.IFNode(v_threshold=0.5, step_mode="m")

        def forward(self, x):
            y = self.fc(x.flatten(0, 1)).reshape(x.shape[0], x.shape[1], 3)
            return self.sn(y).mean(0, keepdim=True).expand(x.shape[0], -1, -1)

    torch.manual_seed(3)
    with pytest.raises(InteropError, match="adapted network (fails|differ)"):
        from_spikingjelly(TimeFlattening(), example=torch.rand(4, 2, 4) * 2)
