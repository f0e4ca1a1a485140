"""benchmarks/gpu_graphs.py (the owed GPU check of the graphed strategy), run on the CPU
at toy size with the captured steps replayed eagerly: the same code the GPU run takes."""

import json

import pytest
from benchmark_script import load_benchmark


def test_every_strategy_is_timed_against_full_t_and_agrees_with_the_offline_rule(tmp_path):
    script = load_benchmark("gpu_graphs")
    argv = ["--out", str(tmp_path), "--device", "cpu", "--models", "digits-cnn"]
    argv += ["--batches", "1,5", "--samples", "10", "--repeats", "1", "--eager-graphs"]
    assert script.main(argv) == 0
    result = json.loads((tmp_path / "gpu_graphs.json").read_text())
    assert result["device"] == "cpu"
    assert [(r["model"], r["batch"]) for r in result["rows"]] == [
        ("digits-cnn", 1),
        ("digits-cnn", 5),
    ]
    for row in result["rows"]:
        assert set(row["strategies"]) == set(script.STRATEGIES)
        assert 1.0 <= row["mean_exit"] < row["T"]  # the rule lets samples leave early
        for name, got in row["strategies"].items():
            assert got["agreement"] == 1.0, name
            assert got["us_per_sample"] > 0 and got["graph_failures"] == []
            expected = row["full_us_per_sample"] / got["us_per_sample"]
            assert got["vs_full"] == pytest.approx(expected)
    table = (tmp_path / "gpu_graphs.md").read_text()
    assert "| digits-cnn | 5 |" in table and "graphed" in table
    assert not list(tmp_path.glob("*.tmp"))
