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


def test_validation_split_is_carved_from_train_disjoint_stratified_and_unaugmented():
    from spikecut.data.splits import carve_validation

    train = get_dataset("digits", split="train", augment=True)
    plain = get_dataset("digits", split="train", augment=False)
    kept, kept_plain, validation = carve_validation(train, plain, 0.1, seed=0)
    assert len(validation) == round(0.1 * len(plain)) and len(kept) + len(validation) == len(plain)
    assert not set(kept.indices) & set(validation.indices)
    assert kept.indices == kept_plain.indices
    counts = torch.bincount(validation.labels, minlength=10)
    assert counts.min() >= 13 and counts.max() <= 16  # ~10 % of each of ~144 per class
    x, y = validation[0]
    x_plain, y_plain = plain[validation.indices[0]]
    assert torch.equal(x, x_plain) and y == y_plain  # no augmentation in validation
    assert validation.num_classes == 10


def test_best_epoch_on_the_validation_split_is_the_result():
    from spikecut.data.splits import carve_validation
    from spikecut.train import FitOptions, accuracy

    train = get_dataset("digits", split="train", augment=True)
    plain = get_dataset("digits", split="train", augment=False)
    train, _, validation = carve_validation(train, plain, 0.1, seed=0)
    seed_everything(0)
    model = create("digits-cnn", num_classes=10, threshold=2.0)
    # a high learning rate makes the later epochs worse than the best one often enough
    config = TrainConfig(epochs=4, batch_size=64, lr=0.5, select="best")
    options = FitOptions(validation=validation)
    result = train_ann(model, train, config, progress=False, options=options)
    scores = [e.validation_accuracy for e in result.history]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert result.selected_epoch == scores.index(max(scores)) + 1
    assert accuracy(model, validation, lambda net, x: net(x)) == pytest.approx(max(scores))
    with pytest.raises(ValueError, match="select='best' needs a validation split"):
        train_ann(model, train, config, progress=False, options=FitOptions())


def test_mixed_precision_bf16_trains_and_fp16_needs_cuda():
    model = create("digits-cnn", num_classes=10, threshold=2.0)
    data = get_dataset("digits", split="train", augment=False)
    result = train_ann(model, data, TrainConfig(epochs=1, precision="bf16"), progress=False)
    assert result.history[0].train_accuracy > 0.3  # it learns under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    with pytest.raises(ValueError, match="fp16' needs a CUDA device.*use 'bf16'"):
        train_ann(model, data, TrainConfig(epochs=1, precision="fp16"), progress=False)


def test_deep_qcfs_thresholds_stay_in_their_domain_and_the_network_converts():
    """Issue 10 at small scale: ResNet-20 with θ = 1 under SGD (lr 0.1, α = 0.002) turns QCFS
    thresholds through zero (the BN scale symmetry, see layers.QCFS); on MNIST-5k a θ <= 0
    layer went dead and the next BN's 1/sqrt(eps) blew the gradient up to NaN. The trainer
    projects θ back onto its floor (1 % of the initial θ): the floor is reached here, every θ
    stays above it, the loss stays finite and the network converts to an SNN."""
    from spikecut.convert import to_snn
    from spikecut.data import TensorImageDataset
    from spikecut.layers import QCFS

    digits = get_dataset("digits", split="train", augment=False)
    torch.manual_seed(0)
    index = torch.randperm(len(digits))[:256].tolist()
    x = torch.stack([digits[i][0] for i in index])
    data = TensorImageDataset(x, torch.tensor([digits[i][1] for i in index]), 10)
    seed_everything(0)
    model = create("resnet20", num_classes=10, in_channels=1, threshold=1.0)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.1)
    result = train_ann(model, data, config, alpha=0.002, progress=False)
    assert result.threshold_clamps > 0  # unconstrained, some θ left (0.01, ∞) ...
    thetas = [m.threshold.item() for m in model.modules() if isinstance(m, QCFS)]
    assert min(thetas) >= 0.01 - 1e-7  # ... and the projection held every one at its floor
    assert all(torch.isfinite(torch.tensor(e.loss)) for e in result.history)
    snn = to_snn(model)  # an IF neuron needs θ > 0: this raised ValueError before the floor
    out = snn(x[:8].unsqueeze(0).expand(4, -1, -1, -1, -1))
    assert out.shape == (4, 8, 10) and torch.isfinite(out).all()
