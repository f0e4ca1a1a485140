"""benchmarks/anytime_overhead.py: the engine's own cost per sample, at toy size."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "anytime_overhead.py"


def load():
    spec = importlib.util.spec_from_file_location("anytime_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overhead_is_each_strategy_less_the_bare_call(tmp_path, capsys):
    script = load()
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
