"""The PNG plots of a report, each a pure function of the results dict."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from spikecut._io import atomic_write

from .schema import validate_results
from .selection import _base_rules, _final_acc, _rule_names, _sweep, _topk, _topk_sweep

_TOL = 1e-9
_DASH = "—"
_RULE_MARKERS = {"topk": "*", "softmax": "o", "entropy": "s", "fixed": "D"}
_SPARE_MARKERS = ("^", "v", "P", "X", "h", "<", ">")
_DPI = 110


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
