"""Experiment reports: results.json, report.md tables and PNG plots.

Everything here is a pure function of a *results dict* (its schema is what
``validate_results`` checks), so a report can be re-rendered later from ``results.json`` alone.
Files are written atomically; ``write_report`` renders everything in memory before it touches
the disk, so an invalid or unrenderable result leaves the output folder as it was.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from spikecut._io import atomic_write, atomic_write_json, atomic_write_text, slug

__all__ = [
    "load_results",
    "plot_accuracy_vs_timestep",
    "plot_beta",
    "plot_exit_histograms",
    "plot_tradeoff",
    "tradeoff_file",
    "render_markdown",
    "summary_table",
    "validate_results",
    "write_report",
]

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


# ----------------------------------------------------------------------------- formatting


def _pct(x: float | None) -> str:
    return _DASH if x is None else f"{100.0 * x:.2f}"


def _steps(x: float | None) -> str:
    return _DASH if x is None else f"{x:.2f}"


def _speedup(T: int, mean_exit: float | None) -> str:
    return _DASH if mean_exit is None else f"{T / mean_exit:.2f}×"


def _points(delta: float | None) -> str:
    """Accuracy change in percentage points, signed; never prints ``-0.00``."""
    if delta is None:
        return _DASH
    return f"{round(100.0 * delta, 2) + 0.0:+.2f}"


def _eps(eps: float) -> str:
    return f"{eps:.2f}" if abs(round(eps, 2) - eps) < _TOL else f"{eps:g}"


def _cell(text: str) -> str:
    return str(text).replace("|", r"\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    """Markdown table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = [_row(header), _row(align)]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


# ----------------------------------------------------------------------------- selection


def _base_rules(run: dict) -> list[dict]:
    """One entry per rule, in first-seen order: the one with the smallest ε (ε = 0 in a sweep)."""
    best: dict[str, dict] = {}
    for entry in run["rules"]:
        name = entry["rule"]
        if name not in best or entry["epsilon"] < best[name]["epsilon"]:
            best[name] = entry
    return list(best.values())


def _topk(run: dict) -> dict | None:
    return next((r for r in _base_rules(run) if r["rule"] == "topk"), None)


def _sweep(run: dict, rule: str) -> list[dict]:
    return sorted((r for r in run["rules"] if r["rule"] == rule), key=lambda r: r["epsilon"])


def _topk_sweep(run: dict) -> list[dict]:
    return _sweep(run, "topk")


_RULE_TITLES = {"topk": "Top-K", "softmax": "Softmax confidence", "entropy": "Entropy"}


def _rule_names(results: dict) -> list[str]:
    names: dict[str, None] = {}
    for run in results["runs"]:
        names.update((r["rule"], None) for r in _base_rules(run))
    return list(names)


def _final_acc(run: dict) -> float:
    return run["snn_accuracy_per_t"][-1]


# ----------------------------------------------------------------------------- markdown


def summary_table(results: dict) -> str:
    """The one-row-per-run summary table (markdown), as the README and the CLI print it;
    followed by the mean ± std table when runs were repeated over seeds."""
    validate_results(results)
    seeds = _seed_table(results)
    text = _summary_table(results) + (f"\n\nMean ± std over seeds:\n\n{seeds}" if seeds else "")
    incomplete = _incomplete_note(results)
    return text + (f"\n\n{incomplete}" if incomplete else "")


def _incomplete_note(results: dict) -> str:
    """One paragraph naming the runs that diverged and those never started; empty if none."""
    lines = [f"Failed: {run['error']}." for run in results.get("failed", [])]
    if results.get("not_run"):
        lines.append("Not run: " + ", ".join(results["not_run"]) + ".")
    return "\n".join(lines)


def _groups(results: dict) -> dict[str, list[dict]]:
    """Runs repeated over seeds, by their ``group`` (the run's name without the seed)."""
    groups: dict[str, list[dict]] = {}
    for run in results["runs"]:
        if "group" in run:
            groups.setdefault(run["group"], []).append(run)
    return groups


def _mean_std(values: Sequence[float | None], scale: float = 1.0) -> str:
    if any(v is None for v in values):
        return _DASH
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return f"{scale * mean:.2f} ± {scale * std:.2f}"


def _seed_table(results: dict) -> str:
    """Mean ± sample std per group of seed repetitions; empty when nothing was repeated."""
    groups = _groups(results)
    if not groups:
        return ""
    T = results["T"]
    header = [
        "Run",
        "α",
        "Seeds",
        "ANN acc %",
        f"SNN acc @T={T} %",
        "Mean OCT",
        "Top-K acc %",
        "Top-K exit",
    ]
    rows = []
    for name, runs in groups.items():
        tops = [_topk(run) for run in runs]
        row = [
            name,
            f"{runs[0]['alpha']:g}",
            str(len(runs)),
            _mean_std([r["ann_accuracy"] for r in runs], 100.0),
            _mean_std([_final_acc(r) for r in runs], 100.0),
            _mean_std([r["oct_mean"] for r in runs]),
        ]
        if all(t is not None for t in tops):
            row += [
                _mean_std([t["accuracy"] for t in tops], 100.0),
                _mean_std([t["mean_exit"] for t in tops]),
            ]
        else:
            row += [_DASH, _DASH]
        rows.append(row)
    return _table(header, rows)


def _summary_table(results: dict) -> str:
    T = results["T"]
    header = [
        "Run",
        "α",
        "ANN acc %",
        f"SNN acc @T={T} %",
        "Mean OCT",
        "OCT speed-up",
        "Top-K acc %",
        "Top-K exit",
        "Top-K speed-up",
        "Δacc (pts)",
    ]
    rows = [_summary_row(run, T) for run in results["runs"]]
    return _table(header, rows)


def _summary_row(run: dict, T: int) -> list[str]:
    acc_T = _final_acc(run)
    row = [
        run["name"],
        f"{run['alpha']:g}",
        _pct(run["ann_accuracy"]),
        _pct(acc_T),
        _steps(run["oct_mean"]),
        _speedup(T, run["oct_mean"]),
    ]
    top = _topk(run)
    if top is None:
        return row + [_DASH] * 4
    return row + [
        _pct(top["accuracy"]),
        _steps(top["mean_exit"]),
        _speedup(T, top["mean_exit"]),
        _points(top["accuracy"] - acc_T),
    ]


def render_markdown(results: dict) -> str:
    """The full human-readable report (markdown); optional parts are omitted when absent."""
    validate_results(results)
    return _render_markdown(results)


def _render_markdown(results: dict) -> str:
    T, runs = results["T"], results["runs"]
    parts = [
        f"# spikecut report: {results['experiment']}",
        _intro(results),
        "## Summary",
        _summary_table(results),
    ]
    if results.get("failed") or results.get("not_run"):
        parts += ["## Failed runs", _failed_table(results)]
    seeds = _seed_table(results)
    if seeds:
        parts += ["## Mean ± std over seeds", seeds]
    for run in runs:
        parts += [f"## Rules at ε = 0: {run['name']}", _rules_table(run, T)]
    if any(run.get("guaranteed") for run in runs):
        parts += ["## Guaranteed rules (held-out calibration)", _guarantee_note(results)]
        parts += [
            f"### {run['name']}\n\n{_guaranteed_table(run, T)}"
            for run in runs
            if run.get("guaranteed")
        ]
    for rule in _rule_names(results):
        if any(len(_sweep(run, rule)) > 1 for run in runs):
            title = _RULE_TITLES.get(rule, rule)
            parts += [f"## {title} ε sweep", _sweep_table(runs, rule)]
    if any("mean_sops" in r for run in runs for r in run["rules"]):
        parts += ["## Operations", _OPS_NOTE, _ops_table(runs)]
    if any(run.get("firing_rates") for run in runs):
        parts += ["## Firing rates", _rates_table(runs)]
    parts += ["## Accuracy against mean exit step", _tradeoff_section(runs)]
    parts += ["## Accuracy per timestep (fixed cutoff)", _per_t_table(runs, T)]
    if any(run.get("beta") is not None for run in runs):
        parts += ["## Top-K thresholds β_t", _beta_list(runs)]
    if any("train" in run for run in runs):
        parts += ["## Training", _train_table(runs)]
    if "config" in results:
        parts += ["## Config", _config_block(results["config"])]
    return "\n\n".join(parts) + "\n"


_METHODS = {
    "conversion": "QCFS-ANN converted to an SNN. ",
    "direct": "SNN trained directly (surrogate gradients); no ANN accuracy. ",
}


def _failed_table(results: dict) -> str:
    """The runs without results: diverged (with the epoch and lr) or never started."""
    rows = [
        [run["name"], f"{run['alpha']:g}", f"diverged at epoch {run['epoch']}", run["error"]]
        for run in results.get("failed", [])
    ]
    rows += [
        [name, _DASH, "not run", "the experiment stopped at the failure above"]
        for name in results.get("not_run", [])
    ]
    return _table(["Run", "α", "Status", "Message"], rows, numeric_from=4)


def _intro(results: dict) -> str:
    T, n = results["T"], len(results["runs"])
    method = _METHODS.get(results.get("method", ""), "")
    lines = [
        f"{method}T = {T} timesteps, {n} run{'s' if n != 1 else ''}. Accuracies in %, exits in "
        "timesteps (1..T); speed-up = T / mean exit step; Δacc = accuracy − SNN accuracy at T, "
        "in percentage points. OCT is the label-reading oracle (a lower bound on the exit step)."
    ]
    missing = len(results.get("failed", [])) + len(results.get("not_run", []))
    if missing:
        lines.append(
            f"**Incomplete:** {missing} configured run{'s' if missing != 1 else ''} "
            "without results (see Failed runs); the tables hold the runs that finished."
        )
    env = results.get("environment")
    if env:
        bits = [f"{k} {env[k]}" for k in ("spikecut", "torch", "device") if k in env]
        if _is_number(env.get("seconds")):
            bits.append(f"{env['seconds']:.1f} s")
        bits += [
            f"{k} {v}"
            for k, v in env.items()
            if k not in {"spikecut", "torch", "device", "seconds"}
        ]
        lines.append("Environment: " + ", ".join(bits) + ".")
    return "\n\n".join(lines)


def _rules_table(run: dict, T: int) -> str:
    acc_T = _final_acc(run)
    rows = [
        _rule_row(r["rule"], _eps(r["epsilon"]), r["accuracy"], r["mean_exit"], acc_T, T)
        for r in _base_rules(run)
    ]
    rows.append(_rule_row("OCT (oracle)", _DASH, acc_T, run["oct_mean"], acc_T, T))
    return _table(["Rule", "ε", "Acc %", "Mean exit", "Speed-up", "Δacc (pts)"], rows)


def _rule_row(label: str, eps: str, acc: float, mean_exit: float, acc_T: float, T: int) -> list:
    return [
        label,
        eps,
        _pct(acc),
        _steps(mean_exit),
        _speedup(T, mean_exit),
        _points(acc - acc_T),
    ]


def _guarantee_note(results: dict) -> str:
    split = results.get("calibration_split") or {}
    size = f"n = {split['size']} held-out samples" if split.get("size") else "a held-out split"
    return (
        f"Calibrated on {size} the network never trained on, without dropout. *-risk rules: "
        "Learn-then-Test certifies P(loss ≤ risk) ≥ 1 − δ, loss = share of samples correct at T "
        "and wrong at their exit (against the SNN at T, not the ANN; assumes calibration and "
        "test samples are exchangeable); not certified = too few samples, every sample runs to "
        "T. Bound = empirical calibration loss and its p-value. SpikeCP: conformal sets at "
        "every step, exit at the first with ≤ max set size labels; coverage ≥ 1 − α. "
        "Test loss, coverage and set size are measured on the test split."
    )


def tradeoff_file(run_name: str) -> str:
    """File name of a run's trade-off plot (accuracy against mean exit step)."""
    return f"tradeoff-{slug(run_name)}.png"


def _tradeoff_section(runs: list[dict]) -> str:
    """The trade-off plots, one per run, with what they show; the guaranteed points'
    numbers as a table where the run has them."""
    lines = [
        "Each rule's ε sweep is a line; the risk-controlled rules (held-out calibration) are "
        "points at each risk level, labelled by the risk; the paper's Top-K at ε = 0 is the "
        "star, OCT the oracle, and the square the SNN run for all T steps."
    ]
    for run in runs:
        lines.append(f"![{run['name']}]({tradeoff_file(run['name'])})")
        sweep = run.get("guaranteed_sweep") or []
        if sweep:
            rows = [
                [
                    r["rule"],
                    f"{r['risk']:g}",
                    "yes" if r.get("certified") else "no",
                    _pct(r["accuracy"]),
                    _steps(r["mean_exit"]),
                    _pct(r.get("loss")),
                ]
                for r in sweep
            ]
            header = ["Rule", "Risk", "Certified", "Acc %", "Mean exit", "Test loss %"]
            lines.append(f"{run['name']}, risk sweep (δ {sweep[0]['delta']:g}):")
            lines.append(_table(header, rows, numeric_from=1))
    return "\n\n".join(lines)


def _guaranteed_table(run: dict, T: int) -> str:
    acc_T = _final_acc(run)
    rows = []
    for r in run["guaranteed"]:
        if "risk" in r:
            level = f"risk {r['risk']:g}, δ {r['delta']:g}"
            if r.get("certified"):
                bound = f"{100.0 * r['empirical_risk']:.2f} % (p = {r['p_value']:.3f})"
            else:
                bound = f"not certified (p = {r['p_value']:.3f})"
        else:
            level = f"α {r['alpha']:g}, set ≤ {r['max_set_size']}"
            bound = _DASH
        rows.append(
            [
                r["rule"],
                level,
                str(r.get("n", _DASH)),
                bound,
                *_rule_row("", "", r["accuracy"], r["mean_exit"], acc_T, T)[2:],
                _pct(r.get("loss")),
                _pct(r.get("coverage")),
                _steps(r.get("mean_set_size")),
            ]
        )
    top = _topk(run)
    blank = [_DASH] * 3
    if top is not None:
        paper = _rule_row("", "", top["accuracy"], top["mean_exit"], acc_T, T)[2:]
        rows.append([f"topk (paper, ε = {_eps(top['epsilon'])})", _DASH, _DASH, _DASH, *paper])
        rows[-1] += blank
    rows.append(
        [
            "OCT (oracle)",
            _DASH,
            _DASH,
            _DASH,
            *_rule_row("", "", acc_T, run["oct_mean"], acc_T, T)[2:],
        ]
    )
    rows[-1] += blank
    header = ["Rule", "Level", "n", "Bound", "Acc %", "Mean exit", "Speed-up", "Δacc (pts)"]
    header += ["Test loss %", "Coverage %", "Set size"]
    return _table(header, rows, numeric_from=4)


def _sweep_table(runs: list[dict], rule: str) -> str:
    by_run = [{round(r["epsilon"], 9): r for r in _sweep(run, rule)} for run in runs]
    eps_values = sorted(set().union(*by_run))
    header = ["ε"]
    for run in runs:
        header += [f"{run['name']} acc %", f"{run['name']} exit"]
    rows = []
    for eps in eps_values:
        row = [_eps(eps)]
        for sweep in by_run:
            entry = sweep.get(eps)
            row += [_pct(entry["accuracy"]), _steps(entry["mean_exit"])] if entry else [_DASH] * 2
        rows.append(row)
    return _table(header, rows)


_OPS_NOTE = (
    "Per test sample, up to its exit step: SOPs = synaptic operations (spikes × fan-out) of "
    "the spike-driven layers; the first layer, which reads the analogue input, costs its "
    "MACs at every step. Energy ratio = E_ANN / E_SNN with 4.6 pJ per MAC and 0.9 pJ per "
    "SOP (45 nm): above 1 the SNN spends less energy than the equivalent ANN."
)


def _ops_table(runs: list[dict]) -> str:
    rows = []
    for run in runs:
        macs = run.get("ann_macs")
        for r in _base_rules(run):
            if "mean_sops" not in r:
                continue
            ratio = r.get("energy_ratio")
            rows.append(
                [
                    run["name"],
                    r["rule"],
                    _eps(r["epsilon"]),
                    _steps(r["mean_exit"]),
                    f"{r['mean_sops']:,.0f}",
                    _DASH if macs is None else f"{macs:,.0f}",
                    _DASH if ratio is None else f"{ratio:.2f}",
                ]
            )
    header = ["Run", "Rule", "ε", "Mean exit", "Mean SOPs", "ANN MACs", "E_ANN / E_SNN"]
    return _table(header, rows, numeric_from=2)


def _rates_table(runs: list[dict]) -> str:
    """Mean firing rate (spikes per neuron and step, %) of each spiking layer per run."""
    layers = list(dict.fromkeys(k for run in runs for k in run.get("firing_rates") or {}))
    rows = []
    for layer in layers:
        row = [layer]
        for run in runs:
            rates = (run.get("firing_rates") or {}).get(layer)
            row.append(_DASH if rates is None else _pct(sum(rates) / len(rates)))
        rows.append(row)
    return _table(["Layer"] + [f"{run['name']} rate %" for run in runs], rows)


def _per_t_table(runs: list[dict], T: int) -> str:
    rows = [[str(t + 1)] + [_pct(run["snn_accuracy_per_t"][t]) for run in runs] for t in range(T)]
    return _table(["t"] + [f"{run['name']} acc %" for run in runs], rows)


def _beta_list(runs: list[dict]) -> str:
    lines = []
    for run in runs:
        beta = run.get("beta")
        values = "none" if beta is None else "[" + ", ".join(f"{b:.4g}" for b in beta) + "]"
        lines.append(f"- **{run['name']}**: {values}")
    return "\n".join(lines)


def _train_table(runs: list[dict]) -> str:
    def num(train: dict, key: str, fmt: str) -> str:
        value = train.get(key)
        return format(value, fmt) if _is_number(value) else _DASH

    def best_validation(train: dict) -> str:
        scores = [e.get("validation_accuracy") for e in train.get("history", [])]
        scores = [s for s in scores if _is_number(s)]
        return f"{100 * max(scores):.2f}" if scores else _DASH

    rows = []
    for run in runs:
        train = run.get("train", {})
        rows.append(
            [
                run["name"],
                num(train, "epochs", "g"),
                num(train, "selected_epoch", "g"),
                best_validation(train),
                num(train, "final_loss", ".4f"),
                num(train, "final_rcs", ".4f"),
                num(train, "samples_per_second", ".0f"),
                num(train, "peak_memory_mb", ".0f"),
                num(train, "seconds", ".1f"),
            ]
        )
    headers = ["Run", "Epochs", "Kept epoch", "Best val. acc %", "Final loss", "Final RCS"]
    headers += ["Samples/s", "Peak GPU MiB", "Seconds"]
    return _table(headers, rows)


def _config_block(config: dict) -> str:
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip()
    return f"```yaml\n{text}\n```"


# ----------------------------------------------------------------------------- plots


def plot_accuracy_vs_timestep(results: dict, path: str | os.PathLike) -> Path:
    """Accuracy vs timestep per run: fixed-t curve, rule points at ε = 0, Top-K sweep, mean OCT."""
    validate_results(results)
    return _save_png(_accuracy_figure(results), path)


def plot_exit_histograms(results: dict, path: str | os.PathLike) -> Path:
    """Grid of exit-step histograms: one row per run, one column per rule at ε = 0 and OCT."""
    validate_results(results)
    return _save_png(_histogram_figure(results), path)


def plot_beta(results: dict, path: str | os.PathLike) -> Path:
    """Calibrated Top-K thresholds β_t vs t, one line per run that has them."""
    validate_results(results)
    return _save_png(_beta_figure(results), path)


def plot_tradeoff(results: dict, run_name: str, path: str | os.PathLike) -> Path:
    """Accuracy against mean exit step for one run: every rule's ε sweep as a line, the
    risk-controlled rules at each risk level, the paper's Top-K at ε = 0, OCT and the SNN
    at T."""
    validate_results(results)
    runs = {run["name"]: run for run in results["runs"]}
    if run_name not in runs:
        raise ValueError(f"no run named {run_name!r}; runs: {', '.join(map(repr, runs))}")
    return _save_png(_tradeoff_figure(results, runs[run_name]), path)


_RISK_MARKERS = {"topk-risk": "^", "softmax-risk": "v", "entropy-risk": "P"}


def _tradeoff_figure(results: dict, run: dict) -> Figure:
    T = results["T"]
    styles = _rule_styles(_rule_names(results))
    fig = Figure(figsize=(6.4, 4.8), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    for name in _rule_names(results):
        sweep = _sweep(run, name)
        if name == "fixed" or not sweep:
            continue
        marker, color = styles[name]
        ax.plot(
            [r["mean_exit"] for r in sweep],
            [100.0 * r["accuracy"] for r in sweep],
            "-",
            marker=".",
            color=color,
            lw=1.3,
            label=f"{name} ε sweep",
        )
    by_rule: dict[str, list[dict]] = {}
    for r in run.get("guaranteed_sweep") or []:
        by_rule.setdefault(r["rule"], []).append(r)
    for i, (name, points) in enumerate(by_rule.items()):
        points = sorted(points, key=lambda r: r["risk"])
        color = f"C{(len(styles) + 1 + i) % 10}"
        xs = [r["mean_exit"] for r in points]
        ys = [100.0 * r["accuracy"] for r in points]
        marker = _RISK_MARKERS.get(name, "X")
        ax.plot(xs, ys, ":", marker=marker, color=color, ms=7, mec="black", mew=0.5, label=name)
        for r, x, y in zip(points, xs, ys, strict=True):
            ax.annotate(
                f"{r['risk']:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7
            )
    acc_T = 100.0 * _final_acc(run)
    top = _topk(run)
    if top is not None and top["epsilon"] == 0.0:
        ax.plot(
            top["mean_exit"],
            100.0 * top["accuracy"],
            "*",
            color="gold",
            ms=16,
            mec="black",
            mew=0.8,
            ls="none",
            label="Top-K ε = 0 (paper)",
        )
    ax.plot(run["oct_mean"], acc_T, "D", color="0.3", ms=8, ls="none", label="OCT (oracle)")
    ax.plot(T, acc_T, "s", color="C0", ms=8, mec="black", ls="none", label=f"SNN at T = {T}")
    ax.set_xlabel("mean exit step")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(0.7, T + 0.3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{results['experiment']} / {run['name']}: accuracy vs mean exit", fontsize=10)
    return fig


def _grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _rule_styles(names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """A stable (marker, colour) per rule name, shared across panels."""
    spare = iter(_SPARE_MARKERS * 4)
    styles = {}
    for i, name in enumerate(names):
        marker = _RULE_MARKERS.get(name) or next(spare)
        styles[name] = (marker, f"C{(i + 1) % 10}")
    return styles


def _rule_label(name: str) -> str:
    return "fixed (t = T)" if name == "fixed" else f"{name} (ε=0)"


def _accuracy_figure(results: dict) -> Figure:
    T, runs = results["T"], results["runs"]
    rows, cols = _grid_shape(len(runs))
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows + 0.9), dpi=_DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
    styles = _rule_styles(_rule_names(results))
    ts = list(range(1, T + 1))
    for ax, run in zip(axes[: len(runs)], runs, strict=True):
        acc = [100.0 * a for a in run["snn_accuracy_per_t"]]
        ax.plot(ts, acc, "-", color="C0", lw=1.8, label="fixed timestep t")
        sweep = _topk_sweep(run)
        if len(sweep) > 1:
            ax.plot(
                [r["mean_exit"] for r in sweep],
                [100.0 * r["accuracy"] for r in sweep],
                "--",
                color=styles["topk"][1],
                lw=1.2,
                label="Top-K ε sweep",
            )
        for r in _base_rules(run):
            marker, color = styles[r["rule"]]
            size = 13 if marker == "*" else 8
            ax.plot(
                r["mean_exit"],
                100.0 * r["accuracy"],
                marker,
                color=color,
                ms=size,
                mec="black",
                mew=0.6,
                ls="none",
                label=_rule_label(r["rule"]),
            )
        ax.axvline(run["oct_mean"], color="0.35", ls=":", lw=1.5, label="mean OCT (oracle)")
        ax.set_title(f"{run['name']} (α={run['alpha']:g}, OCT {run['oct_mean']:.2f})", fontsize=10)
        ax.set_xlabel("timestep t / mean exit step")
        ax.set_xlim(0.7, T + 0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy (%)")
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    _figure_legend(fig, axes[: len(runs)])
    fig.suptitle(f"{results['experiment']}: accuracy vs timestep (T={T})")
    return fig


def _figure_legend(fig: Figure, axes: Iterable) -> None:
    """One legend below all panels, so it never covers data."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(
            seen.values(),
            seen.keys(),
            loc="outside lower center",
            ncols=min(len(seen), 4),
            fontsize=9,
            frameon=False,
        )


def _histogram_figure(results: dict) -> Figure:
    T, runs = results["T"], results["runs"]
    columns = ["OCT (oracle)"] + _rule_names(results)
    styles = _rule_styles(_rule_names(results))
    nrows, ncols = len(runs), len(columns)
    fig = Figure(figsize=(2.7 * ncols + 0.4, 2.1 * nrows + 0.6), dpi=_DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    ts = list(range(1, T + 1))
    for i, run in enumerate(runs):
        base = {r["rule"]: r for r in _base_rules(run)}
        for j, column in enumerate(columns):
            ax = axes[i, j]
            if j == 0:
                counts, mean, color = run.get("oct_histogram"), run["oct_mean"], "0.45"
            else:
                entry = base.get(column)
                counts = entry.get("exit_histogram") if entry else None
                mean, color = (entry["mean_exit"] if entry else None), styles[column][1]
            _histogram_panel(ax, ts, counts, mean, color)
            if i == 0:
                ax.set_title(column if j == 0 else _rule_label(column), fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{run['name']}\nsamples", fontsize=9)
            if i == nrows - 1:
                ax.set_xlabel("exit step")
    fig.suptitle(f"{results['experiment']}: exit steps (T={T})")
    return fig


def _histogram_panel(ax, ts: list[int], counts: list[int] | None, mean, color: str) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    if counts is None:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.set_yticks([])
        return
    ax.bar(ts, counts, color=color, width=0.8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if mean is not None:
        ax.axvline(mean, color="black", ls=":", lw=1)
        left = mean > (ts[0] + ts[-1]) / 2  # write the label on the side away from the line
        ax.text(
            0.03 if left else 0.97,
            0.96,
            f"mean {mean:.2f}",
            ha="left" if left else "right",
            va="top",
            fontsize=8,
            transform=ax.transAxes,
        )
    ax.set_ylim(0, max(max(counts), 1) * 1.2)


def _beta_figure(results: dict) -> Figure:
    T = results["T"]
    fig = Figure(figsize=(6.0, 4.0), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    with_beta = [run for run in results["runs"] if run.get("beta") is not None]
    if not with_beta:
        ax.text(
            0.5,
            0.5,
            "No Top-K thresholds (β) in these results",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
    else:
        ts = list(range(1, T + 1))
        for run in with_beta:
            ax.plot(ts, run["beta"], "o-", ms=4, label=run["name"])
        ax.set_xlabel("timestep t")
        ax.set_ylabel(r"$\beta_t$ (Top-1 − Top-2 logit gap)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="best")
    ax.set_title(f"{results['experiment']}: Top-K thresholds at ε = 0 (T={T})")
    return fig


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _save_png(fig: Figure, path: str | os.PathLike) -> Path:
    data = _png_bytes(fig)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


# ----------------------------------------------------------------------------- files


def write_report(results: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Validate, render everything in memory, then write the report files atomically.

    Returns the written paths by name: ``results``, ``report``, ``accuracy_vs_timestep``,
    ``exit_histograms``, ``beta``, and ``tradeoff:<run name>`` per run
    (:func:`tradeoff_file`). Nothing is written if validation or rendering fails.
    """
    validate_results(results)
    markdown = _render_markdown(results)
    pngs = {
        "accuracy_vs_timestep": (
            "accuracy_vs_timestep.png",
            _png_bytes(_accuracy_figure(results)),
        ),
        "exit_histograms": ("exit_histograms.png", _png_bytes(_histogram_figure(results))),
        "beta": ("beta.png", _png_bytes(_beta_figure(results))),
    }
    for run in results["runs"]:
        figure = _png_bytes(_tradeoff_figure(results, run))
        pngs[f"tradeoff:{run['name']}"] = (tradeoff_file(run["name"]), figure)
    out = Path(out_dir)
    paths = {
        "results": atomic_write_json(out / "results.json", results),
        "report": atomic_write_text(out / "report.md", markdown),
    }
    for name, (file, data) in pngs.items():
        paths[name] = atomic_write(out / file, lambda tmp, d=data: tmp.write_bytes(d))
    return paths


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate a ``results.json``; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"results file not found: {path}") from None
    try:
        results = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "the file may be truncated or corrupt"
        ) from err
    try:
        validate_results(results)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return results
