"""The QCFS-ANN training loop: it learns, it is reproducible, and it logs RCS at α = 0."""

import pytest
import torch

from spikecut.data import get_dataset
from spikecut.models import create
from spikecut.train import TrainConfig, seed_everything, train_ann


def train_once(alpha=0.0, seed=0, epochs=2):
    seed_everything(seed)
    model = create("digits-cnn", num_classes=10, threshold=2.0)
    data = get_dataset("digits", split="train", augment=True)
    result = train_ann(
        model,
        data,
        TrainConfig(epochs=epochs, batch_size=64, lr=0.05),
        alpha=alpha,
        seed=seed,
        progress=False,
    )
    return model, result


def test_training_learns_and_logs_rcs_even_without_its_weight():
    model, result = train_once(epochs=3)
    history = result.history
    assert [e.epoch for e in history] == [1, 2, 3]
    assert history[-1].task_loss < history[0].task_loss
    assert history[-1].train_accuracy > 0.8
    assert all(e.rcs > 0 for e in history)
    assert all(e.loss == pytest.approx(e.task_loss) for e in history)  # α = 0 adds nothing
    assert history[-1].lr == pytest.approx(0.0, abs=1e-12)  # cosine schedule ends at zero
    assert not model.training


def test_same_seed_gives_the_same_weights_and_alpha_changes_them():
    a, _ = train_once(seed=3)
    b, _ = train_once(seed=3)
    c, result = train_once(seed=3, alpha=0.05)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    changed = [
        not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True)
    ]
    assert any(changed)
    assert result.history[0].loss > result.history[0].task_loss


def test_bad_training_settings_are_refused():
    model = create("digits-cnn", num_classes=10)
    data = get_dataset("digits", split="test")
    with pytest.raises(ValueError, match="epochs"):
        train_ann(model, data, TrainConfig(epochs=0), progress=False)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_ann(model, data, TrainConfig(epochs=1, batch_size=10_000), progress=False)
