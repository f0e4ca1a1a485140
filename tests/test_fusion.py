"""BatchNorm folding and inference preparation: exact to float rounding, never in place."""

import pytest
import torch
from torch import nn

from spikecut.convert import to_snn
from spikecut.fusion import fold_batchnorm, prepare_for_inference
from spikecut.models import create
from spikecut.neurons import LIF, SpikingNetwork, reset


def randomise_batchnorms(model, seed=0):
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator))
                m.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.1)
                if m.affine:
                    m.weight.copy_(torch.randn(n, generator=generator))
                    m.bias.copy_(torch.randn(n, generator=generator))
    return model


def test_hand_computed_fold_of_a_linear_layer():
    linear = nn.Linear(1, 1)
    bn = nn.BatchNorm1d(1).eval()
    with torch.no_grad():
        linear.weight.fill_(2.0)
        linear.bias.fill_(1.0)
        bn.running_mean.fill_(3.0)
        bn.running_var.fill_(4.0 - bn.eps)  # √(σ²+ε) = 2
        bn.weight.fill_(5.0)
        bn.bias.fill_(-1.0)
    folded = fold_batchnorm(nn.Sequential(linear, bn))
    # W' = 2·5/2 = 5; b' = (1 − 3)·5/2 − 1 = −6
    assert folded[0].weight.item() == pytest.approx(5.0)
    assert folded[0].bias.item() == pytest.approx(-6.0)
    assert isinstance(folded[1], nn.Identity)


@pytest.mark.parametrize("affine", [True, False])
def test_folded_conv_and_linear_equal_the_original(affine):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6, affine=affine),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4, affine=affine)),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5),
        nn.BatchNorm1d(5, affine=affine),
    )
    model = randomise_batchnorms(model).eval()
    x = torch.randn(7, 3, 8, 8)
    folded = fold_batchnorm(model)
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules()) == 0
    assert torch.allclose(folded(x), model(x), atol=1e-5, rtol=1e-5)
    # the caller's model keeps its BatchNorms
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) == 3


def test_batchnorm_not_after_a_layer_is_kept():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 4), nn.BatchNorm1d(4))
    folded = fold_batchnorm(randomise_batchnorms(model).eval())
    assert isinstance(folded[0], nn.BatchNorm1d)
    assert isinstance(folded[3], nn.Identity)
    x = torch.randn(5, 4)
    assert torch.allclose(folded(x), model(x), atol=1e-5)


def test_training_mode_batchnorm_is_refused():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="training mode"):
        fold_batchnorm(model)


def test_batchnorm_without_running_statistics_is_refused():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False)).eval()
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(model)


def converted_mnist_net():
    torch.manual_seed(0)
    ann = create("mnist-cnn", num_classes=10, width=4, hidden=16)
    randomise_batchnorms(ann)
    with torch.no_grad():
        for m in ann.modules():
            if hasattr(m, "threshold") and isinstance(m.threshold, nn.Parameter):
                m.threshold.fill_(1.5)
    return to_snn(ann.eval())


@pytest.mark.parametrize("channels_last", [False, True])
def test_prepared_converted_network_gives_the_same_logits(channels_last):
    snn = converted_mnist_net()
    x = torch.rand(6, 3, 1, 28, 28) * 2
    expected = snn(x)
    reset(snn)
    fast = prepare_for_inference(snn, channels_last=channels_last)
    with torch.inference_mode():
        got = fast(x)
        # chunked stepping keeps working on the prepared copy
        reset(fast)
        stepped = torch.cat([fast(x[t : t + 1]) for t in range(x.shape[0])])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in snn.modules())
    assert all(not p.requires_grad for p in fast.parameters())
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.equal(stepped, got)
    assert expected.abs().sum() > 0


def test_prepare_keeps_neuron_settings_and_trained_snn_equivalence():
    torch.manual_seed(1)
    body = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), LIF(), nn.Flatten(), nn.Linear(64, 3)
    )
    snn = SpikingNetwork(randomise_batchnorms(body)).eval()
    x = torch.randn(4, 2, 2, 4, 4) * 3
    with torch.no_grad():
        expected = snn(x)
    fast = prepare_for_inference(snn)
    with torch.inference_mode():
        got = fast(x)
    assert isinstance(fast, SpikingNetwork)
    assert fast.time_chunk == "auto" and snn.time_chunk is None
    assert fast.neurons[0].extra_repr() == snn.neurons[0].extra_repr()
    assert torch.allclose(got, expected, atol=1e-5)


def test_non_module_is_a_clear_error():
    with pytest.raises(TypeError, match="nn.Module"):
        fold_batchnorm("model")
    with pytest.raises(TypeError, match="nn.Module"):
        prepare_for_inference(42)
