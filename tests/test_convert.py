"""Conversion exactness, what conversion builds, and the models it must refuse."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spikecut.convert import ConversionError, to_snn
from spikecut.layers import QCFS
from spikecut.models import create
from spikecut.neurons import IF, reset


def repeat(x, steps):
    return x.unsqueeze(0).expand(steps, *x.shape)


@pytest.mark.parametrize("levels", [2, 4, 8])
def test_snn_mean_over_L_steps_equals_qcfs_ann_exactly(levels):
    torch.manual_seed(levels)
    ann = nn.Sequential(nn.Linear(6, 32), QCFS(levels=levels, threshold=1.5), nn.Linear(32, 5))
    x = torch.randn(64, 6) * 2
    with torch.no_grad():
        expected = ann(x)
        out = to_snn(ann)(repeat(x, levels))
    assert out.shape == (levels, 64, 5)
    torch.testing.assert_close(out.mean(0), expected, rtol=0, atol=1e-5)
    # the hidden layer really quantises: most units are strictly inside (0, θ) in z
    assert not torch.allclose(expected, nn.Sequential(ann[0], nn.ReLU(), ann[2])(x))


def test_conversion_builds_if_neurons_from_learned_thresholds_and_leaves_ann_alone():
    ann = create("mnist-cnn", num_classes=10)
    with torch.no_grad():
        for i, q in enumerate(m for m in ann.modules() if isinstance(m, QCFS)):
            q.threshold.fill_(1.0 + i)
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    snn = to_snn(ann)
    neurons = snn.neurons
    assert [n.threshold for n in neurons] == [1.0, 2.0, 3.0]
    for n in neurons:
        assert isinstance(n, IF)
        assert n.leak == 1.0 and n.reset_mode == "soft"
        assert n.v_init == n.threshold / 2 and n.amplitude == n.threshold
    assert sum(isinstance(m, QCFS) for m in ann.modules()) == 3
    assert all(torch.equal(before[k], v) for k, v in ann.state_dict().items())
    assert not snn.training
    x = torch.randn(2, 1, 28, 28)
    y = snn(repeat(x, 3))
    assert y.shape == (3, 2, 10)


def test_deep_converted_net_converges_to_its_clipped_relu_counterpart():
    """As T grows the rates converge to clip(z, 0, θ) per layer (the QCFS net without its
    quantisation); the QCFS net itself is matched best around T = L."""
    torch.manual_seed(0)
    ann = nn.Sequential(
        nn.Linear(10, 64), QCFS(8, 2.0), nn.Linear(64, 64), QCFS(8, 2.0), nn.Linear(64, 4)
    ).eval()
    clipped = nn.Sequential(ann[0], nn.Hardtanh(0, 2.0), ann[2], nn.Hardtanh(0, 2.0), ann[4])
    x = torch.rand(256, 10)
    snn = to_snn(ann)
    to_clipped, to_qcfs = [], []
    with torch.no_grad():
        for steps in (1, 8, 16, 256):
            reset(snn)
            mean = snn(repeat(x, steps)).mean(0)
            to_clipped.append((mean - clipped(x)).abs().mean().item())
            to_qcfs.append((mean - ann(x)).abs().mean().item())
    assert to_clipped[0] > to_clipped[2] > to_clipped[3]
    assert to_clipped[3] < 0.1 * to_clipped[0]
    assert to_qcfs[1] == min(to_qcfs)


def test_relu_network_converts_with_data_based_thresholds():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    data = torch.randn(128, 4)
    snn = to_snn(ann, data=data, percentile=100.0)
    (neuron,) = snn.neurons
    with torch.no_grad():
        assert neuron.threshold == pytest.approx(F.relu(ann[0](data)).max().item())
    assert snn(repeat(data[:3], 4)).shape == (4, 3, 2)


class FunctionalReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)
        self.act = QCFS()

    def forward(self, x):
        return self.fc2(torch.relu(self.act(self.fc1(x))))


class Untraceable(nn.Module):
    """Data-dependent control flow defeats tracing; the functional ReLU is found at run time."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 8), QCFS(), nn.Linear(8, 2)

    def forward(self, x):
        h = self.act(self.fc1(x))
        if h.sum() > -1:
            h = F.relu(h)
        return self.fc2(h)


class SharedActivation(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.act = QCFS()

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


@pytest.mark.parametrize(
    "model, message",
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3), QCFS(), nn.MaxPool2d(2)), "max pooling at '2'"),
        (nn.Sequential(nn.Linear(2, 2), nn.GELU()), "unsupported activation GELU"),
        (nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), "no QCFS or nn.ReLU"),
        (nn.Sequential(nn.Linear(2, 2), nn.ReLU()), "pass data="),
        (FunctionalReLU(), r"torch.*relu.*as a function"),
        (SharedActivation(), r"'act' \(2 calls\)"),
    ],
)
def test_unconvertible_models_are_refused_with_the_reason(model, message):
    with pytest.raises(ConversionError, match=message):
        to_snn(model)


def test_untraceable_model_with_functional_activation_fails_on_first_call():
    snn = to_snn(Untraceable())
    with pytest.raises(ConversionError, match="relu"):
        snn(torch.randn(2, 3, 4))


def test_untraceable_clean_model_runs_after_its_check():
    class Clean(Untraceable):
        def forward(self, x):
            h = self.act(self.fc1(x))
            return self.fc2(h) if h.sum() > -1 else self.fc2(-h)

    snn = to_snn(Clean())
    assert snn(torch.randn(2, 3, 4)).shape == (2, 3, 2)
    assert snn.verified


def test_non_module_is_a_type_error():
    with pytest.raises(TypeError, match="nn.Module"):
        to_snn(lambda x: x)
