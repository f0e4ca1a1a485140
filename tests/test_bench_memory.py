"""The memory section of ``spikecut bench`` (quick size): rows, ratios, table, and that
time checkpointing lowers the training peak at the largest T."""

from __future__ import annotations

import json

import pytest
import torch

from spikecut.bench import runner
from spikecut.bench.memory import (
    MemoryConfig,
    _pass_call,
    measure_memory,
    memory_ratios,
    memory_section,
    render_memory,
)
from spikecut.speed import glibc


@pytest.mark.skipif(glibc() is None, reason="CPU peak memory needs Linux glibc")
def test_quick_memory_section_checkpointing_lowers_the_training_peak():
    """The training passes at the quick size, one process per point (the inference passes
    are the same machinery; their calls are checked below)."""
    training = ("training", "training+checkpoint")
    section = memory_section(quick=True, log=lambda _: None, passes=training)
    json.dumps(section)  # goes into the bench JSON as it is
    Ts = section["config"]["Ts"]
    assert [(r["pass"], r["T"]) for r in section["rows"]] == [(p, T) for p in training for T in Ts]
    peak = {(r["pass"], r["T"]): r["peak_mb"] for r in section["rows"]}
    assert all(r["seconds"] > 0 and r["cpu_seconds"] > 0 for r in section["rows"])
    # training memory grows with T; checkpointing keeps a fraction of it
    high, low = max(Ts), min(Ts)
    assert peak[("training", high)] > 1.5 * peak[("training", low)]
    assert peak[("training+checkpoint", high)] < 0.75 * peak[("training", high)]
    assert [r["pass"] for r in section["ratios"]] == ["training+checkpoint", "training"]
    text = render_memory(section)
    assert "| training+checkpoint |" in text and f"T = {high}" in text
    assert "| inference | — | — |" in text  # passes not measured are shown as such


@pytest.mark.parametrize("name", ["inference", "calibration"])
def test_inference_passes_run_the_evaluation_functions(name):
    cfg = MemoryConfig.quick()
    _pass_call(name, 3, cfg, torch.device("cpu"))()  # collect / calibrate: no error


def test_unknown_pass_is_refused():
    with pytest.raises(ValueError, match=r"unknown pass\(es\) \['testing'\]"):
        measure_memory(MemoryConfig.quick(), passes=["testing"])


def test_ratios_name_targets_and_whether_they_are_met():
    rows = [
        {"pass": p, "T": T, "peak_mb": v}
        for p, T, v in [
            ("inference", 4, 10.0),
            ("inference", 64, 14.0),
            ("calibration", 4, 10.0),
            ("calibration", 64, 20.0),
            ("training+checkpoint", 4, 100.0),
            ("training+checkpoint", 32, 150.0),
            ("training+checkpoint", 64, 250.0),
            ("training", 64, 1000.0),
        ]
    ]
    ratios = {r["pass"]: r for r in memory_ratios(rows)}
    assert (ratios["inference"]["ratio"], ratios["inference"]["met"]) == (1.4, True)
    assert (ratios["calibration"]["ratio"], ratios["calibration"]["met"]) == (2.0, False)
    # checkpointed training is judged at T = 32 (the target), not the largest T
    assert ratios["training+checkpoint"]["T"] == 32
    assert ratios["training+checkpoint"]["ratio"] == 1.5
    assert ratios["training"]["ratio"] == 4.0 and ratios["training"]["target"] is None


def test_bench_adds_the_section_when_asked(monkeypatch, tmp_path):
    from spikecut.bench import memory

    section = {"config": {"device": "cpu"}, "rows": [], "ratios": [], "method": "m"}
    monkeypatch.setattr(memory, "memory_section", lambda **kw: section)
    monkeypatch.setattr(memory, "render_memory", lambda s: "MEMORY TABLE")
    results = {
        "config": {"batch": 1, "steps": 1, "scale": 1, "device": "cpu", "repeats": 1, "warmup": 0},
        "machine": {"torch_threads": 1, "torch": "x", "processor": "p", "cpus_available": 1},
        "simulation": [],
        "missing_peers": {},
        "ratios": [],
        "agreement": [],
        "memory_method": "m",
        "anytime": [],
        "notes": [],
        "memory": section,
    }
    assert "MEMORY TABLE" in runner.render_markdown(results)
    del results["memory"]
    assert "MEMORY TABLE" not in runner.render_markdown(results)
