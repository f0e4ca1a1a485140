"""An experiment: data → training (per run α) → SNN → cutoff → report.

With ``method: conversion`` each run trains a QCFS-ANN and converts it into an IF network;
with ``method: direct`` each run trains the spiking network itself (LIF neurons, TET or mean
loss, optional TEBN). Either way the SNN is then run for T steps on the test split and on the
calibration split (training data without augmentation, calibration dropout on), every exit
rule is evaluated, and ``results.json``, ``report.md`` and the plots are written. Each run's
trained weights are saved (atomically) beside the report.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

from . import __version__
from ._io import atomic_write
from .config import ConfigError, ExperimentConfig, RunConfig, config_to_dict
from .convert import to_snn, to_trainable_snn
from .data import get_dataset
from .data.registry import DATASETS
from .evaluate import ann_accuracy, calibration_cum_logits, collect_cum_logits, evaluate_cutoff
from .models import create
from .models.registry import MODELS
from .neurons import LIF, SURROGATES
from .ops import OpCounter
from .registry import option_names
from .report import write_report
from .speed import keep_large_allocations
from .train import seed_everything, train_ann, train_snn

__all__ = [
    "run_experiment",
    "resolve_device",
    "default_out_dir",
    "build_model",
    "build_trainable_snn",
    "is_frame_dataset",
    "load_run_snn",
]


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


def dataset_options(cfg: ExperimentConfig, progress: bool = True) -> dict:
    """The configured dataset options, plus T for frame datasets and the progress switch."""
    data = cfg.data
    opts = dict(data.options)
    accepted = option_names(DATASETS.get(data.name)) or []
    if "progress" in accepted:  # e.g. the emulated event data shows its one-off conversion
        opts.setdefault("progress", progress)
    # Frame datasets take the number of steps from the experiment's T.
    if "steps" in accepted and opts.setdefault("steps", cfg.T) != cfg.T:
        raise ConfigError(
            f"'data.options.steps' is {opts['steps']} but 'T' is {cfg.T}; the frames per "
            "sample must equal T (set T instead)"
        )
    return opts


def _datasets(cfg: ExperimentConfig, progress: bool = True):
    data, opts = cfg.data, dataset_options(cfg, progress)
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
    if device.type == "cpu":
        keep_large_allocations()  # large activations reused, not re-faulted (spikecut.speed)
    train_set, calibration_set, test_set = _datasets(cfg, progress)
    repeat = not is_frame_dataset(train_set)

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
                repeat,
            )
            if len(seeds) > 1:
                entry["group"] = run.name
            runs.append(entry)

    results = {
        "experiment": cfg.name,
        "method": cfg.method,
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


def is_frame_dataset(dataset) -> bool:
    """True when items are frame sequences ``[T, C, H, W]`` rather than static ``[C, H, W]``."""
    x, _ = dataset[0]
    return x.dim() == 4


def build_model(cfg: ExperimentConfig, num_classes: int) -> torch.nn.Module:
    """The configured ANN: QCFS activations for conversion, ReLUs for direct training."""
    options = dict(cfg.model.options)
    accepted = option_names(MODELS.get(cfg.model.name)) or []
    if cfg.method == "conversion":
        options.update(levels=cfg.model.levels, threshold=cfg.model.threshold)
        if "activation" in accepted:
            options["activation"] = "qcfs"
    elif "activation" in accepted:
        options["activation"] = "relu"
    return create(cfg.model.name, num_classes=num_classes, **options)


def build_trainable_snn(cfg: ExperimentConfig, ann: torch.nn.Module) -> torch.nn.Module:
    """The ANN with every ReLU replaced by the configured LIF (and BN by TEBN if asked)."""
    d = cfg.direct
    neuron = LIF(
        threshold=d.threshold,
        leak=d.leak,
        reset=d.reset,
        surrogate=SURROGATES[d.surrogate](d.surrogate_width),
    )
    return to_trainable_snn(ann, neuron=neuron, tebn=d.tebn, steps=cfg.T)


def _train_and_evaluate(
    cfg: ExperimentConfig,
    run: RunConfig,
    seed: int,
    name: str,
    datasets: tuple,
    out: Path,
    device: torch.device,
    progress: bool,
    repeat: bool,
) -> dict:
    """One run: train with the run's α (an ANN to convert, or the SNN), evaluate every rule."""
    train_set, calibration_set, test_set = datasets
    run_start = time.perf_counter()
    eval_kwargs = {
        "batch_size": cfg.batch_size_eval,
        "device": str(device),
        "progress": progress,
        "repeat": repeat,
    }
    seed_everything(seed)  # same initial weights for every run of a seed: only α differs
    model = build_model(cfg, train_set.num_classes)
    train_kwargs = {"alpha": run.alpha, "seed": seed, "device": device, "progress": progress}
    if cfg.method == "conversion":
        if not repeat:
            raise ConfigError(
                "method 'conversion' trains an ANN on static images, but dataset "
                f"{cfg.data.name!r} gives frame sequences; use method 'direct'"
            )
        trained = train_ann(model, train_set, cfg.train, desc=f"train {name}", **train_kwargs)
        _save_weights(model, out / "weights" / f"{_slug(name)}.pt")
        ann_acc = ann_accuracy(model, test_set, batch_size=cfg.batch_size_eval, device=str(device))
        snn = to_snn(model)
    else:
        d = cfg.direct
        snn = build_trainable_snn(cfg, model)
        trained = train_snn(
            snn,
            train_set,
            cfg.train,
            steps=cfg.T,
            loss=d.loss,
            tet_lambda=d.tet_lambda,
            repeat=repeat,
            rho=d.rcs_rho,
            mask_rho=d.mask_rho,
            desc=f"train {name}",
            **train_kwargs,
        )
        _save_weights(snn, out / "weights" / f"{_slug(name)}.pt")
        ann_acc = None

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
    run's weights ``weights/<slug>.pt``, and converts the QCFS-ANN again (or rebuilds the
    directly trained SNN). ``num_classes``
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
        opts = dataset_options(cfg, progress=False)
        test = get_dataset(cfg.data.name, cfg.data.root, split="test", augment=False, **opts)
        num_classes = test.num_classes
    model = build_model(cfg, num_classes)
    target = model if cfg.method == "conversion" else build_trainable_snn(cfg, model)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        target.load_state_dict(state)
    except Exception as err:
        raise ValueError(f"{weights}: cannot load the weights of run {run_name!r}: {err}") from err
    snn = to_snn(model) if cfg.method == "conversion" else target.eval()
    return snn, runs[run_name], cfg
