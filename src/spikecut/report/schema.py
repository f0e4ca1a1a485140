"""The schema of a results dict: what ``validate_results`` accepts, with the path of the
first thing it does not."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

_TOL = 1e-9
_DASH = "—"
_RULE_MARKERS = {"topk": "*", "softmax": "o", "entropy": "s", "fixed": "D"}
_SPARE_MARKERS = ("^", "v", "P", "X", "h", "<", ">")
_DPI = 110


# ----------------------------------------------------------------------------- validation


def validate_results(results: dict) -> None:
    """Check the results dict before anything is rendered or written.

    Raises ``ValueError`` naming the offending field's path (``runs[1].rules[3].accuracy``)
    with what was expected and what was found.
    """
    if not isinstance(results, dict):
        raise ValueError(f"results: expected a dict, found {_describe(results)}")
    _require_str(results, "experiment", "")
    T = _require(results, "T", "", "an integer >= 1")
    if not _is_int(T) or T < 1:
        raise ValueError(f"T: expected an integer >= 1, found {_describe(T)}")
    runs = _require(results, "runs", "", "a non-empty list of runs")
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"runs: expected a non-empty list of runs, found {_describe(runs)}")
    for key in ("config", "environment"):
        if key in results and not isinstance(results[key], dict):
            raise ValueError(f"{key}: expected a dict, found {_describe(results[key])}")
    for i, run in enumerate(runs):
        _validate_run(run, f"runs[{i}]", T)
    _validate_incomplete(results)
    _check_json(results, "")


def _validate_incomplete(results: dict) -> None:
    """``failed`` (runs whose training diverged) and ``not_run`` (names), both optional."""
    failed = results.get("failed", [])
    if not isinstance(failed, list):
        raise ValueError(f"failed: expected a list of failed runs, found {_describe(failed)}")
    for i, run in enumerate(failed):
        path = f"failed[{i}]"
        if not isinstance(run, dict):
            raise ValueError(f"{path}: expected a dict, found {_describe(run)}")
        for key in ("name", "error"):
            _require_str(run, key, path)
        _require_number(run, "alpha", path)
        epoch = _require(run, "epoch", path, "an integer >= 1")
        if not _is_int(epoch) or epoch < 1:
            raise ValueError(f"{path}.epoch: expected an integer >= 1, found {_describe(epoch)}")
    not_run = results.get("not_run", [])
    if not isinstance(not_run, list) or not all(isinstance(n, str) for n in not_run):
        raise ValueError(f"not_run: expected a list of run names, found {_describe(not_run)}")


def _validate_run(run: Any, path: str, T: int) -> None:
    if not isinstance(run, dict):
        raise ValueError(f"{path}: expected a dict, found {_describe(run)}")
    _require_str(run, "name", path)
    _require_number(run, "alpha", path)
    if _require(run, "ann_accuracy", path, "a number in [0, 1] or null") is not None:
        _require_number(run, "ann_accuracy", path, 0.0, 1.0)
    _require_series(run, "snn_accuracy_per_t", path, T, "a number in [0, 1]", _is_fraction)
    _require_number(run, "oct_mean", path, 1.0, float(T))
    if "oct_histogram" in run:
        _require_series(run, "oct_histogram", path, T, "an integer >= 0", _is_count)
    if run.get("beta") is not None:
        _require_series(run, "beta", path, T, "a finite number", _is_number)
    if "group" in run:
        _require_str(run, "group", path)
    if "train" in run and not isinstance(run["train"], dict):
        raise ValueError(
            f"{_join(path, 'train')}: expected a dict, found {_describe(run['train'])}"
        )
    if "ann_macs" in run:
        _require_number(run, "ann_macs", path, 0.0, None)
    if "firing_rates" in run:
        _validate_rates(run["firing_rates"], _join(path, "firing_rates"), T)
    rules = _require(run, "rules", path, "a list of rule results")
    if not isinstance(rules, list):
        raise ValueError(f"{_join(path, 'rules')}: expected a list, found {_describe(rules)}")
    for j, rule in enumerate(rules):
        _validate_rule(rule, f"{path}.rules[{j}]", T)
    guaranteed = run.get("guaranteed", [])
    if not isinstance(guaranteed, list):
        raise ValueError(
            f"{_join(path, 'guaranteed')}: expected a list, found {_describe(guaranteed)}"
        )
    for field in ("guaranteed", "guaranteed_sweep"):
        rows = run.get(field, [])
        if not isinstance(rows, list):
            raise ValueError(f"{_join(path, field)}: expected a list, found {_describe(rows)}")
        for j, rule in enumerate(rows):
            _validate_rule(rule, f"{path}.{field}[{j}]", T)
            for key in ("loss", "coverage"):
                if key in rule:
                    _require_number(rule, key, f"{path}.{field}[{j}]", 0.0, 1.0)
            if field == "guaranteed_sweep":
                _require_number(rule, "risk", f"{path}.{field}[{j}]", 0.0, 1.0)


def _validate_rule(rule: Any, path: str, T: int) -> None:
    if not isinstance(rule, dict):
        raise ValueError(f"{path}: expected a dict, found {_describe(rule)}")
    _require_str(rule, "rule", path)
    _require_number(rule, "epsilon", path, 0.0, None)
    _require_number(rule, "accuracy", path, 0.0, 1.0)
    _require_number(rule, "mean_exit", path, 1.0, float(T))
    for key in ("speedup", "accuracy_delta"):
        if key in rule:
            _require_number(rule, key, path)
    if "exit_histogram" in rule:
        _require_series(rule, "exit_histogram", path, T, "an integer >= 0", _is_count)
    for key in ("mean_sops", "energy_ratio"):
        if key in rule:
            _require_number(rule, key, path, 0.0, None)


def _validate_rates(rates: Any, path: str, T: int) -> None:
    """``firing_rates``: per spiking layer name, T spikes-per-neuron rates in [0, 1]."""
    if not isinstance(rates, dict):
        raise ValueError(f"{path}: expected a dict of layer rates, found {_describe(rates)}")
    for layer in rates:
        if not isinstance(layer, str):
            raise ValueError(f"{path}: expected layer names as keys, found {layer!r}")
        _require_series(rates, layer, path, T, "a number in [0, 1]", _is_fraction)


def _require(obj: dict, key: str, path: str, expected: str) -> Any:
    if key not in obj:
        raise ValueError(f"{_join(path, key)}: missing required key (expected {expected})")
    return obj[key]


def _require_str(obj: dict, key: str, path: str) -> None:
    value = _require(obj, key, path, "a string")
    if not isinstance(value, str):
        raise ValueError(f"{_join(path, key)}: expected a string, found {_describe(value)}")


def _require_number(
    obj: dict, key: str, path: str, lo: float | None = None, hi: float | None = None
) -> None:
    expected = _range_text(lo, hi)
    value = _require(obj, key, path, expected)
    ok = _is_number(value)
    if ok and lo is not None:
        ok = value >= lo - _TOL
    if ok and hi is not None:
        ok = value <= hi + _TOL
    if not ok:
        raise ValueError(f"{_join(path, key)}: expected {expected}, found {_describe(value)}")


def _require_series(
    obj: dict, key: str, path: str, T: int, item: str, check: Callable[[Any], bool]
) -> None:
    field = _join(path, key)
    value = _require(obj, key, path, f"a list of length T={T}")
    if not isinstance(value, list):
        raise ValueError(f"{field}: expected a list of length T={T}, found {_describe(value)}")
    if len(value) != T:
        raise ValueError(f"{field}: expected a list of length T={T}, found length {len(value)}")
    for t, x in enumerate(value):
        if not check(x):
            raise ValueError(f"{field}[{t}]: expected {item}, found {_describe(x)}")


def _check_json(value: Any, path: str) -> None:
    """Reject anything ``results.json`` could not hold (NaN, numpy scalars, sets, ...)."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path or 'results'}: expected a finite number, found {value!r}")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path or 'results'}: expected string keys, found {key!r}")
            _check_json(item, _join(path, key))
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")
        return
    raise ValueError(f"{path or 'results'}: expected a JSON value, found {_describe(value)}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_fraction(x: Any) -> bool:
    return _is_number(x) and -_TOL <= x <= 1 + _TOL


def _is_count(x: Any) -> bool:
    return _is_int(x) and x >= 0


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is None and hi is None:
        return "a finite number"
    if hi is None:
        return f"a number >= {lo:g}"
    return f"a number in [{lo:g}, {hi:g}]"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return f"{type(value).__name__} of length {len(value)}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})" if not isinstance(value, (int, float)) else text
