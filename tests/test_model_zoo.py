"""The paper's model zoo (SPEC §8): exact parameter counts, output shapes, one activation
module per place, and both roads to an SNN (QCFS conversion, direct training)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spikecut.convert import to_snn, to_trainable_snn
from spikecut.fusion import fold_batchnorm
from spikecut.layers import QCFS
from spikecut.models import available_models, create
from spikecut.models.resnet import ZeroPadShortcut
from spikecut.neurons import IF, LIF

# ------------------------------------------------------------------ counting by hand


def conv(c_in, c_out, k=3):
    """A bias-free k×k convolution."""
    return c_in * c_out * k * k


def bn(c):
    return 2 * c


def linear(n_in, n_out):
    return n_in * n_out + n_out


def conv_bn(pairs):
    return sum(conv(i, o) + bn(o) for i, o in pairs)


def basic_block(c_in, c_out, projection):
    shortcut = conv(c_in, c_out, 1) + bn(c_out) if projection else 0
    return conv(c_in, c_out) + bn(c_out) + conv(c_out, c_out) + bn(c_out) + shortcut


VGG16_CONVS = [
    (3, 64), (64, 64),
    (64, 128), (128, 128),
    (128, 256), (256, 256), (256, 256),
    (256, 512), (512, 512), (512, 512),
    (512, 512), (512, 512), (512, 512),
]  # fmt: skip
VGGSNN_CONVS = [
    (2, 64), (64, 128),
    (128, 256), (256, 256),
    (256, 512), (512, 512),
    (512, 512), (512, 512),
]  # fmt: skip
GESTURE_CONVS = [
    (2, 32), (32, 64),
    (64, 128), (128, 128),
    (128, 256), (256, 256),
    (256, 256), (256, 256),
]  # fmt: skip


def vgg16_count(k):
    return conv_bn(VGG16_CONVS) + linear(512, 4096) + linear(4096, 4096) + linear(4096, k)


def resnet20_count(k, projection):
    stem = conv(3, 16) + bn(16)
    stage1 = 3 * basic_block(16, 16, False)
    stage2 = basic_block(16, 32, projection) + 2 * basic_block(32, 32, False)
    stage3 = basic_block(32, 64, projection) + 2 * basic_block(64, 64, False)
    return stem + stage1 + stage2 + stage3 + linear(64, k)


def resnet_count(blocks, k):
    """CIFAR-stem ResNet-18/34 with projection shortcuts."""
    total, channels = conv(3, 64) + bn(64), 64
    for n, width in zip(blocks, (64, 128, 256, 512), strict=True):
        total += basic_block(channels, width, channels != width)
        total += (n - 1) * basic_block(width, width, False)
        channels = width
    return total + linear(512, k)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_hand_counts_match_the_standard_figures():
    # The commonly quoted counts of these definitions (K = 10, no conv bias).
    assert resnet_count((2, 2, 2, 2), 10) == 11_173_962
    assert resnet_count((3, 4, 6, 3), 10) == 21_282_122
    assert resnet20_count(10, projection=True) == 272_474
    assert resnet20_count(10, projection=False) == 269_722
    assert vgg16_count(10) == 33_642_442


# ------------------------------------------------------------------ parameter counts

COUNTS = [
    ("vgg16", {}, 10, vgg16_count(10)),
    ("vgg16", {}, 100, vgg16_count(100)),
    ("resnet18", {}, 10, 11_173_962),
    ("resnet18", {}, 200, 11_173_962 - linear(512, 10) + linear(512, 200)),
    ("resnet34", {}, 10, 21_282_122),
    ("resnet34", {}, 200, 21_282_122 - linear(512, 10) + linear(512, 200)),
    ("resnet20", {}, 10, resnet20_count(10, projection=False)),
    ("resnet20", {}, 100, resnet20_count(100, projection=False)),
    ("resnet20", {"shortcut": "projection"}, 10, 272_474),
    ("vggsnn", {}, 10, conv_bn(VGGSNN_CONVS) + linear(512 * 3 * 3, 10)),
    ("vggsnn", {"input_size": 128}, 10, conv_bn(VGGSNN_CONVS) + linear(512 * 8 * 8, 10)),
    ("vggsnn-ncaltech101", {}, 101, conv_bn(VGGSNN_CONVS) + linear(512 * 2 * 3, 101)),
    ("vggsnn-gesture", {}, 11, conv_bn(GESTURE_CONVS) + linear(256 * 2 * 2, 11)),
    ("vggsnn-tiny", {}, 10, conv_bn([(2, 16), (16, 32), (32, 64)]) + linear(64 * 4 * 4, 10)),
]


@pytest.mark.parametrize("name, options, k, expected", COUNTS)
def test_parameter_counts(name, options, k, expected):
    relu = create(name, num_classes=k, activation="relu", **options)
    assert n_params(relu) == expected
    # the QCFS version adds exactly one learned threshold per activation
    qcfs = create(name, num_classes=k, activation="qcfs", **options)
    n_qcfs = sum(isinstance(m, QCFS) for m in qcfs.modules())
    assert n_params(qcfs) == expected + n_qcfs


# ------------------------------------------------------------------ shapes and structure

# name, classes, input [C, H, W], number of activation modules
ZOO = [
    ("vgg16", 10, (3, 32, 32), 15),
    ("resnet18", 10, (3, 32, 32), 17),
    ("resnet34", 10, (3, 32, 32), 33),
    ("resnet20", 10, (3, 32, 32), 19),
    ("vggsnn", 10, (2, 48, 48), 8),
    ("vggsnn-ncaltech101", 101, (2, 45, 60), 8),
    ("vggsnn-gesture", 11, (2, 32, 32), 8),
]
IDS = [z[0] for z in ZOO]


def test_zoo_is_registered():
    assert {z[0] for z in ZOO} <= set(available_models())


@pytest.mark.parametrize(
    "name, options, k, shape",
    [
        ("vgg16", {}, 10, (3, 32, 32)),
        ("vgg16", {}, 200, (3, 64, 64)),
        ("resnet18", {}, 10, (3, 32, 32)),
        ("resnet18", {}, 200, (3, 64, 64)),
        ("resnet34", {}, 200, (3, 64, 64)),
        ("resnet20", {}, 100, (3, 32, 32)),
        ("vggsnn", {}, 10, (2, 48, 48)),
        ("vggsnn", {"input_size": 128}, 10, (2, 128, 128)),
        ("vggsnn-ncaltech101", {}, 101, (2, 45, 60)),
        ("vggsnn-gesture", {}, 11, (2, 32, 32)),
        ("resnet18", {"in_channels": 2}, 11, (2, 32, 32)),
    ],
)
def test_output_shapes(name, options, k, shape):
    model = create(name, num_classes=k, **options).eval()
    with torch.no_grad():
        y = model(torch.randn(2, *shape))
    assert y.shape == (2, k)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name, k, shape, n_acts", ZOO, ids=IDS)
@pytest.mark.parametrize("activation, kind", [("qcfs", QCFS), ("relu", nn.ReLU)])
def test_each_activation_is_its_own_module_called_once(name, k, shape, n_acts, activation, kind):
    model = create(name, num_classes=k, activation=activation).eval()
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
    acts = [m for m in model.modules() if isinstance(m, (QCFS, nn.ReLU))]
    assert len(acts) == n_acts and all(isinstance(a, kind) for a in acts)
    # no instance is registered under two names
    registered = [m for _, m in model.named_modules(remove_duplicate=False) if m in acts]
    assert len(registered) == n_acts
    calls = {id(a): 0 for a in acts}

    def count(module, _inp, _out):
        calls[id(module)] += 1

    handles = [a.register_forward_hook(count) for a in acts]
    with torch.no_grad():
        model(torch.randn(1, *shape))
    for h in handles:
        h.remove()
    assert list(calls.values()) == [1] * n_acts


def test_vgg16_dropout_follows_the_hidden_activations():
    classifier = create("vgg16", num_classes=10, dropout=0.3).classifier
    kinds = [type(m) for m in classifier]
    assert kinds == [nn.Linear, QCFS, nn.Dropout, nn.Linear, QCFS, nn.Dropout, nn.Linear]
    assert all(m.p == 0.3 for m in classifier if isinstance(m, nn.Dropout))
    plain = create("vgg16", num_classes=10).classifier
    assert not any(isinstance(m, nn.Dropout) for m in plain)
    with pytest.raises(ValueError, match="dropout"):
        create("vgg16", num_classes=10, dropout=1.0)


def test_zero_pad_shortcut_subsamples_and_pads_channels_with_zeros():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    y = ZeroPadShortcut(2, 6, stride=2)(x)
    assert y.shape == (1, 6, 2, 2)
    torch.testing.assert_close(y[:, 2:4], x[:, :, ::2, ::2])
    assert (y[:, :2] == 0).all() and (y[:, 4:] == 0).all()
    # odd sizes keep step with a stride-2 3×3 convolution (padding 1)
    odd = torch.randn(1, 2, 45, 45)
    conv_out = nn.Conv2d(2, 6, 3, stride=2, padding=1)(odd)
    assert ZeroPadShortcut(2, 6, 2)(odd).shape == conv_out.shape
    with pytest.raises(ValueError, match="only add channels"):
        ZeroPadShortcut(8, 4, 2)
    with pytest.raises(ValueError, match="shortcut"):
        create("resnet20", num_classes=10, shortcut="option-c")


# ------------------------------------------------------------------ to SNNs

STEPS, BATCH = 2, 2


@pytest.mark.parametrize("name, k, shape, n_acts", ZOO, ids=IDS)
def test_qcfs_version_converts_to_an_if_network(name, k, shape, n_acts):
    torch.manual_seed(0)
    ann = create(name, num_classes=k, activation="qcfs", levels=8, threshold=2.0)
    snn = to_snn(ann)
    assert snn.verified  # traced by torch.fx: no functional activations, no reused modules
    neurons = [m for m in snn.modules() if isinstance(m, LIF)]
    assert len(neurons) == n_acts
    assert all(isinstance(n, IF) and n.threshold == 2.0 for n in neurons)
    assert not any(isinstance(m, QCFS) for m in snn.modules())
    with torch.no_grad():
        out = snn(torch.randn(1, BATCH, *shape).expand(STEPS, BATCH, *shape))
    assert out.shape == (STEPS, BATCH, k)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, k, shape, n_acts", ZOO, ids=IDS)
def test_relu_version_trains_one_step_as_an_snn(name, k, shape, n_acts):
    torch.manual_seed(0)
    snn = to_trainable_snn(create(name, num_classes=k, activation="relu")).train()
    assert snn.verified
    assert sum(isinstance(m, LIF) for m in snn.modules()) == n_acts
    out = snn(torch.randn(STEPS, BATCH, *shape))
    assert out.shape == (STEPS, BATCH, k)
    loss = F.cross_entropy(out.mean(0), torch.randint(0, k, (BATCH,)))
    loss.backward()
    for pname, p in snn.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    # the surrogate gradient reaches the input end through every spiking layer
    first = next(m for m in snn.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_resnet_batchnorms_fold_into_their_convolutions(name):
    # conv and BN sit next to each other in nn.Sequentials, shortcut projections included
    torch.manual_seed(0)
    ann = create(name, num_classes=10, threshold=1.0)
    for m in ann.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    snn = to_snn(ann)
    folded = fold_batchnorm(snn)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(STEPS, BATCH, 3, 32, 32)
    with torch.no_grad():
        expected = snn(x)
        out = folded(x)
    assert expected.abs().max() > 0
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
