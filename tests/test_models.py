"""The model registry and the small embedded-data networks."""

import pytest
import torch
from torch import nn

from spikecut.layers import QCFS
from spikecut.models import available_models, create, register_model


@pytest.mark.parametrize("name, shape", [("mnist-cnn", (1, 28, 28)), ("digits-cnn", (1, 8, 8))])
def test_small_models_shapes_and_activations(name, shape):
    model = create(name, num_classes=7, levels=8, threshold=3.0)
    assert model(torch.randn(4, *shape)).shape == (4, 7)
    acts = [m for m in model.modules() if isinstance(m, QCFS)]
    assert len(acts) == 3
    assert all(a.levels == 8 and a.threshold.item() == 3.0 for a in acts)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_relu_variant_has_no_qcfs():
    model = create("mnist-cnn", num_classes=10, activation="relu")
    assert not any(isinstance(m, QCFS) for m in model.modules())
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 3


def test_registry_errors():
    assert {"mnist-cnn", "digits-cnn"} <= set(available_models())
    with pytest.raises(ValueError, match="unknown model 'resnet9000'.*mnist-cnn"):
        create("resnet9000", num_classes=10)
    with pytest.raises(ValueError, match="num_classes"):
        create("mnist-cnn", num_classes=1)
    with pytest.raises(ValueError, match="already registered"):
        register_model("mnist-cnn")(lambda num_classes: nn.Identity())
    with pytest.raises(ValueError, match="activation"):
        create("digits-cnn", num_classes=10, activation="tanh")


def test_unknown_model_option_lists_the_accepted_ones():
    with pytest.raises(TypeError, match=r"'widht'.*accepted options: width, hidden"):
        create("mnist-cnn", num_classes=10, widht=8)
