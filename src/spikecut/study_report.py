"""A study's files: ``study.json``, ``study.md`` and PNG plots (pure functions of the study dict).

Everything is rendered in memory first and then written atomically, so a failure leaves the
folder as it was.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._io import atomic_write, atomic_write_json, atomic_write_text
from ._markdown import markdown_table

__all__ = ["render_study_markdown", "study_summary", "write_study"]

_DPI = 110
_DASH = "—"


# ----------------------------------------------------------------------------- formatting


def _scale(study: dict, key: str) -> float:
    return 100.0 if study["metrics"][key]["unit"] == "%" else 1.0


def _num(study: dict, key: str, x: float, signed: bool = False) -> str:
    digits = 2 if study["metrics"][key]["unit"] == "%" else 3
    value = round(_scale(study, key) * x, digits) + 0.0  # never "-0.00"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(study: dict, key: str, low: float, high: float, signed: bool = False) -> str:
    return f"[{_num(study, key, low, signed)}, {_num(study, key, high, signed)}]"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _alpha(a: float) -> str:
    return f"{a:g}"


def _verdict(cmp: dict) -> str:
    if cmp["significant_t"] and cmp["significant_sign_flip"]:
        return "significant (both tests)"
    if cmp["significant_t"]:
        return "significant by the paired t-test only"
    if cmp["significant_sign_flip"]:
        return "significant by the sign-flip test only"
    return "not significant"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return markdown_table(header, rows)


def _metric_title(study: dict, key: str) -> str:
    m = study["metrics"][key]
    return f"{m['label']} ({m['unit']}, {m['better']} is better)"


# ----------------------------------------------------------------------------- markdown


def _means_table(study: dict) -> str:
    ci = f"{round(100 * study['confidence'])} % CI"
    header = ["α"] + [
        f"{study['metrics'][k]['label']} ({study['metrics'][k]['unit']}), mean [{ci}]"
        for k in study["metrics"]
    ]
    rows = []
    for s in study["settings"]:
        row = [_alpha(s["alpha"])]
        for key in study["metrics"]:
            m = s["summary"][key]
            row.append(
                f"{_num(study, key, m['mean'])} {_interval(study, key, m['ci_low'], m['ci_high'])}"
            )
        rows.append(row)
    return _table(header, rows)


def _comparison_table(study: dict, key: str) -> str:
    ci = f"{round(100 * study['confidence'])} % CI"
    header = [
        "α",
        f"Δ mean [{ci}]",
        "paired t p",
        "sign-flip p",
        f"at {study['significance_level']:g}",
    ]
    rows = []
    for s in study["settings"]:
        cmp = (s["vs_baseline"] or {}).get(key)
        if cmp is None:
            continue
        rows.append(
            [
                _alpha(s["alpha"]),
                f"{_num(study, key, cmp['mean_difference'], True)} "
                f"{_interval(study, key, cmp['ci_low'], cmp['ci_high'], True)}",
                _p(cmp["t_p_value"]),
                _p(cmp["sign_flip_p_value"]),
                _verdict(cmp),
            ]
        )
    return _table(header, rows)


def _verdict_lines(study: dict) -> list[str]:
    lines = []
    level = f"{study['significance_level']:g}"
    for s in study["settings"]:
        if s["vs_baseline"] is None:
            continue
        for key, cmp in s["vs_baseline"].items():
            m = study["metrics"][key]
            unit = "points" if m["unit"] == "%" else "steps"
            verdict = _verdict(cmp)
            if verdict == "not significant":
                verdict = f"**not significant at {level}**"
            else:
                verdict = f"{verdict} at {level}"
            lines.append(
                f"- α = {_alpha(s['alpha'])}: {m['label']} "
                f"{_num(study, key, cmp['mean_difference'], True)} {unit} "
                f"(CI {_num(study, key, cmp['ci_low'], True)} to "
                f"{_num(study, key, cmp['ci_high'], True)}), {verdict} "
                f"(paired t p = {_p(cmp['t_p_value'])}, sign-flip p = "
                f"{_p(cmp['sign_flip_p_value'])})."
            )
    return lines


def _per_seed_table(study: dict) -> str:
    header = ["α", "seed"] + [
        f"{study['metrics'][k]['label']} ({study['metrics'][k]['unit']})" for k in study["metrics"]
    ]
    rows = [
        [_alpha(s["alpha"]), str(p["seed"])] + [_num(study, k, p[k]) for k in study["metrics"]]
        for s in study["settings"]
        for p in s["seeds"]
    ]
    return _table(header, rows)


def _diagnostics_table(study: dict, key: str, digits: int) -> str:
    T = study["T"]
    header = ["layer", "α"] + [f"t={t}" for t in range(1, T + 1)]
    rows = []
    for i, layer in enumerate(study["diagnostics"]["layers"]):
        for s in study["settings"]:
            series = s["diagnostics"]["mean"][key][i]
            rows.append([f"`{layer}`", _alpha(s["alpha"])] + [f"{v:.{digits}f}" for v in series])
    return _table(header, rows)


def render_study_markdown(study: dict) -> str:
    """The study as a readable page: means with intervals, paired comparisons, per-seed
    figures and (if measured) the per-layer diagnostics."""
    n = len(study["seeds"])
    seeds = ", ".join(map(str, study["seeds"]))
    alphas = ", ".join(_alpha(a) for a in study["alphas"])
    conf = round(100 * study["confidence"])
    min_flip = 2.0 / 2**n
    level = study["significance_level"]
    parts = [
        f"# spikecut study: {study['experiment']}",
        f"Method `{study['method']}`, T = {study['T']}; α ∈ {{{alphas}}} × seeds {{{seeds}}} "
        f"(n = {n}); baseline α = {_alpha(study['baseline_alpha'])}. Each α is trained from the "
        "same initial weights per seed, so the comparison is paired over seeds.",
        f"Intervals are {conf} % Student-t intervals over the {n} seeds. Against the baseline, "
        "the paired difference (this α minus α = 0, same seed) is tested two ways: the paired "
        "t-test and the exact sign-flip permutation test (all 2^n sign patterns). With "
        f"n = {n} the sign-flip p-value cannot go below 2/2^n = {min_flip:.3g}"
        + (f", so it cannot reach {level:g} with this many seeds." if min_flip >= level else "."),
        f"## Mean over seeds ({conf} % CI)",
        _means_table(study),
        f"## Against α = {_alpha(study['baseline_alpha'])} (paired over seeds)",
    ]
    if len(study["settings"]) > 1:
        parts.append("\n".join(_verdict_lines(study)))
        for key in study["metrics"]:
            parts += [f"### {_metric_title(study, key)}", _comparison_table(study, key)]
    else:
        parts.append("Only the baseline was run: nothing to compare.")
    parts += ["## Per seed", _per_seed_table(study)]
    if study.get("diagnostics"):
        d = study["diagnostics"]
        parts += [
            f"## Layer diagnostics ({d['samples']} test samples, mean over seeds)",
            "Cosine similarity between each spiking layer's response r(t) = s(t) + ReLU(v(t)/θ) "
            "at step t and its response at T (mean over samples; 1 at t = T). RCS aims to raise "
            "it at early steps; a layer whose curve does not rise did not settle earlier.",
            _diagnostics_table(study, "cosine_to_final", 3),
            "Firing rate (spikes per neuron per step):",
            _diagnostics_table(study, "firing_rate", 4),
            "Plots: `study_metrics.png`, `study_cosine.png`, `study_firing_rate.png`.",
        ]
    else:
        parts.append("Plot: `study_metrics.png`.")
    return "\n\n".join(parts) + "\n"


def study_summary(study: dict) -> str:
    """What the CLI prints: the means table and one line per comparison."""
    lines = _verdict_lines(study)
    return _means_table(study) + ("\n\n" + "\n".join(lines) if lines else "")


# ----------------------------------------------------------------------------- plots


def _metrics_figure(study: dict) -> Figure:
    keys = list(study["metrics"])
    fig = Figure(figsize=(3.6 * len(keys), 3.6), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False).ravel()
    xs = list(range(len(study["settings"])))
    conf = round(100 * study["confidence"])
    for ax, key in zip(axes, keys, strict=True):
        scale = _scale(study, key)
        for j, seed in enumerate(study["seeds"]):
            ys = [scale * s["seeds"][j][key] for s in study["settings"]]
            ax.plot(
                xs,
                ys,
                "-o",
                color="0.6",
                lw=0.8,
                ms=3.5,
                alpha=0.8,
                label="one seed" if j == 0 else None,
            )
            ax.annotate(
                str(seed),
                (xs[-1], ys[-1]),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=7,
                color="0.45",
                va="center",
            )
        means = [scale * s["summary"][key]["mean"] for s in study["settings"]]
        lows = [
            m - scale * s["summary"][key]["ci_low"]
            for m, s in zip(means, study["settings"], strict=True)
        ]
        highs = [
            scale * s["summary"][key]["ci_high"] - m
            for m, s in zip(means, study["settings"], strict=True)
        ]
        ax.errorbar(
            xs,
            means,
            yerr=[lows, highs],
            fmt="s",
            color="C3",
            ms=6,
            capsize=5,
            lw=1.6,
            label=f"mean ± {conf} % CI",
            zorder=3,
        )
        m = study["metrics"][key]
        ax.set_title(f"{m['label']}\n({m['better']} is better)", fontsize=10)
        ax.set_ylabel(m["unit"])
        ax.set_xticks(xs, [_alpha(a) for a in study["alphas"]])
        ax.set_xlabel("RCS weight α")
        ax.set_xlim(-0.4, len(xs) - 0.4)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"{study['experiment']}: {len(study['seeds'])} seeds per α (T={study['T']})")
    return fig


def _layers_figure(study: dict, key: str, ylabel: str, title: str) -> Figure:
    layers = study["diagnostics"]["layers"]
    cols = min(len(layers), 4)
    rows = math.ceil(len(layers) / cols)
    fig = Figure(figsize=(3.8 * cols, 3.0 * rows + 0.8), dpi=_DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True).ravel()
    ts = list(range(1, study["T"] + 1))
    for i, (ax, layer) in enumerate(zip(axes, layers, strict=False)):
        for c, s in enumerate(study["settings"]):
            color = f"C{c % 10}"
            for p in s["diagnostics"]["seeds"]:
                ax.plot(ts, p[key][i], "-", color=color, lw=0.7, alpha=0.35)
            name = (
                "α = 0 (no RCS)"
                if s["alpha"] == study["baseline_alpha"]
                else f"α = {_alpha(s['alpha'])}"
            )
            ax.plot(
                ts,
                s["diagnostics"]["mean"][key][i],
                "-o",
                color=color,
                lw=1.8,
                ms=3.5,
                label=name if i == 0 else None,
            )
        ax.set_title(layer, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(layers) :]:
        ax.set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel(ylabel)
    for ax in axes[(rows - 1) * cols :]:
        ax.set_xlabel("timestep t")
    fig.legend(
        loc="outside lower center", ncols=min(len(study["settings"]), 5), fontsize=9, frameon=False
    )
    fig.suptitle(f"{study['experiment']}: {title} (thin: single seeds; thick: mean over seeds)")
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- files


def write_study(study: dict, out_dir: str | Path) -> dict[str, Path]:
    """Render, then write ``study.json``, ``study.md`` and the plots atomically; return paths."""
    markdown = render_study_markdown(study)
    pngs = {"study_metrics": _png(_metrics_figure(study))}
    if study.get("diagnostics"):
        pngs["study_cosine"] = _png(
            _layers_figure(
                study, "cosine_to_final", "cos(r(t), r(T))", "response vs final response"
            )
        )
        pngs["study_firing_rate"] = _png(
            _layers_figure(study, "firing_rate", "spikes / neuron / step", "firing rate")
        )
    out = Path(out_dir)
    paths = {
        "study": atomic_write_json(out / "study.json", study),
        "markdown": atomic_write_text(out / "study.md", markdown),
    }
    for name, data in pngs.items():
        paths[name] = atomic_write(out / f"{name}.png", lambda tmp, d=data: tmp.write_bytes(d))
    return paths
