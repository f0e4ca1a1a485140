"""report.md: number formatting, the selection of rows from a run, and every table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import yaml

from spikecut._io import slug

from .._markdown import markdown_table
from ..memory import gib
from .schema import _is_number, validate_results
from .selection import _RULE_TITLES, _base_rules, _final_acc, _rule_names, _sweep, _topk

_TOL = 1e-9
_DASH = "—"
_RULE_MARKERS = {"topk": "*", "softmax": "o", "entropy": "s", "fixed": "D"}
_SPARE_MARKERS = ("^", "v", "P", "X", "h", "<", ">")
_DPI = 110


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


_table = markdown_table  # the name the report's code and older callers use


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
    lines += _memory_note(results)
    return "\n\n".join(lines)


def _memory_note(results: dict) -> list[str]:
    """A line when the run lowered its evaluation batch to fit the device's memory."""
    record = results.get("memory") or {}
    configured = (results.get("config") or {}).get("batch_size_eval")
    used = record.get("batch_size_eval")
    if not (_is_number(used) and _is_number(configured)) or used == configured:
        return []
    return [
        f"**Evaluation batch lowered** from {configured} to {used}: at {configured} the "
        f"estimated evaluation peak ({gib(record['evaluation_bytes'])}) would not "
        f"fit the {gib(record['available_bytes'])} available. Results do not "
        "depend on the evaluation batch."
    ]


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
