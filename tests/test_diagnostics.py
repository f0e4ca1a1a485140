"""Layer diagnostics: hand-computed dynamics, chunked runs, and real converted/trained SNNs."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from spikecut.config import load_config
from spikecut.diagnostics import evenly_spaced_subset, run_diagnostics, temporal_diagnostics
from spikecut.experiment import load_run_snn, run_experiment
from spikecut.neurons import IF, LIF, SpikingNetwork

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _two_neuron_net(time_chunk=None) -> SpikingNetwork:
    # currents pass straight to two IF neurons (θ = 1, soft reset, v_init = 0)
    return SpikingNetwork(nn.Sequential(nn.Flatten(), IF(threshold=1.0)), time_chunk=time_chunk)


def _cos(a, b):
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.hypot(*a) * math.hypot(*b))


@pytest.mark.parametrize("time_chunk", [None, 1, 3])
def test_hand_computed_rates_and_cosines(time_chunk):
    # constant currents 0.6 and 0.3 for T = 4:
    #   a: u = .6, 1.2 (spike, v .2), .8, 1.4 (spike, v .4) -> r = .6, 1.2, .8, 1.4
    #   b: u = .3, .6, .9, 1.2 (spike, v .2)                -> r = .3, .6, .9, 1.2
    data = TensorDataset(torch.tensor([[0.6, 0.3]]), torch.tensor([0]))
    d = temporal_diagnostics(_two_neuron_net(time_chunk), data, 4)
    assert d["layers"] == ["body.1"] and d["samples"] == 1 and d["T"] == 4
    assert d["firing_rate"][0] == pytest.approx([0.0, 0.5, 0.0, 1.0])
    responses = [(0.6, 0.3), (1.2, 0.6), (0.8, 0.9), (1.4, 1.2)]
    expected = [_cos(r, responses[-1]) for r in responses]
    assert d["cosine_to_final"][0] == pytest.approx(expected, abs=1e-6)  # float32 net
    assert max(expected[:-1]) < 0.995  # far from 1 beyond the tolerance


def test_frames_zero_responses_and_the_sample_mean():
    # frames [B, T, 2]: sample 0 is silent until t = 2 (cosine 0 at t = 1);
    # sample 1 never responds (both zero: cosine 1 by convention)
    frames = torch.tensor(
        [
            [[0.0, 0.0], [0.5, 0.2], [0.5, 0.2]],
            [[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]],
        ]
    )
    d = temporal_diagnostics(
        _two_neuron_net(), TensorDataset(frames, torch.tensor([0, 1])), 3, frames=True
    )
    # sample 0: r = (0, 0), (.5, .2), (1 + 0, .4)  [u = 1.0 is not > θ: no spike, v = 1.0]
    c0 = [0.0, _cos((0.5, 0.2), (1.0, 0.4)), 1.0]
    assert d["cosine_to_final"][0] == pytest.approx([(c + 1.0) / 2 for c in c0], abs=1e-6)
    assert d["firing_rate"][0] == pytest.approx([0.0, 0.0, 0.0])


def test_evenly_spaced_subset_spans_the_dataset():
    data = TensorDataset(torch.arange(10.0), torch.arange(10))
    sub = evenly_spaced_subset(data, 4)
    assert [int(sub[i][1]) for i in range(len(sub))] == [0, 3, 6, 9]
    assert evenly_spaced_subset(data, 50) is data and evenly_spaced_subset(data, None) is data


def test_a_network_without_neurons_is_refused():
    data = TensorDataset(torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="no spiking neurons"):
        temporal_diagnostics(SpikingNetwork(nn.Linear(2, 2)), data, 2)


@pytest.mark.parametrize("method", ["conversion", "direct"])
def test_diagnostics_of_a_real_run(tmp_path, method):
    """Converted IF (spike amplitude θ) and trained LIF networks on the digits test split."""
    cfg = load_config(
        CONFIGS / "digits-qcfs.yaml",
        [
            f"method={method}",
            "train.epochs=1",
            "T=4",
            "runs=[{name: a, alpha: 0.002}]",
            "cutoff.rules=[topk]",
            "cutoff.epsilons=[0.0]",
        ],
    )
    run_experiment(cfg, tmp_path, progress=False)
    found = run_diagnostics(tmp_path, ["a"], samples=120, batch_size=50, progress=False)
    d = found["a"]
    snn, _, _ = load_run_snn(tmp_path, "a")
    names = [n for n, m in snn.named_modules() if isinstance(m, LIF)]  # IF is a LIF
    assert d["layers"] == names and len(names) >= 2
    assert d["samples"] == 120 and d["T"] == 4
    for rates, cosines in zip(d["firing_rate"], d["cosine_to_final"], strict=True):
        assert len(rates) == 4 and len(cosines) == 4
        assert all(0.0 <= r <= 1.0 for r in rates) and max(rates) > 0.0
        assert all(0.0 <= c <= 1.0 + 1e-12 for c in cosines)
        assert cosines[-1] == pytest.approx(1.0, abs=1e-12)
        assert min(cosines[:-1]) < 1.0 - 1e-6  # earlier responses are not all final already
