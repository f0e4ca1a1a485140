"""Seed studies: one configuration over RCS weights α × seeds, compared with α = 0.

A single seed cannot tell whether RCS lowered the mean OCT or the seed did. A study runs the
experiment once per (α, seed) through :func:`spikecut.experiment.run_experiment` (one run per
α, repeated over the seeds, ``resume=True``: each finished run is saved in ``runs/<name>.json``
and skipped when the study is started again; an interrupted run continues from its last
checkpoint), then summarises, per α and figure (SNN accuracy at T, mean OCT, Top-K ε = 0
accuracy and mean exit step):

* the mean over seeds with its 95 % Student-t interval;
* against α = 0 over the same seeds: the mean paired difference with its t interval, the
  paired t-test and the exact sign-flip permutation test (:mod:`spikecut.stats`);
* optionally the per-layer diagnostics of every run's SNN (:mod:`spikecut.diagnostics`), which
  show whether the layers' responses settled earlier.

``study.json``, ``study.md`` and the plots (:mod:`spikecut.study_report`) go beside the
experiment's own ``results.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, ExperimentConfig, RunConfig, config_to_dict, parse_config
from .experiment import _run_file, run_experiment, run_fingerprint

__all__ = [
    "METRICS",
    "BASELINE_ALPHA",
    "SIGNIFICANCE",
    "StudyDiverged",
    "alpha_run_name",
    "study_config",
    "default_study_dir",
    "summarise",
    "run_study",
]

BASELINE_ALPHA = 0.0
CONFIDENCE = 0.95
SIGNIFICANCE = 0.05

# figure key -> (label, unit, which direction is better)
METRICS: dict[str, tuple[str, str, str]] = {
    "snn_accuracy": ("SNN accuracy at T", "%", "higher"),
    "oct_mean": ("mean OCT", "steps", "lower"),
    "topk_accuracy": ("Top-K (ε = 0) accuracy", "%", "higher"),
    "topk_mean_exit": ("Top-K (ε = 0) mean exit step", "steps", "lower"),
}


class StudyDiverged(RuntimeError):
    """A run of the study diverged; the runs that finished before it are kept."""


def alpha_run_name(alpha: float) -> str:
    """The run name of one α in a study, e.g. ``alpha=0`` or ``alpha=0.002``."""
    return f"alpha={alpha:g}"


def study_config(
    cfg: ExperimentConfig, alphas: Sequence[float], seeds: Sequence[int]
) -> ExperimentConfig:
    """``cfg`` with one run per α (named by :func:`alpha_run_name`) repeated over ``seeds``.

    Checks what a study needs: at least two distinct seeds (an interval needs two), distinct
    α >= 0 including the baseline α = 0, and the Top-K rule evaluated at ε = 0.
    """
    alphas, seeds = [float(a) for a in alphas], [int(s) for s in seeds]
    if len(seeds) < 2:
        raise ConfigError(f"a study needs at least 2 seeds for its intervals, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must not repeat a seed, got {seeds}")
    if not alphas:
        raise ConfigError("--alphas must list at least one α")
    if any(not math.isfinite(a) or a < 0 for a in alphas):
        raise ConfigError(f"--alphas must be finite and >= 0, got {alphas}")
    if BASELINE_ALPHA not in alphas:
        raise ConfigError(f"--alphas must include the baseline 0 (no RCS), got {alphas}")
    names = [alpha_run_name(a) for a in alphas]
    if len(set(names)) != len(names):
        raise ConfigError(f"--alphas must be distinct, got {alphas}")
    if "topk" not in cfg.cutoff.rules:
        raise ConfigError(
            f"a study reports the Top-K rule: 'cutoff.rules' must include 'topk', got "
            f"{cfg.cutoff.rules}"
        )
    if 0.0 not in cfg.cutoff.epsilons:
        raise ConfigError(
            f"a study reports Top-K at ε = 0: 'cutoff.epsilons' must include 0, got "
            f"{cfg.cutoff.epsilons}"
        )
    runs = [RunConfig(name=name, alpha=a) for name, a in zip(names, alphas, strict=True)]
    study = dataclasses.replace(cfg, runs=runs, seeds=seeds)
    return parse_config(config_to_dict(study))  # validated like any experiment


def default_study_dir(cfg: ExperimentConfig) -> Path:
    """``results/<experiment name>-study``."""
    return Path("results") / f"{cfg.name}-study"


def _figures(run: dict) -> dict[str, float]:
    """The four figures of one run entry of ``results.json``."""
    topk = [r for r in run["rules"] if r["rule"] == "topk" and r["epsilon"] == 0.0]
    if not topk:
        raise ValueError(f"run {run['name']!r} has no Top-K result at ε = 0")
    return {
        "snn_accuracy": run["snn_accuracy_per_t"][-1],
        "oct_mean": run["oct_mean"],
        "topk_accuracy": topk[0]["accuracy"],
        "topk_mean_exit": topk[0]["mean_exit"],
    }


def summarise(
    results: dict, diagnostics: dict[str, dict] | None = None, *, confidence: float = CONFIDENCE
) -> dict:
    """The study dict (``study.json``) of an experiment's results over α × seeds.

    ``results`` is what :func:`run_experiment` returned for a :func:`study_config`;
    ``diagnostics`` maps run names to :func:`spikecut.diagnostics.temporal_diagnostics`
    dicts (or None: no diagnostics).
    """
    from .stats import mean_interval, paired_comparison

    config = results["config"]
    seeds = list(config["seeds"])
    alphas = [run["alpha"] for run in config["runs"]]
    entries = {(run["alpha"], run["seed"]): run for run in results["runs"]}
    missing = [(a, s) for a in alphas for s in seeds if (a, s) not in entries]
    if missing:
        raise ValueError(f"results lack the runs (alpha, seed) {missing}")
    figures = {key: _figures(run) for key, run in entries.items()}

    settings = []
    for alpha in alphas:
        per_seed = [
            {"seed": s, "run": entries[(alpha, s)]["name"], **figures[(alpha, s)]} for s in seeds
        ]
        setting = {
            "alpha": alpha,
            "run": alpha_run_name(alpha),
            "seeds": per_seed,
            "summary": {
                key: mean_interval([p[key] for p in per_seed], confidence).as_dict()
                for key in METRICS
            },
            "vs_baseline": None,
        }
        if alpha != BASELINE_ALPHA:
            setting["vs_baseline"] = {}
            for key in METRICS:
                values = [figures[(alpha, s)][key] for s in seeds]
                base = [figures[(BASELINE_ALPHA, s)][key] for s in seeds]
                cmp = paired_comparison(values, base, confidence).as_dict()
                cmp["significant_t"] = cmp["t_p_value"] < SIGNIFICANCE
                cmp["significant_sign_flip"] = cmp["sign_flip_p_value"] < SIGNIFICANCE
                setting["vs_baseline"][key] = cmp
        if diagnostics is not None:
            setting["diagnostics"] = _setting_diagnostics(
                [diagnostics[p["run"]] for p in per_seed], seeds
            )
        settings.append(setting)

    study = {
        "experiment": results["experiment"],
        "method": results["method"],
        "T": results["T"],
        "seeds": seeds,
        "alphas": alphas,
        "baseline_alpha": BASELINE_ALPHA,
        "confidence": confidence,
        "significance_level": SIGNIFICANCE,
        "metrics": {
            key: {"label": label, "unit": unit, "better": better}
            for key, (label, unit, better) in METRICS.items()
        },
        "settings": settings,
        "diagnostics": None,
    }
    if diagnostics is not None:
        first = diagnostics[settings[0]["seeds"][0]["run"]]
        study["diagnostics"] = {"layers": first["layers"], "samples": first["samples"]}
    return study


def _setting_diagnostics(per_seed: list[dict], seeds: list[int]) -> dict:
    """Per-seed diagnostics of one α and their mean over seeds."""
    keys = ("firing_rate", "cosine_to_final")
    layers = per_seed[0]["layers"]
    for d in per_seed:
        if d["layers"] != layers:
            raise ValueError(f"runs have different spiking layers: {layers} and {d['layers']}")
    mean = {
        key: [
            [sum(col) / len(col) for col in zip(*(d[key][i] for d in per_seed), strict=True)]
            for i in range(len(layers))
        ]
        for key in keys
    }
    return {
        "mean": mean,
        "seeds": [
            {"seed": s, **{key: d[key] for key in keys}}
            for s, d in zip(seeds, per_seed, strict=True)
        ],
    }


def run_study(
    cfg: ExperimentConfig,
    alphas: Sequence[float],
    seeds: Sequence[int],
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    diagnostics: bool = True,
    diagnostic_samples: int | None = 500,
) -> dict | None:
    """Run (or continue) the study, write ``study.json``, ``study.md`` and its plots, and
    return the study dict (None on the other processes under ``torchrun``: rank 0 writes).

    Raises :class:`StudyDiverged` when a run's training diverges; the finished runs stay in
    ``runs/`` and a later call with the same settings skips them.
    """
    from .diagnostics import run_diagnostics
    from .study_report import write_study

    scfg = study_config(cfg, alphas, seeds)
    out = Path(out_dir) if out_dir is not None else default_study_dir(cfg)
    try:
        results = run_experiment(scfg, out, progress=progress, resume=True)
    except FloatingPointError as err:
        raise StudyDiverged(_divergence_message(scfg, out, err)) from err
    if results["environment"].get("rank", 0) != 0:
        return None  # under torchrun, rank 0 measures and writes
    found = None
    if diagnostics:
        names = [run["name"] for run in results["runs"]]
        found = run_diagnostics(out, names, samples=diagnostic_samples, progress=progress)
    study = summarise(results, found)
    write_study(study, out)
    return study


def _divergence_message(cfg: ExperimentConfig, out: Path, err: FloatingPointError) -> str:
    """Which run diverged (the first one in study order without saved results) and what is kept."""
    runs = [(f"{run.name} seed={seed}", run, seed) for seed in cfg.seeds for run in cfg.runs]
    finished = [
        name
        for name, run, seed in runs
        if _saved_fingerprint(out, name) == run_fingerprint(cfg, run, seed)
    ]
    failed = next((name for name, _, _ in runs if name not in finished), "?")
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (
        f"study stopped: run {failed!r} diverged ({detail}); {len(finished)} finished run(s) "
        f"kept in {out / 'runs'} and reused when the study is run again"
    )


def _saved_fingerprint(out: Path, name: str) -> str | None:
    """The fingerprint in a run's saved results (``runs/<name>.json``), or None."""
    try:
        return json.loads(_run_file(out, name).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
