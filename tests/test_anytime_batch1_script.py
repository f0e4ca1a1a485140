"""benchmarks/anytime_batch1.py: plain full-T inference against the engine at batch 1, paired."""

import json

import pytest
import torch
from benchmark_script import load_benchmark
from torch import nn

from spikecut._anytime_costs import STRATEGIES
from spikecut.cutoff import TopKCutoff
from spikecut.neurons import LIF, SpikingNetwork

T = 4


def tiny_snn() -> SpikingNetwork:
    torch.manual_seed(0)
    return SpikingNetwork(nn.Sequential(nn.Linear(4, 8), LIF(leak=1.0), nn.Linear(8, 3))).eval()


def test_each_turn_is_one_ratio_of_plain_over_engine(monkeypatch):
    script = load_benchmark("anytime_batch1")
    times = [[0.6, 0.4, 0.9], [0.5, 0.5, 1.0]]  # plain, engine; three turns
    monkeypatch.setattr(
        script,
        "interleaved_seconds",
        lambda calls, device, turns, warmup: [c() or t for c, t in zip(calls, times, strict=True)],
    )
    rule = TopKCutoff(epsilon=0.0)
    rule.beta = torch.zeros(T)
    samples = [torch.randn(1, 4) for _ in range(5)]
    got = script.paired_batch1(tiny_snn(), samples, rule, T, frames=False, turns=3)
    assert got["ratios"] == pytest.approx([1.2, 0.8, 0.9])
    assert got["median"] == pytest.approx(0.9) and got["engine_won"] == 1
    assert got["q10"] <= got["median"] <= got["q90"]
    assert got["plain_us"] == pytest.approx(0.6 / 5 * 1e6)  # the median turn, per sample
    assert got["samples"] == 5 and got["turns"] == 3 and got["strategy"] in STRATEGIES
    with pytest.raises(ValueError, match="turns must be >= 1"):
        script.paired_batch1(tiny_snn(), samples, rule, T, frames=False, turns=0)


def test_frames_run_and_the_report_is_written_whole(tmp_path, monkeypatch, capsys):
    script = load_benchmark("anytime_batch1")
    rule = TopKCutoff(epsilon=0.0)
    rule.beta = torch.full((T,), float("inf"))  # never fires: every sample runs all T steps
    samples = [torch.randn(T, 1, 4) for _ in range(3)]
    got = script.paired_batch1(tiny_snn(), samples, rule, T, frames=True, turns=2)
    assert len(got["ratios"]) == 2 and got["plain_us"] > 0 and got["engine_us"] > 0

    monkeypatch.setattr(
        script, "measure_run", lambda folder, run, samples, turns: {"run": run, **got}
    )
    out = tmp_path / "b1.json"
    assert script.main(["results/x", "alpha=0", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["run"] == "alpha=0" and written["results"] == "results/x"
    assert written["ratios"] == got["ratios"]
    assert "faster in" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))
