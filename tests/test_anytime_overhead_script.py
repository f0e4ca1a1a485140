"""benchmarks/anytime_overhead.py: the engine's own cost per sample, at toy size."""

import json

import pytest
from benchmark_script import load_benchmark


def test_overhead_is_each_strategy_less_the_bare_call(tmp_path, capsys):
    script = load_benchmark("anytime_overhead")
    out = tmp_path / "overhead.json"
    assert script.main(["--T", "3", "--samples", "4", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["T"] == 3 and result["samples"] == 4
    assert set(result["strategies"]) == set(script.STRATEGIES)
    bare = result["bare_us_per_sample"]
    assert bare > 0
    for row in result["strategies"].values():
        assert row["us_per_sample"] > 0
        assert row["engine_us_per_sample"] == pytest.approx(row["us_per_sample"] - bare)
    assert "the engine's own" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))
