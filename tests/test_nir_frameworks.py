"""NIR across frameworks: graphs written by snnTorch and SpikingJelly load in spikecut with
their outputs, and spikecut's graphs load in snnTorch and SpikingJelly with spikecut's outputs
(where their importers are exact; the exceptions are asserted and documented in
docs/interop.md)."""

import nir
import pytest
import snntorch as snn
import torch
from snntorch.export_nir import export_to_nir
from snntorch.import_nir import import_from_nir as snntorch_import
from spikingjelly.activation_based import functional, layer, neuron
from spikingjelly.activation_based.nir_exchange import export_to_nir as sj_export
from spikingjelly.activation_based.nir_exchange import import_from_nir as sj_import
from torch import nn

from spikecut import nir as scnir
from spikecut.convert import to_trainable_snn
from spikecut.interop import from_snntorch, snntorch_outputs, spikingjelly_outputs

T, B = 6, 5


def _snntorch_mlp(reset: str) -> nn.Sequential:
    """snnTorch's exporter needs per-neuron tensors for beta and threshold (scalars fail NIR's
    type inference) and an unbatched sample; its Flatten and conv exports fail type checks in
    nir 1.0.8, so the network is an MLP."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(12, 16),
        snn.Leaky(
            beta=torch.full((16,), 0.8),
            threshold=torch.full((16,), 0.9),
            init_hidden=True,
            reset_mechanism=reset,
        ),
        nn.Linear(16, 4),
        snn.Leaky(
            beta=torch.full((4,), 0.7),
            threshold=torch.ones(4),
            init_hidden=True,
            reset_mechanism=reset,
            output=True,
        ),
    )
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[2].weight.mul_(3.0)
    return net.eval()


def _x(*shape) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(T, B, *shape) * 2.0


def _run(snn_, x):
    snn_.reset()
    with torch.no_grad():
        return snn_(x)


def test_snntorch_export_loads_in_spikecut_with_snntorchs_outputs(tmp_path):
    net, x = _snntorch_mlp("zero"), _x(12)
    graph = export_to_nir(net, x[0, 0])
    nir.write(tmp_path / "snntorch.nir", graph)
    loaded = scnir.load(tmp_path / "snntorch.nir")
    reference = snntorch_outputs(net, x)
    assert (_run(loaded, x) - reference).abs().max() <= 1e-6
    assert 0 < reference.sum() < reference.numel()


def test_snntorch_subtract_reset_does_not_survive_nir_but_the_live_adapter_is_exact():
    net, x = _snntorch_mlp("subtract"), _x(12)
    reference = snntorch_outputs(net, x)
    through_nir = _run(scnir.load(export_to_nir(net, x[0, 0])), x)
    assert (through_nir - reference).abs().max() > 0  # NIR was told v_reset = 0
    assert (_run(from_snntorch(net), x) - reference).abs().max() <= 1e-6


def _spikecut_lif(conv: bool):
    torch.manual_seed(2)
    if conv:
        ann = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 10),
            nn.ReLU(),
            nn.Linear(10, 3),
        )
        first, hidden = 0, 4
    else:
        ann = nn.Sequential(
            nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)
        )
        first, hidden = 0, 2
    snn_ = to_trainable_snn(ann).eval()  # the paper's LIF: leak 0.5, hard reset
    with torch.no_grad():
        snn_.body[first].weight.mul_(3.0)
        snn_.body[hidden].weight.mul_(3.0)
    return snn_


def test_spikecut_export_loads_in_snntorch_with_spikecuts_outputs():
    snn_, x = _spikecut_lif(conv=False), _x(12)
    module = snntorch_import(scnir.export(snn_, x))
    outputs, state = [], None
    with torch.no_grad():
        for x_t in x:
            out, state = module(x_t) if state is None else module(x_t, state)
            outputs.append(out)
    reference = _run(snn_, x)
    assert (torch.stack(outputs).float() - reference).abs().max() <= 1e-6
    assert reference.abs().sum() > 0


def test_snntorch_importer_is_not_exact_for_flatten():
    """snnTorch's importer builds nn.Flatten(start_dim=0) from NIR's batchless start_dim 0, so
    a conv network's flatten swallows the batch; SpikingJelly's importer shifts it."""
    snn_, x = _spikecut_lif(conv=True), _x(1, 8, 8)
    module = snntorch_import(scnir.export(snn_, x))
    with pytest.raises(RuntimeError):
        module(x[0])


@pytest.mark.parametrize("conv", [False, True])
def test_spikecut_export_loads_in_spikingjelly_with_spikecuts_outputs(conv):
    snn_, x = _spikecut_lif(conv), _x(1, 8, 8) if conv else _x(12)
    module = sj_import(scnir.export(snn_, x), step_mode="m")
    functional.reset_net(module)
    with torch.no_grad():
        out, _ = module(x)
    reference = _run(snn_, x)
    assert (out - reference).abs().max() <= 1e-6
    assert reference.abs().sum() > 0


def test_spikingjelly_export_loads_in_spikecut_with_spikingjellys_outputs():
    torch.manual_seed(3)
    net = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, step_mode="m"),
        neuron.LIFNode(tau=2.0, decay_input=True, step_mode="m"),
        layer.AvgPool2d(2, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(64, 8, step_mode="m"),
        neuron.IFNode(step_mode="m"),
        layer.Linear(8, 3, step_mode="m"),
    ).eval()
    with torch.no_grad():
        net[0].weight.mul_(4.0)
        net[4].weight.mul_(3.0)
    x = _x(1, 8, 8)
    loaded = scnir.load(sj_export(net, x))
    reference = spikingjelly_outputs(net, x)
    assert (_run(loaded, x) - reference).abs().max() <= 1e-6
    assert reference.abs().sum() > 0
