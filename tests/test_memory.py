"""Bounded memory: flat resident memory across evaluation batches, memory estimates, the
evaluation batch fitted to the device, and out-of-memory errors that say what to do."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from spikecut import experiment, memory, speed
from spikecut.cli import main
from spikecut.config import ConfigError, load_config
from spikecut.experiment import EvaluationOutOfMemory, run_experiment

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# A child process with the run's allocator setting evaluates a small converted conv net
# with OpCounter attached, and prints its resident memory (GiB) before every batch.
_GROWTH_SCRIPT = """
import os, sys, json
import torch
from torch import nn
from spikecut.speed import keep_large_allocations
from spikecut.convert import to_snn
from spikecut.evaluate import collect_cum_logits
from spikecut.layers import QCFS
from spikecut.ops import OpCounter

assert keep_large_allocations()
torch.manual_seed(0)
ann = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1), QCFS(), nn.Conv2d(32, 32, 3, padding=1), QCFS(),
    nn.AvgPool2d(2), nn.Conv2d(32, 64, 3, padding=1), QCFS(), nn.AdaptiveAvgPool2d(1),
    nn.Flatten(), nn.Linear(64, 10),
)
snn = to_snn(ann)
page = os.sysconf("SC_PAGE_SIZE")
rss = []

class Images(torch.utils.data.Dataset):
    def __len__(self):
        return 40 * 32
    def __getitem__(self, i):
        if i % 32 == 0:  # the first item of a batch: what the batches before it left
            with open("/proc/self/statm") as f:
                rss.append(int(f.read().split()[1]) * page / 2**30)
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, 32, 32, generator=g), i % 10

with OpCounter(snn):
    collect_cum_logits(snn, Images(), 8, batch_size=32, progress=False)
print(json.dumps(rss))
"""


def _resident_per_batch() -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", _GROWTH_SCRIPT], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_resident_memory_stays_flat_across_evaluation_batches():
    """Repeated, since the growth this guards against depended on thread timing."""
    for _ in range(3):
        rss = _resident_per_batch()
        assert len(rss) == 40
        growth = max(rss[5:]) - rss[4]
        assert growth < 0.02, f"resident memory grew by {growth:.3f} GiB: {rss}"


def _conv_net(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 64, 10)
    )


def test_estimates_scale_with_batch_and_T_as_the_passes_do(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**40)
    item = torch.rand(3, 8, 8)

    def estimate(T, steps=None, batch=64):
        return memory.estimate_peaks(
            _conv_net(16),
            item,
            T=T,
            batch_size=batch,
            batch_size_eval=batch,
            device="cpu",
            training_steps=steps,
        )

    # BPTT keeps every step: training grows with T; the ANN's does not.
    assert estimate(32, steps=32).training > 7 * estimate(4, steps=4).training
    assert estimate(32).training == estimate(4).training
    # Evaluation runs in time chunks: once a chunk is below T its peak stops growing.
    big = dict(batch=4096)
    assert estimate(64, **big).evaluation == estimate(8, **big).evaluation
    assert estimate(4, batch=128).evaluation > estimate(4, batch=64).evaluation
    assert estimate(4).available == 2**40


def test_evaluation_batch_is_halved_until_it_fits():
    est = memory.MemoryEstimate(training=1, evaluation=1000, available=300)
    assert memory.fit_evaluation_batch(est, 500) == 62  # 2 bytes a sample: 125 needs 250 > 240
    assert memory.fit_evaluation_batch(memory.MemoryEstimate(1, 10, 300), 500) == 500
    assert memory.fit_evaluation_batch(memory.MemoryEstimate(1, 10**9, 1), 500) == 1


def test_auto_chunk_is_a_power_of_two_within_the_budget_and_T(monkeypatch):
    monkeypatch.setattr(speed, "_kept", False)
    assert memory.auto_chunk(memory.AUTO_CHUNK_BYTES // 5, "cpu") == 4
    assert memory.auto_chunk(memory.AUTO_CHUNK_BYTES * 10, "cpu") == 1
    assert memory.auto_chunk(1, "cpu", T=6) == 6
    assert memory.available_bytes("cpu") > 0


def test_auto_chunk_folds_more_where_freed_blocks_are_kept(monkeypatch):
    step = memory.AUTO_CHUNK_BYTES // 2
    monkeypatch.setattr(speed, "_kept", False)
    assert memory.auto_chunk(step, "cpu") == 2
    monkeypatch.setattr(speed, "_kept", True)
    assert memory.auto_chunk(step, "cpu") == memory.AUTO_CHUNK_BYTES_KEPT // step
    assert memory.auto_chunk(memory.AUTO_CHUNK_BYTES_KEPT + 1, "cpu") == 1


def _digits(*overrides):
    return load_config(
        CONFIGS / "digits-qcfs.yaml",
        ["train.epochs=1", "T=4", "runs=[{name: a, alpha: 0.0}]", "cutoff.rules=[topk]"]
        + list(overrides),
    )


def test_a_run_that_cannot_train_in_memory_stops_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    with pytest.raises(ConfigError, match=r"needs about .* lower train\.batch_size"):
        run_experiment(_digits(), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "checkpoints").exists()  # failed before the first epoch


def test_evaluation_batch_is_lowered_to_fit_and_the_report_says_so(tmp_path, monkeypatch):
    reference = run_experiment(_digits("batch_size_eval=64"), tmp_path / "a", progress=False)
    real = memory.estimate_peaks

    def squeezed(*args, **kwargs):  # room for training but for 8 evaluation samples only
        est = real(*args, **kwargs)
        per_sample = est.evaluation / kwargs["batch_size_eval"]
        room = int(per_sample * 8 / 0.8) + 1
        return memory.MemoryEstimate(0, est.evaluation, room)

    monkeypatch.setattr(memory, "estimate_peaks", squeezed)
    results = run_experiment(_digits("batch_size_eval=64"), tmp_path / "b", progress=False)
    assert results["memory"]["batch_size_eval"] == 8
    assert reference["memory"]["batch_size_eval"] == 64
    ref, run = reference["runs"][0], results["runs"][0]
    for key in ("snn_accuracy_per_t", "oct_mean", "beta", "calibration_accuracy_per_t"):
        assert run[key] == pytest.approx(ref[key]), key
    assert "Evaluation batch lowered** from 64 to 8" in (tmp_path / "b" / "report.md").read_text()


def test_out_of_memory_in_evaluation_is_one_line_that_says_resume(tmp_path, monkeypatch, capsys):
    def exhausted(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")

    monkeypatch.setattr(experiment, "_evaluate", exhausted)
    config = tmp_path / "digits.yaml"
    config.write_text((CONFIGS / "digits-qcfs.yaml").read_text())
    args = [
        "run",
        str(config),
        "--out",
        str(tmp_path / "r"),
        "--set",
        "train.epochs=1",
        "--set",
        "T=4",
        "--set",
        "runs=[{name: a, alpha: 0.0}]",
        "--quiet",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "ran out of memory in evaluation" in err and "--resume --set batch_size_eval=" in err
    assert (tmp_path / "r" / "weights" / "a.pt").is_file()  # the training is kept
    with pytest.raises(EvaluationOutOfMemory):
        run_experiment(_digits(), tmp_path / "s", progress=False)
    monkeypatch.undo()
    other = RuntimeError("shapes do not match")
    assert not experiment._is_out_of_memory(other)
