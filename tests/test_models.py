"""The model registry and the small embedded-data networks."""

import inspect

import pytest
import torch
from torch import nn

from spikecut.layers import QCFS
from spikecut.models import available_models, create, model_info, register_model
from spikecut.models.small import mnist_cnn, small_cnn
from spikecut.models.vggsnn import vggsnn_tiny
from spikecut.registry import options_from


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


@pytest.mark.parametrize("name", available_models())
def test_registered_facts_build_a_model_for_that_input(name):
    """The registry's input shape and default classes describe what the factory builds."""
    info = model_info(name)
    assert info.input_shape is not None and info.num_classes is not None
    model = create(name).eval()  # the registered default number of classes
    with torch.no_grad():
        assert model(torch.rand(2, *info.input_shape)).shape == (2, info.num_classes)


def test_entry_points_list_their_builders_options():
    """An entry point's signature carries its builder's options, so typos fail early."""
    params = inspect.signature(mnist_cnn).parameters
    assert list(params)[:3] == ["num_classes", "width", "hidden"]
    assert params["in_channels"].default == 1 and params["activation"].default == "qcfs"
    assert params["activation"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.signature(vggsnn_tiny).parameters["input_size"].default == 34
    with pytest.raises(TypeError, match=r"'levles'.*accepted options: input_size, in_channels"):
        create("vggsnn-tiny", levles=2)
    with pytest.raises(TypeError, match="must take \\*\\*options"):
        options_from(small_cnn)(lambda num_classes: None)
