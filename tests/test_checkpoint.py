"""Checkpoints: atomic, verified, plain data only; resume repeats the uninterrupted run."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spikecut.checkpoint import MAGIC, CheckpointError, load_checkpoint, save_checkpoint
from spikecut.data import get_dataset
from spikecut.models import create
from spikecut.train import FitOptions, TrainConfig, seed_everything, train_ann

ROOT = Path(__file__).resolve().parents[1]


def _state():
    return {"epoch": 3, "model": {"w": torch.arange(6.0).view(2, 3)}, "history": [{"loss": 0.5}]}


def test_round_trip_keeps_tensors_and_plain_data(tmp_path):
    path = save_checkpoint(tmp_path / "a.ckpt", _state())
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and state["history"] == [{"loss": 0.5}]
    assert torch.equal(state["model"]["w"], torch.arange(6.0).view(2, 3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # no temporary file left


def test_truncated_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "a.ckpt", _state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"a\.ckpt.*truncated.*promises \d+ bytes"):
        load_checkpoint(path)
    path.write_bytes(data[: len(MAGIC) + 5])  # cut inside the header
    with pytest.raises(CheckpointError, match="header"):
        load_checkpoint(path)


def test_modified_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "a.ckpt", _state())
    data = bytearray(path.read_bytes())
    data[-200] ^= 0x01  # one flipped bit in the payload
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 does not match.*modified"):
        load_checkpoint(path)


def test_other_files_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(_state(), plain)  # an ordinary torch file, not a spikecut checkpoint
    with pytest.raises(CheckpointError, match="not a spikecut checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.ckpt")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_payload_that_would_run_code_is_refused_even_with_a_valid_digest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({"model": _Exploit()}, protocol=2)
    import hashlib

    header = {"version": 1, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    path = tmp_path / "evil.ckpt"
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)
    with pytest.raises(CheckpointError, match="cannot load the payload as plain data"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "a.ckpt", _state())
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017  (a lambda cannot be pickled by torch.save)
        save_checkpoint(path, {"bad": lambda: 0})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


# --------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def digits():
    return get_dataset("digits", split="train", augment=True)


def _model():
    seed_everything(0)
    return create("digits-cnn", num_classes=10, threshold=2.0)


class _Crash(Exception):
    pass


def _crash_after(epoch):
    def hook(e):
        if e == epoch:
            raise _Crash

    return hook


def test_run_interrupted_after_an_epoch_resumes_to_the_same_weights(digits, tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05)
    whole = _model()
    full = train_ann(whole, digits, cfg, progress=False)

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(_Crash):
        train_ann(
            _model(),
            digits,
            cfg,
            progress=False,
            options=FitOptions(checkpoint=ckpt, on_epoch_end=_crash_after(1)),
        )
    assert load_checkpoint(ckpt)["epoch"] == 1
    resumed = _model()
    result = train_ann(
        resumed, digits, cfg, progress=False, options=FitOptions(checkpoint=ckpt, resume=True)
    )
    assert result.resumed_from == 1
    assert [e.epoch for e in result.history] == [1, 2, 3]
    assert [e.loss for e in result.history] == [e.loss for e in full.history]
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_resume_refuses_a_checkpoint_of_another_configuration(digits, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05)
    ckpt = tmp_path / "run.ckpt"
    train_ann(
        _model(), digits, cfg, progress=False, options=FitOptions(checkpoint=ckpt, fingerprint="a")
    )
    with pytest.raises(CheckpointError, match="another configuration"):
        train_ann(
            _model(),
            digits,
            cfg,
            progress=False,
            options=FitOptions(checkpoint=ckpt, resume=True, fingerprint="b"),
        )


def _spikecut(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "spikecut", *args], env


def test_cli_run_killed_mid_training_resumes_to_the_uninterrupted_result(tmp_path):
    """A real SIGKILL after the first checkpoint, then ``--resume``: same final weights."""
    overrides = [
        "--set",
        "train.epochs=12",
        "--set",
        "runs=[{name: a, alpha: 0.0}]",
        "--set",
        "cutoff.rules=[topk]",
        "--quiet",
    ]
    config = str(ROOT / "configs" / "digits-qcfs.yaml")
    cmd, env = _spikecut("run", config, "--out", str(tmp_path / "whole"), *overrides)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)

    out = tmp_path / "killed"
    cmd, env = _spikecut("run", config, "--out", str(out), *overrides)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoints" / "a.ckpt"
    deadline = time.monotonic() + 120
    while not ckpt.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["epoch"]
    (out / "checkpoints" / ".a.ckpt.stale.tmp").write_bytes(b"half a checkpoint")
    assert 1 <= killed_at < 12, f"the kill came too late (epoch {killed_at}) to test resuming"
    assert not (out / "results.json").exists()

    cmd, env = _spikecut("run", config, "--out", str(out), "--resume", *overrides)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    resumed = json.loads((out / "results.json").read_text())["runs"][0]
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())["runs"][0]
    assert resumed["train"]["resumed_from"] == killed_at
    assert not list(out.rglob(".*.tmp"))  # what the killed run left half-written is gone
    a = torch.load(out / "weights" / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "weights" / "a.pt", weights_only=True)
    for key in b:
        assert torch.equal(a[key], b[key]), key
    assert resumed["snn_accuracy_per_t"] == whole["snn_accuracy_per_t"]


def test_cli_resume_reuses_finished_runs_and_tampering_is_a_clear_error(tmp_path):
    overrides = ["--set", "train.epochs=1", "--set", "runs=[{name: a, alpha: 0.0}]", "--quiet"]
    config = str(ROOT / "configs" / "digits-qcfs.yaml")
    out = tmp_path / "r"
    cmd, env = _spikecut("run", config, "--out", str(out), *overrides)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    first = json.loads((out / "results.json").read_text())["runs"][0]

    # A finished run is taken from runs/a.json, not trained again.
    (out / "checkpoints" / "a.ckpt").write_bytes(b"garbage")
    cmd, env = _spikecut("run", config, "--out", str(out), "--resume", *overrides)
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    assert json.loads((out / "results.json").read_text())["runs"][0] == first

    # Without the saved run, resuming reads the (now broken) checkpoint: one-line error.
    (out / "runs" / "a.json").unlink()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "spikecut: error:" in done.stderr and "not a spikecut checkpoint" in done.stderr
    assert "Traceback" not in done.stderr
