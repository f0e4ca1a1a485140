"""The conversion experiment: data → QCFS-ANN training (per run α) → SNN → cutoff → report.

One call of :func:`run_experiment` trains every run of the configuration, converts each
trained ANN into an SNN, runs it for T steps on the test split and on the calibration split
(training data without augmentation, calibration dropout on), evaluates every exit rule and
writes ``results.json``, ``report.md`` and the plots. Each run's trained weights are saved
(atomically) beside the report.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from . import __version__
from ._io import atomic_write
from .config import ExperimentConfig, RunConfig, config_to_dict
from .convert import to_snn
from .data import get_dataset
from .evaluate import ann_accuracy, calibration_cum_logits, collect_cum_logits, evaluate_cutoff
from .models import create
from .ops import OpCounter
from .report import write_report
from .train import seed_everything, train_ann

__all__ = ["run_experiment", "resolve_device", "default_out_dir", "load_run_snn"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when present; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available here")
    return device


def default_out_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path("results") / cfg.name


def _datasets(cfg: ExperimentConfig):
    data = cfg.data
    opts = dict(data.options)
    train = get_dataset(data.name, data.root, split="train", augment=data.augment, **opts)
    calibration = get_dataset(data.name, data.root, split="train", augment=False, **opts)
    test = get_dataset(data.name, data.root, split="test", augment=False, **opts)
    return train, calibration, test


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))


def run_experiment(
    cfg: ExperimentConfig, out_dir: str | Path | None = None, *, progress: bool = True
) -> dict:
    """Run every configured run end to end and write the report; return the results dict."""
    start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    device = resolve_device(cfg.device)
    train_set, calibration_set, test_set = _datasets(cfg)

    seeds = cfg.seeds or [cfg.seed]
    runs = []
    for seed in seeds:
        for run in cfg.runs:
            name = run.name if len(seeds) == 1 else f"{run.name} seed={seed}"
            entry = _train_and_evaluate(
                cfg,
                run,
                seed,
                name,
                (train_set, calibration_set, test_set),
                out,
                device,
                progress,
            )
            if len(seeds) > 1:
                entry["group"] = run.name
            runs.append(entry)

    results = {
        "experiment": cfg.name,
        "T": cfg.T,
        "config": config_to_dict(cfg),
        "environment": {
            "spikecut": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "seconds": time.perf_counter() - start,
        },
        "runs": runs,
    }
    write_report(results, out)
    return results


def _train_and_evaluate(
    cfg: ExperimentConfig,
    run: RunConfig,
    seed: int,
    name: str,
    datasets: tuple,
    out: Path,
    device: torch.device,
    progress: bool,
) -> dict:
    """One run: train the QCFS-ANN with the run's α, convert, evaluate every rule."""
    train_set, calibration_set, test_set = datasets
    run_start = time.perf_counter()
    eval_kwargs = {"batch_size": cfg.batch_size_eval, "device": str(device), "progress": progress}
    seed_everything(seed)  # same initial weights for every run of a seed: only α differs
    model = create(
        cfg.model.name,
        num_classes=train_set.num_classes,
        levels=cfg.model.levels,
        threshold=cfg.model.threshold,
        **cfg.model.options,
    )
    trained = train_ann(
        model,
        train_set,
        cfg.train,
        alpha=run.alpha,
        seed=seed,
        device=device,
        progress=progress,
        desc=f"train {name}",
    )
    _save_weights(model, out / "weights" / f"{_slug(name)}.pt")
    ann_acc = ann_accuracy(model, test_set, batch_size=cfg.batch_size_eval, device=str(device))

    snn = to_snn(model)
    with OpCounter(snn) as counter:  # spikes and SOPs of the test pass (spikecut.ops)
        test_logits, test_labels = collect_cum_logits(
            snn, test_set, cfg.T, desc=f"snn {name}", **eval_kwargs
        )
    cal_logits, cal_labels = calibration_cum_logits(
        snn,
        calibration_set,
        cfg.T,
        dropout=cfg.cutoff.calibration_dropout,
        seed=seed,
        **eval_kwargs,
    )
    evaluated = evaluate_cutoff(
        test_logits,
        test_labels,
        cal_logits,
        cal_labels,
        rules=cfg.cutoff.rules,
        epsilons=cfg.cutoff.epsilons,
        bins=cfg.cutoff.bins,
        ops=counter.pop(),
    )
    return {
        "name": name,
        "alpha": run.alpha,
        "seed": seed,
        "ann_accuracy": ann_acc,
        **evaluated,
        "thresholds": [float(n.threshold) for n in snn.neurons],
        "train": trained.summary(),
        "seconds": time.perf_counter() - run_start,
    }


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def load_run_snn(
    out_dir: str | Path, run_name: str, *, num_classes: int | None = None
) -> tuple[torch.nn.Module, dict, ExperimentConfig]:
    """Rebuild the SNN of a finished run from its results folder, without retraining.

    Reads ``results.json`` (its ``config`` and the run entry named ``run_name``) and the
    run's weights ``weights/<slug>.pt``, and converts the QCFS-ANN again. ``num_classes``
    defaults to that of the configured test split. Returns ``(snn, run_entry, config)``; a
    Top-K rule can be rebuilt from ``run_entry["beta"]`` without calibrating again.
    """
    from .config import parse_config
    from .report import load_results

    out = Path(out_dir)
    results = load_results(out / "results.json")
    if "config" not in results:
        raise ValueError(f"{out / 'results.json'}: has no 'config', cannot rebuild the model")
    cfg = parse_config(results["config"])
    runs = {run["name"]: run for run in results["runs"]}
    if run_name not in runs:
        raise ValueError(
            f"{out / 'results.json'}: no run named {run_name!r}; runs: {', '.join(map(repr, runs))}"
        )
    weights = out / "weights" / f"{_slug(run_name)}.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"weights of run {run_name!r} not found: {weights}")
    if num_classes is None:
        data = cfg.data
        test = get_dataset(data.name, data.root, split="test", augment=False, **data.options)
        num_classes = test.num_classes
    model = create(
        cfg.model.name,
        num_classes=num_classes,
        levels=cfg.model.levels,
        threshold=cfg.model.threshold,
        **cfg.model.options,
    )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:
        raise ValueError(f"{weights}: cannot load the weights of run {run_name!r}: {err}") from err
    return to_snn(model), runs[run_name], cfg
