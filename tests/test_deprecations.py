"""Old public names keep working for one release, each with a DeprecationWarning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import spikecut as sc
from spikecut.config import parse_config
from spikecut.convert import to_trainable_snn
from spikecut.cutoff import ExitRule, TopKCutoff
from spikecut.data.events import make_events
from spikecut.data.framing import Framing, to_frames
from spikecut.data.registry import DATASETS
from spikecut.evaluate import calibration_cum_logits, collect_cum_logits
from spikecut.experiment import dataset_options
from spikecut.layers import TEBN
from spikecut.losses import tet_loss
from spikecut.regularizers import RCSRegularizer, window
from spikecut.train import TrainConfig, as_time_major, train_snn


def _snn() -> nn.Module:
    return to_trainable_snn(
        nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    )


def test_to_time_major_repeats_static_batches_and_transposes_frames() -> None:
    x = torch.arange(6.0).view(2, 3)
    assert torch.equal(sc.to_time_major(x, 4), x.expand(4, 2, 3))
    frames = torch.arange(24.0).view(2, 4, 3)
    assert torch.equal(sc.to_time_major(frames, 4, frames=True), frames.transpose(0, 1))
    with pytest.warns(DeprecationWarning, match="to_time_major"):
        assert torch.equal(as_time_major(frames, 4, False), frames.transpose(0, 1))


def test_collect_cum_logits_old_keywords_warn_and_agree() -> None:
    torch.manual_seed(0)
    snn = _snn()
    data = TensorDataset(torch.rand(5, 3, 4), torch.zeros(5, dtype=torch.long))
    new = collect_cum_logits(snn, data, 3, frames=True, progress=False)
    with pytest.warns(DeprecationWarning, match="repeat"):
        old = collect_cum_logits(snn, data, steps=3, repeat=False, progress=False)
    assert torch.equal(new[0], old[0])
    with pytest.raises(TypeError, match="both"):
        collect_cum_logits(snn, data, T=3, steps=3, progress=False)
    cal = calibration_cum_logits(snn, data, 3, frames=True, progress=False)
    with pytest.warns(DeprecationWarning, match="repeat"):
        old_cal = calibration_cum_logits(snn, data, steps=3, repeat=False, progress=False)
    assert torch.equal(cal[0], old_cal[0])


def test_train_snn_old_keywords_warn_and_train_the_same() -> None:
    data = TensorDataset(torch.rand(16, 4), torch.randint(0, 2, (16,)))
    config = TrainConfig(epochs=1, batch_size=8)
    results = []
    for kwargs in (
        {"T": 2, "frames": False, "rcs_rho": 0.5},
        {"steps": 2, "repeat": True, "rho": 0.5},
    ):
        torch.manual_seed(0)
        snn = _snn()
        if "steps" in kwargs:
            with pytest.warns(DeprecationWarning):
                results.append(train_snn(snn, data, config, progress=False, **kwargs))
        else:
            results.append(train_snn(snn, data, config, progress=False, **kwargs))
    assert results[0].history[0].loss == results[1].history[0].loss


def test_renamed_loss_layer_and_regulariser_keywords() -> None:
    outputs, labels = torch.randn(3, 4, 5), torch.randint(0, 5, (4,))
    with pytest.warns(DeprecationWarning, match="lam"):
        assert tet_loss(outputs, labels, lam=0.1) == tet_loss(outputs, labels, tet_lambda=0.1)
    with pytest.warns(DeprecationWarning, match="steps"):
        layer = TEBN(2, steps=3)
    assert layer.T == 3
    with pytest.warns(DeprecationWarning, match="TEBN.steps"):
        assert layer.steps == 3
    with pytest.warns(DeprecationWarning, match="steps"):
        assert to_trainable_snn(
            nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.ReLU()), tebn=True, steps=2
        ).neurons
    with pytest.warns(DeprecationWarning, match="rho"):
        assert RCSRegularizer(_snn(), rho=0.5).rho == 0.5
    with pytest.warns(DeprecationWarning, match=r"window\(steps"):
        assert window(steps=10, rho=0.5) == window(T=10, rho=0.5) == 5
    with pytest.raises(TypeError, match="both"):
        window(T=10, steps=10)


def test_framing_and_dataset_old_keywords() -> None:
    events = make_events([0, 1], [0, 1], [0, 10], [1, 0])
    with pytest.warns(DeprecationWarning, match="steps"):
        old = to_frames(events, (2, 2), steps=2)
    assert np.array_equal(old, to_frames(events, (2, 2), T=2))
    with pytest.warns(DeprecationWarning, match="steps"):
        framing = Framing((2, 2), steps=3)
    assert framing.T == 3 and framing.key()["steps"] == 3  # cache keys keep their field
    # the registry still accepts the old option names of the frame datasets
    DATASETS.check_options("cifar10-dvs", ["steps", "test_fraction"], fixed=("root", "split"))
    DATASETS.check_options("mnist5k-dvs", ["steps"], fixed=("root", "split"))


def test_config_data_options_steps_is_read_as_T() -> None:
    cfg = parse_config({"data": {"name": "mnist5k-dvs", "options": {"steps": 8}}, "T": 8})
    with pytest.warns(DeprecationWarning, match="steps"):
        opts = dataset_options(cfg, progress=False)
    assert opts["T"] == 8 and "steps" not in opts


def test_rule_check_ready_is_public_and_old_overrides_still_count() -> None:
    rule = TopKCutoff()
    with pytest.raises(RuntimeError, match="calibrate"):
        rule.check_ready(4)
    with pytest.warns(DeprecationWarning, match="_check_ready"), pytest.raises(RuntimeError):
        rule._check_ready(4)

    with pytest.warns(DeprecationWarning, match="_check_ready"):

        class OldRule(ExitRule):
            def _check_ready(self, T: int) -> None:
                raise RuntimeError("old rule not ready")

            def _criterion(self, cum_logits, steps):
                return torch.zeros(cum_logits.shape[:2], dtype=torch.bool)

    with pytest.raises(RuntimeError, match="old rule not ready"):
        sc.anytime.AnytimeClassifier(_snn(), OldRule(), T=2)


def test_registry_says_which_datasets_yield_frames_without_loading_them() -> None:
    from spikecut.data.registry import dataset_yields_frames

    assert dataset_yields_frames("mnist5k-dvs") is True
    assert dataset_yields_frames("cifar10-dvs") is True
    assert dataset_yields_frames("mnist5k") is False
    assert dataset_yields_frames("digits") is False
