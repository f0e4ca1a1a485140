"""Every shipped config validates; each paper setting's first training step runs.

The paper's datasets cannot be shipped, so the first-step test feeds each configured model a
tiny synthetic batch of the shape its dataset gives (images ``[C, H, W]``, event frames
``[T, 2, H, W]``) through the real training loop, on the CPU in full precision.
"""

import dataclasses
from pathlib import Path

import pytest
import torch

from spikecut.config import load_config
from spikecut.data import TensorImageDataset
from spikecut.data.emulated import FrameTensorDataset
from spikecut.experiment import build_model
from spikecut.networks import build_trainable
from spikecut.train import train_ann, train_snn

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Not paper settings: the embedded testbeds and the CPU-sized CIFAR-10 (JPEG q75) setting, which
# tests/test_image_folder.py and tests/test_gpu_cifar_script.py cover.
PAPER = sorted(
    p for p in CONFIGS.glob("*.yaml") if not p.stem.startswith(("mnist5k", "digits", "cifar10jpeg"))
)

# What each paper dataset gives: classes, and the item shape of a static image dataset.
IMAGES = {"cifar10": (10, (3, 32, 32)), "cifar100": (100, (3, 32, 32))}
IMAGES["tiny-imagenet"] = (200, (3, 64, 64))
EVENTS = {"cifar10-dvs": 10, "ncaltech101": 101, "dvs128-gesture": 11}
# SPEC §7: steps per dataset
EVENT_STEPS = {"cifar10-dvs": 10, "ncaltech101": 10, "dvs128-gesture": 16}


def test_there_is_one_config_per_paper_setting():
    names = {p.stem for p in PAPER}
    assert names == {
        "cifar10-vgg16-qcfs",
        "cifar10-resnet18-qcfs",
        "cifar100-vgg16-qcfs",
        "cifar100-resnet18-qcfs",
        "tinyimagenet-resnet18-qcfs",
        "tinyimagenet-resnet34-qcfs",
        "cifar10-resnet18-tet",
        "cifar10-resnet18-tebn",
        "cifar100-resnet18-tet",
        "cifar100-resnet18-tebn",
        "cifar10dvs-vggsnn-tet",
        "ncaltech101-vggsnn-tet",
        "dvsgesture-vggsnn-tet",
    }


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_loads_and_validates(path):
    cfg = load_config(path, ["data.root=/data/somewhere"])
    assert cfg.name == path.stem
    assert cfg.data.root == "/data/somewhere"


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_config_follows_the_spec(path):
    cfg = load_config(path)
    alphas = [run.alpha for run in cfg.runs]
    assert 0.0 in alphas and any(a > 0 for a in alphas)  # α = 0 and an RCS α
    assert cfg.train.select == "best" and 0 < cfg.train.validation_fraction < 0.2
    if cfg.method == "conversion":
        assert cfg.model.levels == 4 and cfg.model.threshold == 8.0
        assert cfg.data.name in IMAGES
    else:
        assert cfg.direct.tebn == path.stem.endswith("tebn")
        assert cfg.direct.loss == ("mean" if cfg.direct.tebn else "tet")
    if cfg.data.name in EVENTS:
        assert EVENT_STEPS[cfg.data.name] == cfg.T
        assert cfg.train.batch_size == (32 if cfg.data.name == "dvs128-gesture" else 128)


def _synthetic(cfg, n=4):
    torch.manual_seed(0)
    if cfg.data.name in IMAGES:
        classes, shape = IMAGES[cfg.data.name]
        images = torch.randn(n, *shape)
        return TensorImageDataset(images, torch.arange(n) % classes, classes), classes
    classes = EVENTS[cfg.data.name]
    size = tuple(cfg.data.options["size"])
    frames = torch.randint(0, 3, (n, cfg.T, 2, *size), dtype=torch.uint8)
    return FrameTensorDataset(frames, torch.arange(n) % classes, classes), classes


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_config_first_training_step_runs(path):
    cfg = load_config(path)
    data, classes = _synthetic(cfg)
    step = dataclasses.replace(
        cfg.train, epochs=1, batch_size=2, precision="fp32", workers=0, validation_fraction=0.0
    )
    step.select = "last"
    torch.manual_seed(0)
    trained = build_trainable(cfg, classes)  # the experiment's own builder
    kwargs = {"alpha": cfg.runs[-1].alpha, "progress": False}
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    if cfg.method == "conversion":
        result = train_ann(trained, data, step, **kwargs)
        x = data[0][0].unsqueeze(0)
        assert trained.eval()(x).shape == (1, classes)
    else:
        d = cfg.direct
        result = train_snn(
            trained, data, step, T=cfg.T, loss=d.loss, frames=cfg.data.name not in IMAGES, **kwargs
        )
    log = result.history[0]
    assert torch.isfinite(torch.tensor([log.loss, log.rcs])).all()
    changed = [k for k, v in trained.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.endswith("weight") for k in changed)  # the optimiser step reached the weights


def test_mnist5k_resnet20_testbed_is_deep_one_channel_and_compares_rcs():
    """The deep conversion testbed (issue 10): ResNet-20 with QCFS on MNIST-5k, α = 0 against
    RCS-ANN, T large enough to see the climb from t = 1."""
    cfg = load_config(CONFIGS / "mnist5k-resnet20-qcfs.yaml")
    assert (cfg.method, cfg.data.name, cfg.model.name) == ("conversion", "mnist5k", "resnet20")
    assert [run.alpha for run in cfg.runs] == [0.0, 0.002]
    assert cfg.T >= 16 and cfg.model.levels == 8 and cfg.cutoff.calibration_samples == 1000
    torch.manual_seed(0)
    model = build_model(cfg, 10)
    assert model.stem[0].in_channels == 1
    x, y = torch.randn(4, 1, 28, 28), torch.arange(4)
    data = TensorImageDataset(x, y, 10)
    train = dataclasses.replace(cfg.train, epochs=1, batch_size=4)
    result = train_ann(model, data, train, alpha=cfg.runs[1].alpha, progress=False)
    assert result.history[0].rcs >= 0 and model(x).shape == (4, 10)  # RCS-ANN runs on it
