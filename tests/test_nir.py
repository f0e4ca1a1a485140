"""spikecut.nir: export refuses what NIR cannot express, approximates on request, and
export → write → read → load computes what the network computes."""

import subprocess
import sys

import nir
import numpy as np
import pytest
import torch
from torch import nn

from spikecut import nir as scnir
from spikecut.convert import to_snn, to_trainable_snn
from spikecut.interop import MirroredLIF
from spikecut.layers import QCFS
from spikecut.neurons import IF, LIF, SpikingNetwork

T, B = 6, 4


def _direct_net(bn: bool = False) -> SpikingNetwork:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    layers += [nn.BatchNorm2d(4)] if bn else []
    layers += [
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
        nn.ReLU(),
        nn.Linear(10, 3),
    ]
    snn = to_trainable_snn(nn.Sequential(*layers)).eval()
    with torch.no_grad():
        snn.body[0].weight.mul_(3.0)
        snn.body[-3].weight.mul_(3.0)
        if bn:
            snn.body[1].running_var.fill_(0.7)
            snn.body[1].running_mean.fill_(0.05)
    return snn


def _x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(T, B, 1, 8, 8) * 2.0


def _run(snn, x):
    snn.reset()
    with torch.no_grad():
        out = snn(x)
    snn.reset()
    return out


def _roundtrip(graph, tmp_path):
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    return path


def test_export_write_read_load_is_exact(tmp_path):
    snn, x = _direct_net(), _x()
    graph = scnir.export(snn, x)
    assert graph.metadata["spikecut_dt"] == scnir.DT and graph.metadata["spikecut_approximate"] == 0
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert kinds == [
        "Input",
        "Conv2d",
        "LIF",
        "AvgPool2d",
        "Flatten",
        "Affine",
        "LIF",
        "Affine",
        "Output",
    ]
    lif = graph.nodes["1"]
    assert np.allclose(lif.tau, scnir.DT / (1 - 0.5)) and np.allclose(lif.r, lif.tau / scnir.DT)
    loaded = scnir.load(_roundtrip(graph, tmp_path))
    assert isinstance(loaded.body, nn.Sequential)
    reference = _run(snn, x)
    assert torch.equal(_run(loaded, x), reference)
    assert reference.abs().sum() > 0


def test_batchnorm_folded_and_amplitude_moved_into_weights(tmp_path):
    snn, x = _direct_net(bn=True), _x()
    snn.body[2].amplitude = 2.0  # spikes of value 2: moved into the next layer's weights
    graph = scnir.export(snn, x)
    assert "BatchNorm" not in str([type(n) for n in graph.nodes.values()])
    assert not any(type(n).__name__ == "Scale" for n in graph.nodes.values())
    loaded = scnir.load(_roundtrip(graph, tmp_path))
    assert (_run(loaded, x) - _run(snn, x)).abs().max() <= 1e-5


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.lif1 = LIF(leak=0.75)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.lif2 = IF(threshold=0.8, reset="hard", amplitude=0.5)
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        y = self.lif1(self.conv(x))
        y = self.lif2(self.conv2(y) + y)
        return self.fc(torch.flatten(y, 1))


def test_residual_graph_loads_as_a_graph_body(tmp_path):
    torch.manual_seed(2)
    snn, x = SpikingNetwork(_Residual()).eval(), _x()
    with torch.no_grad():
        snn.body.conv.weight.mul_(3.0)
    graph = scnir.export(snn, x)
    assert sum(dst == "conv2" for _, dst in graph.edges) == 1
    assert sum(dst == "lif2" for _, dst in graph.edges) == 2  # NIR sums a node's inputs
    loaded = scnir.load(_roundtrip(graph, tmp_path))
    assert type(loaded.body).__name__ == "GraphBody"
    assert (_run(loaded, x) - _run(snn, x)).abs().max() <= 1e-5


def _converted():
    torch.manual_seed(3)
    ann = nn.Sequential(nn.Linear(6, 8), QCFS(levels=4, threshold=1.0), nn.Linear(8, 3)).eval()
    return to_snn(ann)


def test_converted_network_is_refused_with_what_would_be_lost():
    with pytest.raises(scnir.NIRExportError) as info:
        scnir.export(_converted(), torch.rand(2, 3, 6))
    text = str(info.value)
    assert "module '1' (IF): subtractive (soft) reset" in text
    assert "initial membrane v_init=0.5" in text
    assert "approximate=True" in text


def test_approximate_export_records_the_approximation(tmp_path):
    snn, x = _converted(), torch.rand(4, 5, 6)
    graph = scnir.export(snn, x, approximate=True)
    read = nir.read(_roundtrip(graph, tmp_path))
    assert int(read.metadata["spikecut_approximate"]) == 1
    assert "1: subtractive (soft) reset" in str(read.metadata["spikecut_approximations"])
    assert "soft" in str(read.nodes["1"].metadata["spikecut_approximation"])
    loaded = scnir.load(read)
    neuron = loaded.body[1]
    assert neuron.reset_mode == "hard" and neuron.v_init == 0.0 and neuron.amplitude == 1.0
    # θ moved into the read-out weights: W·(θ·s) = (θ·W)·s
    theta = snn.body[1].threshold
    assert torch.allclose(loaded.body[2].weight, snn.body[2].weight * theta)


def test_unsupported_layers_are_refused_by_name():
    torch.manual_seed(4)
    body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), LIF(), nn.Flatten(), nn.Linear(18, 2))
    with pytest.raises(scnir.NIRExportError, match=r"module '1' \(MaxPool2d\): max pooling"):
        scnir.export(SpikingNetwork(body), torch.rand(2, 1, 1, 8, 8))
    mirrored = SpikingNetwork(nn.Sequential(nn.Linear(3, 3), MirroredLIF(1.0)))
    with pytest.raises(scnir.NIRExportError, match="only spikecut's own LIF/IF"):
        scnir.export(mirrored, torch.rand(2, 1, 3))


def _graph(neuron) -> nir.NIRGraph:
    w = np.eye(3, dtype=np.float32)
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([3])}),
            "fc": nir.Linear(weight=w),
            "n": neuron,
            "output": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[("input", "fc"), ("fc", "n"), ("n", "output")],
    )


def test_other_frameworks_conventions_are_recognised():
    ones = np.ones(3)
    x = torch.tensor([0.3, 0.6, 0.9, 0.2, 0.7]).view(5, 1, 1).expand(5, 1, 3).contiguous()
    for r in (1.0, 1e4):  # Sinabs/Norse/snnTorch write r = 1, SpikingJelly r = 1/dt
        loaded = scnir.load(_graph(nir.IF(r=r * ones, v_threshold=ones, v_reset=0 * ones)))
        assert isinstance(loaded.body[1], IF)
        assert _run(loaded, x)[:, 0, 0].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    # SpikingJelly's LIFNode(tau=2, decay_input=True): r = 1, tau = 2·dt, v_leak = v_reset
    sj = nir.LIF(tau=2e-4 * ones, r=ones, v_leak=0 * ones, v_threshold=ones, v_reset=0 * ones)
    neuron = scnir.load(_graph(sj)).body[1]
    assert isinstance(neuron, MirroredLIF)
    assert neuron.charge == "tau_decay_input" and neuron.tau == pytest.approx(2.0)
    # snnTorch's Leaky(beta=0.9): tau = dt/(1 - beta), r = tau/dt
    tau = 1e-4 / 0.1
    snn_node = nir.LIF(tau=tau * ones, r=tau / 1e-4 * ones, v_leak=0 * ones, v_threshold=ones)
    neuron = scnir.load(_graph(snn_node)).body[1]
    assert type(neuron) is LIF and neuron.leak == pytest.approx(0.9)
    # Norse's dt = 1e-3 has to be named
    norse = nir.LIF(tau=2e-3 * ones, r=2 * ones, v_leak=0 * ones, v_threshold=ones)
    with pytest.raises(scnir.NIRImportError, match="match no known convention"):
        scnir.load(_graph(norse))
    assert scnir.load(_graph(norse), dt=1e-3).body[1].leak == pytest.approx(0.5)


def test_load_refusals_name_the_node():
    ones = np.ones(3)
    cuba = nir.CubaLIF(tau_syn=ones, tau_mem=ones, r=ones, v_leak=0 * ones, v_threshold=ones)
    with pytest.raises(scnir.NIRImportError, match=r"node 'n' \(CubaLIF\) has no spikecut"):
        scnir.load(_graph(cuba))
    uneven = nir.IF(r=np.array([1.0, 1.0, 2.0]), v_threshold=ones, v_reset=0 * ones)
    with pytest.raises(scnir.NIRImportError, match=r"node 'n' \(IF\): r differs"):
        scnir.load(_graph(uneven))
    graph = _graph(nir.IF(r=ones, v_threshold=ones, v_reset=0 * ones))
    graph.edges.append(("n", "fc"))
    with pytest.raises(scnir.NIRImportError, match="recurrent edges"):
        scnir.load(graph)


def test_spikecut_imports_without_nir_and_says_how_to_install_it():
    code = (
        "import sys; sys.modules['nir'] = None\n"
        "import torch, spikecut, spikecut.nir as m\n"
        "try:\n"
        "    m.export(torch.nn.Linear(2, 2), torch.zeros(1, 1, 2))\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install 'spikecut[nir]'" in result.stdout
