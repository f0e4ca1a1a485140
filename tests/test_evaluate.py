"""Collecting accumulated SNN outputs, the calibration pass, and the cutoff evaluation."""

import pytest
import torch

from spikecut import cutoff
from spikecut.convert import to_snn
from spikecut.data import get_dataset
from spikecut.evaluate import (
    ann_accuracy,
    calibration_cum_logits,
    collect_cum_logits,
    evaluate_cutoff,
)
from spikecut.layers import CalibrationDropout
from spikecut.models import create


@pytest.fixture(scope="module")
def snn_and_data():
    torch.manual_seed(0)
    ann = create("digits-cnn", num_classes=10, threshold=2.0).eval()
    test = get_dataset("digits", split="test")
    return to_snn(ann), ann, test


def test_collect_cum_logits_is_the_running_sum_of_per_step_outputs(snn_and_data):
    snn, _, test = snn_and_data
    cum, labels = collect_cum_logits(snn, test, 4, batch_size=100, progress=False)
    assert cum.shape == (4, len(test), 10) and torch.equal(labels, test.labels)
    x = test.images[:7]
    with torch.no_grad():
        snn.reset()
        per_step = snn(x.unsqueeze(0).expand(4, *x.shape))
    snn.reset()
    torch.testing.assert_close(cum[:, :7], per_step.cumsum(0))
    assert all(n.v is None for n in snn.neurons)  # state is not left behind


def test_frame_sequences_are_read_time_major(snn_and_data):
    snn, _, test = snn_and_data
    frames = test.images[:5].unsqueeze(1).repeat(1, 3, 1, 1, 1)  # [B, T, C, H, W]
    dataset = torch.utils.data.TensorDataset(frames, test.labels[:5])
    static, _ = collect_cum_logits(snn, test, 3, batch_size=5, progress=False)
    seq, _ = collect_cum_logits(snn, dataset, 3, frames=True, batch_size=5, progress=False)
    torch.testing.assert_close(seq, static[:, :5])
    with pytest.raises(ValueError, match="T=4"):
        collect_cum_logits(snn, dataset, 4, frames=True, progress=False)


def test_calibration_pass_adds_dropout_only_while_it_runs(snn_and_data):
    snn, _, test = snn_and_data
    plain, _ = collect_cum_logits(snn, test, 4, progress=False)
    no_drop, _ = calibration_cum_logits(snn, test, 4, dropout=0.0, progress=False)
    torch.testing.assert_close(no_drop, plain)
    a, _ = calibration_cum_logits(snn, test, 4, dropout=0.3, seed=1, progress=False)
    b, _ = calibration_cum_logits(snn, test, 4, dropout=0.3, seed=1, progress=False)
    c, _ = calibration_cum_logits(snn, test, 4, dropout=0.3, seed=2, progress=False)
    assert torch.equal(a, b) and not torch.equal(a, c)  # seeded, and really random
    assert not torch.allclose(a, plain)
    assert not any(isinstance(m, CalibrationDropout) for m in snn.modules())
    after, _ = collect_cum_logits(snn, test, 4, progress=False)
    torch.testing.assert_close(after, plain)


def test_calibration_noise_does_not_depend_on_batching_or_time_chunks(snn_and_data):
    snn, _, test = snn_and_data
    kwargs = {"dropout": 0.3, "seed": 4, "progress": False}
    state = torch.random.get_rng_state()
    whole, labels = calibration_cum_logits(snn, test, 6, batch_size=360, time_chunk=None, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is left alone
    for batch_size, chunk in [(7, 1), (100, 4), (64, "auto")]:
        other, other_labels = calibration_cum_logits(
            snn, test, 6, batch_size=batch_size, time_chunk=chunk, **kwargs
        )
        torch.testing.assert_close(other, whole, rtol=1e-5, atol=1e-5)
        assert torch.equal(other_labels, labels)


def test_evaluation_in_time_chunks_equals_the_whole_sequence(snn_and_data):
    snn, _, test = snn_and_data
    whole, _ = collect_cum_logits(snn, test, 5, time_chunk=None, progress=False)
    for chunk in (1, 2, "auto"):
        chunked, _ = collect_cum_logits(snn, test, 5, time_chunk=chunk, progress=False)
        torch.testing.assert_close(chunked, whole)
    assert snn.time_chunk is None  # the network's own setting is back


def test_ann_accuracy_counts_correct_predictions(snn_and_data):
    _, ann, test = snn_and_data
    with torch.no_grad():
        expected = (ann(test.images).argmax(1) == test.labels).float().mean().item()
    assert ann_accuracy(ann, test, batch_size=64) == pytest.approx(expected)


def test_evaluate_cutoff_reports_every_rule_and_sweep():
    torch.manual_seed(0)
    steps, n, k = 5, 300, 4
    labels = torch.randint(0, k, (n,))
    per_step = torch.randn(steps, n, k) + 1.5 * torch.nn.functional.one_hot(labels, k)
    cum = per_step.cumsum(0)
    out = evaluate_cutoff(cum, labels, cum, labels, rules=["topk", "entropy"], epsilons=[0, 0.05])
    assert out["snn_accuracy_per_t"] == cutoff.accuracy_per_step(cum, labels)
    octs = cutoff.oct_steps(cum, labels)
    assert out["oct_mean"] == pytest.approx(octs.float().mean().item())
    assert out["oct_histogram"] == [int((octs == t).sum()) for t in range(1, steps + 1)]
    assert [(r["rule"], r["epsilon"]) for r in out["rules"]] == [
        ("fixed", 0.0),
        ("topk", 0.0),
        ("topk", 0.05),
        ("entropy", 0.0),
        ("entropy", 0.05),
    ]
    topk = cutoff.TopKCutoff(0.0).calibrate(cum, labels)
    assert out["beta"] == pytest.approx(topk.beta.tolist())
    # calibrated and evaluated on the same data at ε = 0: nothing correct at T is lost
    assert out["rules"][1]["accuracy"] >= out["snn_accuracy_per_t"][-1]
