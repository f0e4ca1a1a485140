"""Adapted SpikingJelly/snnTorch networks work with cutoff calibration, the anytime and
streaming engines and operation counts, with the same answers as offline evaluation."""

import pytest
import snntorch as snn
import torch
from spikingjelly.activation_based import layer, neuron
from torch import nn

from spikecut.anytime import AnytimeClassifier, StreamingClassifier
from spikecut.cutoff import TopKCutoff
from spikecut.interop import from_snntorch, from_spikingjelly, snntorch_outputs
from spikecut.ops import OpCounter
from spikecut.risk import RiskControlledCutoff

T, N, K = 6, 40, 4


def _snntorch_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.AvgPool2d(2),
        snn.Leaky(beta=0.7, init_hidden=True),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 16),
        snn.Leaky(beta=0.7, init_hidden=True, reset_mechanism="zero"),
        nn.Linear(16, K),
    )
    with torch.no_grad():
        net[4].weight.mul_(3.0)
    return net.eval()


def _spikingjelly_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, step_mode="m"),
        layer.AvgPool2d(2, step_mode="m"),
        neuron.LIFNode(tau=2.0, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(4 * 4 * 4, 16, step_mode="m"),
        neuron.IFNode(v_reset=None, step_mode="m"),
        layer.Linear(16, K, step_mode="m"),
    )
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[4].weight.mul_(3.0)
    return net.eval()


ADAPTERS = {
    "snntorch": lambda: from_snntorch(_snntorch_net()),
    "spikingjelly": lambda: from_spikingjelly(_spikingjelly_net()),
}


def _data():
    torch.manual_seed(5)
    x = torch.rand(N, 1, 8, 8) * 3.0
    return x, torch.randint(0, K, (N,))


def _cum_logits(snn, x):
    snn.reset()
    with torch.no_grad():
        y = snn(x.unsqueeze(0).expand(T, *x.shape)).cumsum(0)
    snn.reset()
    return y


@pytest.mark.parametrize("framework", sorted(ADAPTERS))
def test_calibration_anytime_and_streaming(framework):
    snn = ADAPTERS[framework]().eval()
    x, labels = _data()
    Y = _cum_logits(snn, x)
    labels = Y[-1].argmax(-1)  # the network's own answers: the rules have something to keep
    for rule in (
        TopKCutoff(epsilon=0.0).calibrate(Y, labels),
        RiskControlledCutoff("topk", risk=0.2, delta=0.2).calibrate(Y, labels),
    ):
        offline = rule.exit_steps(Y)
        result = AnytimeClassifier(snn, rule, T=T).run(x)
        assert torch.equal(result.exit_steps, offline)
        rows = torch.arange(N)
        assert torch.equal(result.predictions, Y[offline - 1, rows].argmax(-1))
        assert result.sops is not None and int(result.sops.sum()) > 0

    rule = TopKCutoff(epsilon=0.0).calibrate(Y, labels)
    engine = AnytimeClassifier(snn, rule, T=T).run(x[:5])
    stream = StreamingClassifier(snn, rule, T=T)
    for i in range(5):
        stream.open(i)
    frames = {i: x[i].unsqueeze(0).expand(T, *x[i].shape) for i in range(5)}
    decisions = {d.stream_id: d for d in stream.feed_many(frames)}
    for i in range(5):
        assert decisions[i].step == int(engine.exit_steps[i])
        assert decisions[i].prediction == int(engine.predictions[i])


@pytest.mark.parametrize("framework", sorted(ADAPTERS))
def test_operation_counts_see_the_adapted_neurons(framework):
    snn = ADAPTERS[framework]().eval()
    x, _ = _data()
    spikes = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, out, name=name: spikes.__setitem__(name, out))
        for name, m in snn.named_modules()
        if type(m).__name__ == "MirroredLIF"
    ]
    with OpCounter(snn) as counter:
        snn.reset()
        with torch.no_grad():
            snn(x.unsqueeze(0).expand(T, *x.shape))
    for h in hooks:
        h.remove()
    counts = counter.pop()
    assert set(counts.spikes) == set(spikes) and len(spikes) == 2
    for name, out in spikes.items():
        assert int(counts.spikes[name].sum()) == int((out != 0).sum())
    assert int(counts.total_sops().sum()) > 0 and counts.ann_macs > 0


def test_snntorch_readout_of_spike_counts_runs_anytime():
    """A network whose output is the last layer's spikes (snnTorch's usual read-out)."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Linear(8, 12),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(12, K),
        snn.Leaky(beta=0.9, init_hidden=True, output=True),
    ).eval()
    with torch.no_grad():
        net[2].weight.mul_(3.0)
    x = torch.rand(N, 8) * 2
    snn_ = from_snntorch(net).eval()
    reference = snntorch_outputs(net, x.unsqueeze(0).expand(T, N, 8))
    Y = reference.cumsum(0)
    rule = TopKCutoff(epsilon=0.0).calibrate(Y, Y[-1].argmax(-1))
    result = AnytimeClassifier(snn_, rule, T=T).run(x)
    assert torch.equal(result.exit_steps, rule.exit_steps(Y))
