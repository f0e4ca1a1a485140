"""An experiment: data → training (per run α) → SNN → cutoff → report.

With ``method: conversion`` each run trains a QCFS-ANN and converts it into an IF network;
with ``method: direct`` each run trains the spiking network itself (LIF neurons, TET or mean
loss, optional TEBN). Either way the SNN is then run for T steps on the test split and on the
calibration split (training data without augmentation, calibration dropout on), every exit
rule is evaluated, and ``results.json``, ``report.md`` and the plots are written. Each run's
trained weights are saved (atomically) beside the report.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from . import __version__, distributed, memory
from ._deprecation import warn_deprecated
from ._io import atomic_write, atomic_write_json, slug
from .config import ConfigError, ExperimentConfig, RunConfig, config_to_dict
from .data import get_dataset
from .data.registry import DATASETS, dataset_yields_frames
from .data.splits import carve_validation, stratified_sample
from .distributed import World, gather_samples, shard_indices
from .evaluate import (
    calibration_cum_logits,
    collect_cum_logits,
    evaluate_cutoff,
    evaluate_guaranteed_rules,
    evaluate_guaranteed_sweep,
)
from .networks import build_model, build_trainable, build_trainable_snn, is_conversion, snn_of
from .ops import OpCounter, OpCounts
from .registry import option_names
from .report import write_report
from .speed import keep_large_allocations, release_freed_memory
from .train import (
    FitOptions,
    TrainingDiverged,
    TrainResult,
    accuracy,
    seed_everything,
    train_ann,
    train_snn,
)

__all__ = [
    "run_experiment",
    "EvaluationOutOfMemory",
    "resolve_device",
    "default_out_dir",
    "build_model",
    "build_trainable_snn",
    "is_frame_dataset",
    "load_run_snn",
    "load_run_outputs",
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
    if "steps" in opts:  # the old name of the frames per sample
        warn_deprecated("'data.options.steps'", "'T' (the experiment's T sets it)", stacklevel=2)
        if "T" in opts:
            raise ConfigError("'data.options' gives both 'steps' (deprecated) and 'T'")
        opts["T"] = opts.pop("steps")
    # Frame datasets take the number of steps from the experiment's T.
    if "T" in accepted and opts.setdefault("T", cfg.T) != cfg.T:
        raise ConfigError(
            f"'data.options.T' is {opts['T']} but 'T' is {cfg.T}; the frames per "
            "sample must equal T (set T instead)"
        )
    return opts


def _datasets(cfg: ExperimentConfig, progress: bool = True):
    """(train, calibration, validation or None, test, held-out calibration or None).

    calibration is the training data without augmentation (the paper's calibration pass),
    a stratified sample of it when ``cutoff.calibration_samples`` is set.
    With ``cutoff.calibration.source: heldout`` a stratified fraction of the training data
    is carved off first (from ``cfg.seed``), without augmentation and never trained on;
    the validation split, if configured, is then carved from what remains.
    """
    data, opts = cfg.data, dataset_options(cfg, progress)
    train = get_dataset(data.name, data.root, split="train", augment=data.augment, **opts)
    calibration = get_dataset(data.name, data.root, split="train", augment=False, **opts)
    test = get_dataset(data.name, data.root, split="test", augment=False, **opts)
    heldout = None
    if cfg.cutoff.calibration.source == "heldout":
        train, calibration, heldout = carve_validation(
            train, calibration, cfg.cutoff.calibration.fraction, cfg.seed
        )
    validation = None
    if cfg.train.validation_fraction > 0:
        train, calibration, validation = carve_validation(
            train, calibration, cfg.train.validation_fraction, cfg.seed
        )
    if cfg.cutoff.calibration_samples is not None:
        calibration = stratified_sample(calibration, cfg.cutoff.calibration_samples, cfg.seed)
    return train, calibration, validation, test, heldout


def environment_record(device: torch.device, world: World | None = None) -> dict:
    """What results.json records about the software and machine a run used."""
    record = {
        "spikecut": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": _device_name(device),
    }
    if world is not None:
        record.update(processes=world.size, rank=world.rank)
    record["threads"] = torch.get_num_threads()
    return record


def data_record(test) -> dict:
    """What results.json records about the data: the test split's size and classes, and
    the normalisation a dataset computed or was given (``imagefolder``), when it says."""
    record = {"test_size": len(test), "num_classes": test.num_classes}
    normalization = getattr(test, "normalization", None)
    if normalization is not None:
        record["normalization"] = normalization
    return record


def calibration_split_record(
    cfg: ExperimentConfig, heldout, train_size: int, paper_size: int | None = None
) -> dict:
    """What results.json records about the held-out calibration split (and, as
    ``paper_pass_size``, how many training images the paper's calibration pass ran)."""
    cal = cfg.cutoff.calibration
    record = {"source": cal.source, "size": 0, "fraction": 0.0, "train_size": train_size}
    if heldout is not None:
        record.update(size=len(heldout), fraction=cal.fraction, seed=cfg.seed)
    if paper_size is not None:
        record["paper_pass_size"] = paper_size
    return record


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Run every configured run end to end and write the report; return the results dict.

    ``resume=True`` reuses the finished runs' results and continues an interrupted run from
    its last checkpoint (same configuration only). Under ``torchrun`` this joins the process
    group, and rank 0 writes the files.

    A run whose training diverges (:class:`~spikecut.train.TrainingDiverged`) ends the
    experiment: the runs finished before it are reported as usual (``results.json``,
    ``report.md``, plots), with the diverged run under ``failed`` and the runs never started
    under ``not_run``; then the error is raised again, naming the run, with ``report`` set
    to the report's path (``None`` when no run had finished, and nothing was written).
    """
    start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    world, device = distributed.setup(resolve_device(cfg.device))
    try:
        results, diverged = _run_all(cfg, out, world, device, progress, resume)
    except BaseException:
        distributed.teardown(synchronise=False)
        raise
    distributed.teardown()
    results["environment"]["seconds"] = time.perf_counter() - start
    if world.is_main and results["runs"]:
        write_report(results, out)
    if diverged is not None:
        diverged.report = out / "report.md" if results["runs"] else None
        raise diverged
    return results


def _run_all(
    cfg: ExperimentConfig,
    out: Path,
    world: World,
    device: torch.device,
    progress: bool,
    resume: bool,
) -> tuple[dict, TrainingDiverged | None]:
    """Every run in order; stops at the first that diverges and returns its error beside
    the results of the runs before it."""
    if device.type == "cpu":
        keep_large_allocations()  # large activations reused, not re-faulted (spikecut.speed)
    if world.is_main:
        _remove_partial_writes(out)
    datasets = _datasets(cfg, progress and world.is_main)
    frames = config_yields_frames(cfg, datasets[0])
    context = _RunContext(cfg, datasets, out, world, device, progress, frames, resume)
    memory_record = _plan_memory(context)

    seeds = cfg.seeds or [cfg.seed]
    planned = [
        (seed, run, run.name if len(seeds) == 1 else f"{run.name} seed={seed}")
        for seed in seeds
        for run in cfg.runs
    ]
    runs, failed, not_run, diverged = [], [], [], None
    for index, (seed, run, name) in enumerate(planned):
        entry = _finished_run(context, run, seed, name) if resume else None
        if entry is None:
            try:
                entry = _train_and_evaluate(context, run, seed, name)
            except TrainingDiverged as err:
                diverged = err.in_run(name)
                failed.append(_failure(diverged, seed))
                not_run = [later for _, _, later in planned[index + 1 :]]
                break
            if world.is_main:
                saved = {"fingerprint": run_fingerprint(cfg, run, seed), "entry": entry}
                atomic_write_json(_run_file(out, name), saved)
        if len(seeds) > 1:
            entry["group"] = run.name
        runs.append(entry)

    results = {
        "experiment": cfg.name,
        "method": cfg.method,
        "T": cfg.T,
        "config": config_to_dict(cfg),
        "environment": environment_record(device, world),
        "calibration_split": calibration_split_record(
            cfg, datasets[4], len(datasets[0]), len(datasets[1])
        ),
        "memory": memory_record,
        "data": data_record(datasets[3]),
        "runs": runs,
    }
    if diverged is not None:
        results["failed"] = failed
        results["not_run"] = not_run
    return results, diverged


def _failure(err: TrainingDiverged, seed: int) -> dict:
    """What the report says about a run that diverged (JSON-safe: the loss is in the text)."""
    return {
        "name": err.run,
        "alpha": err.alpha,
        "seed": seed,
        "epoch": err.epoch,
        "lr": err.lr,
        "error": str(err),
    }


class EvaluationOutOfMemory(ConfigError):
    """A trained run's evaluation ran out of memory; its weights and checkpoint are saved,
    so ``--resume`` with a smaller ``batch_size_eval`` evaluates it without retraining."""


def _is_out_of_memory(err: BaseException) -> bool:
    """True for PyTorch's and Python's out-of-memory errors (CUDA and CPU allocators)."""
    if isinstance(err, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(err)
    return "out of memory" in text or "can't allocate memory" in text


def _stored_steps(cfg: ExperimentConfig) -> float:
    """How many steps of activations BPTT keeps at once: all T, or with
    ``train.time_checkpoint`` k one chunk plus the chunks' boundaries and the RCS records
    (measured on ResNet-20: k = 4 at T = 32 kept 0.40 of plain BPTT's peak, k + T/4 steps)."""
    k = cfg.train.time_checkpoint
    return cfg.T if k is None or k >= cfg.T else k + cfg.T / 4


def _plan_memory(context: _RunContext) -> dict:
    """Estimate the peak memory of training and evaluation before the first epoch
    (:func:`spikecut.memory.estimate_peaks`): raise a :class:`ConfigError` that says what
    to lower where training will not fit; lower the evaluation batch where evaluation will
    not (saying so on stderr and in the report). Returns the record for results.json."""
    cfg, device = context.cfg, context.device
    item = context.train[0][0]
    if context.frames:
        item = item[0]  # one frame [C, H, W]
    ann = build_model(cfg, context.train.num_classes)
    estimate = memory.estimate_peaks(
        ann,
        item,
        T=cfg.T,
        batch_size=max(1, cfg.train.batch_size // context.world.size),
        batch_size_eval=cfg.batch_size_eval,
        device=device,
        training_steps=None if is_conversion(cfg) else _stored_steps(cfg),
    )
    if estimate.training > estimate.available:
        what = "the ANN" if is_conversion(cfg) else f"the SNN over T = {cfg.T} steps"
        raise ConfigError(
            f"training {what} at train.batch_size={cfg.train.batch_size} needs about "
            f"{memory.gib(estimate.training)}, but {device} has {memory.gib(estimate.available)}"
            " available; lower train.batch_size (or T"
            + ("" if is_conversion(cfg) else ", or set train.time_checkpoint")
            + ")"
        )
    batch = memory.fit_evaluation_batch(estimate, cfg.batch_size_eval)
    if batch != cfg.batch_size_eval:
        print(
            f"spikecut: evaluation at batch_size_eval={cfg.batch_size_eval} needs about "
            f"{memory.gib(estimate.evaluation)}, {device} has "
            f"{memory.gib(estimate.available)} available: evaluating at batch {batch}",
            file=sys.stderr,
        )
    context.batch_size_eval = batch
    return {**estimate.to_dict(), "batch_size_eval": batch}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


class _RunContext:
    """What every run of one experiment shares."""

    def __init__(self, cfg, datasets, out, world, device, progress, frames, resume) -> None:
        self.cfg = cfg
        self.train, self.calibration, self.validation, self.test, self.heldout = datasets
        self.out = out
        self.world = world
        self.device = device
        self.progress = progress and world.is_main
        self.frames = frames  # items are frame sequences, not static images
        self.resume = resume
        self.batch_size_eval = cfg.batch_size_eval  # lowered by _plan_memory if need be

    def eval_kwargs(self) -> dict:
        """How the SNN is run over a split (:func:`~spikecut.evaluate.collect_cum_logits`)."""
        cfg = self.cfg
        return {
            "batch_size": self.batch_size_eval,
            "device": str(self.device),
            "progress": self.progress,
            "frames": self.frames,
            "workers": cfg.train.workers,
            "time_chunk": cfg.time_chunk,
        }


def run_fingerprint(cfg: ExperimentConfig, run: RunConfig, seed: int) -> str:
    """A short digest of everything that determines a run's training (not where it runs)."""
    config = config_to_dict(cfg)
    train = {k: v for k, v in config["train"].items() if k != "workers"}
    if train.get("time_checkpoint") is None or train.get("time_checkpoint_norms") == "exact":
        # memory, not results (gradients as plain BPTT): absent, fingerprints as before
        train.pop("time_checkpoint", None)
        train.pop("time_checkpoint_norms", None)
    payload = {
        "method": cfg.method,
        "T": cfg.T,
        "data": config["data"],
        "model": config["model"],
        "train": train,
        "direct": config["direct"] if cfg.method == "direct" else None,
        "alpha": run.alpha,
        "seed": seed,
    }
    calibration = config["cutoff"]["calibration"]
    if calibration["source"] == "heldout":  # trains on less data; absent: fingerprints as before
        payload["heldout_fraction"] = calibration["fraction"]
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _remove_partial_writes(out: Path) -> None:
    """Delete temporary files a killed run left behind (``atomic_write`` names them
    ``.<file>.<random>.tmp``); the files they were to replace are whole."""
    for folder in (out, out / "checkpoints", out / "runs", out / "weights", out / "outputs"):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def _run_file(out: Path, name: str) -> Path:
    return out / "runs" / f"{_slug(name)}.json"


def _weights_file(out: Path, name: str) -> Path:
    return out / "weights" / f"{_slug(name)}.pt"


def _outputs_file(out: Path, name: str) -> Path:
    return out / "outputs" / f"{_slug(name)}.pt"


def _save_outputs(path: Path, outputs: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(outputs, tmp))


def _finished_run(context: _RunContext, run: RunConfig, seed: int, name: str) -> dict | None:
    """The saved results of a run that finished with this configuration, or None."""
    path = _run_file(context.out, name)
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        entry = saved["entry"]
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: run it again
    if saved.get("fingerprint") != run_fingerprint(context.cfg, run, seed):
        return None
    return entry if _weights_file(context.out, name).is_file() else None


def is_frame_dataset(dataset) -> bool:
    """True when items are frame sequences ``[T, C, H, W]`` rather than static ``[C, H, W]``
    (loads the first item; a config's dataset is answered by the registry instead)."""
    x, _ = dataset[0]
    return x.dim() == 4


def config_yields_frames(cfg: ExperimentConfig, dataset=None) -> bool:
    """Whether the configured dataset gives frame sequences, as its registry entry says
    (:func:`~spikecut.data.registry.dataset_yields_frames`); nothing is loaded.

    ``dataset`` is looked at only for a factory registered without ``frames=`` (deprecated).
    """
    registered = dataset_yields_frames(cfg.data.name)
    if registered is not None:
        return registered
    if dataset is None:
        raise ValueError(
            f"dataset {cfg.data.name!r} was registered without frames=; register it with "
            "frames=True (frame sequences) or frames=False (static inputs)"
        )
    return is_frame_dataset(dataset)


def _train_and_evaluate(context: _RunContext, run: RunConfig, seed: int, name: str) -> dict:
    """One run: train with the run's α (an ANN to convert, or the SNN), evaluate every rule."""
    cfg = context.cfg
    run_start = time.perf_counter()
    trained, result, ann_acc = _train(context, run, seed, name)
    release_freed_memory()  # training's blocks are not the sizes evaluation will ask for
    if context.world.is_main:
        _save_weights(trained, _weights_file(context.out, name))
    snn = snn_of(cfg, trained)
    try:
        evaluated = _evaluate(context, snn, seed, name)
    except (MemoryError, RuntimeError) as err:
        if not _is_out_of_memory(err):
            raise
        raise EvaluationOutOfMemory(
            f"run {name!r} ran out of memory in evaluation at batch "
            f"{context.batch_size_eval} on {context.device}; its training is saved: rerun with "
            f"--resume --set batch_size_eval={max(1, context.batch_size_eval // 4)}"
        ) from err
    return {
        "name": name,
        "alpha": run.alpha,
        "seed": seed,
        "ann_accuracy": ann_acc,
        **evaluated,
        "thresholds": [float(n.threshold) for n in snn.neurons],
        "train": result.summary(),
        "seconds": time.perf_counter() - run_start,
    }


def _train(
    context: _RunContext, run: RunConfig, seed: int, name: str
) -> tuple[torch.nn.Module, TrainResult, float | None]:
    """Train the run's network (:func:`~spikecut.networks.build_trainable`) with its α;
    returns it, the training result and, for conversion, the ANN's test accuracy."""
    cfg, world, device = context.cfg, context.world, context.device
    if is_conversion(cfg) and context.frames:
        raise ConfigError(
            "method 'conversion' trains an ANN on static images, but dataset "
            f"{cfg.data.name!r} gives frame sequences; use method 'direct'"
        )
    seed_everything(seed)  # same initial weights for every run of a seed: only α differs
    trained = build_trainable(cfg, context.train.num_classes)
    fit = FitOptions(
        world=world,
        validation=context.validation,
        checkpoint=context.out / "checkpoints" / f"{_slug(name)}.ckpt",
        resume=context.resume,
        fingerprint=run_fingerprint(cfg, run, seed),
        batch_size_eval=context.batch_size_eval,
    )
    train_kwargs = {
        "alpha": run.alpha,
        "seed": seed,
        "device": device,
        "progress": context.progress,
        "desc": f"train {name}",
        "options": fit,
    }
    if not is_conversion(cfg):
        d = cfg.direct
        result = train_snn(
            trained,
            context.train,
            cfg.train,
            T=cfg.T,
            loss=d.loss,
            tet_lambda=d.tet_lambda,
            frames=context.frames,
            rcs_rho=d.rcs_rho,
            mask_rho=d.mask_rho,
            **train_kwargs,
        )
        return trained, result, None
    result = train_ann(trained, context.train, cfg.train, **train_kwargs)
    ann_acc = accuracy(
        trained,
        context.test,
        lambda net, x: net(x),
        world,
        context.batch_size_eval,
        device,
        cfg.train.workers,
    )
    return trained, result, ann_acc


def _evaluate(context: _RunContext, snn: torch.nn.Module, seed: int, name: str) -> dict:
    """The SNN's outputs on the test and calibration splits, every exit rule on them, and
    with a held-out split the guaranteed rules (the fields of a run's results)."""
    cfg, world = context.cfg, context.world
    eval_kwargs = context.eval_kwargs()
    test = _shard(context.test, world)
    with OpCounter(snn) as counter:  # spikes and SOPs of the test pass (spikecut.ops)
        test_logits, test_labels = collect_cum_logits(
            snn, test, cfg.T, desc=f"snn {name}", **eval_kwargs
        )
    ops = _gather_ops(counter.pop(), len(context.test), world)
    test_logits = gather_samples(test_logits, len(context.test), world, dim=1)
    test_labels = gather_samples(test_labels, len(context.test), world)
    cal_logits, cal_labels = calibration_cum_logits(
        snn,
        _shard(context.calibration, world),
        cfg.T,
        dropout=cfg.cutoff.calibration_dropout,
        seed=seed + world.rank,
        **eval_kwargs,
    )
    cal_logits = gather_samples(cal_logits, len(context.calibration), world, dim=1)
    cal_labels = gather_samples(cal_labels, len(context.calibration), world)
    test_outputs = (test_logits, test_labels)
    evaluated = cutoff_fields(cfg, test_outputs, (cal_logits, cal_labels), ops)
    if context.heldout is not None:
        evaluated.update(_evaluate_guaranteed(context, snn, name, test_outputs, ops))
    return evaluated


def _evaluate_guaranteed(
    context: _RunContext,
    snn: torch.nn.Module,
    name: str,
    test_outputs: tuple[torch.Tensor, torch.Tensor],
    ops: OpCounts,
) -> dict:
    """The guaranteed rules, calibrated on the held-out split's outputs (cached on disk
    for ``spikecut check``), at the configured risk and along the risk sweep."""
    cfg, world = context.cfg, context.world
    test_logits, test_labels = test_outputs
    held_logits, held_labels = collect_cum_logits(
        snn, _shard(context.heldout, world), cfg.T, desc="held-out", **context.eval_kwargs()
    )
    held_logits = gather_samples(held_logits, len(context.heldout), world, dim=1)
    held_labels = gather_samples(held_labels, len(context.heldout), world)
    if world.is_main:  # cached for `spikecut check` (spikecut.risk.check_guarantee)
        outputs = {"heldout": (held_logits, held_labels), "test": (test_logits, test_labels)}
        _save_outputs(_outputs_file(context.out, name), outputs)
    return guaranteed_fields(cfg, test_outputs, (held_logits, held_labels), ops)


def cutoff_fields(cfg: ExperimentConfig, test_outputs, cal_outputs, ops=None) -> dict:
    """A run entry's per-step accuracy, OCT and every configured rule's ε sweep, the rules
    calibrated on ``cal_outputs`` (:func:`~spikecut.evaluate.evaluate_cutoff`)."""
    c = cfg.cutoff
    return evaluate_cutoff(
        *test_outputs, *cal_outputs, rules=c.rules, epsilons=c.epsilons, bins=c.bins, ops=ops
    )


def guaranteed_fields(cfg: ExperimentConfig, test_outputs, held_outputs, ops=None) -> dict:
    """A run entry's ``guaranteed`` and ``guaranteed_sweep`` fields: every guaranteed rule
    calibrated on the held-out outputs at the configured risk, and along the risk sweep."""
    g = cfg.cutoff.guarantee
    return {
        "guaranteed": evaluate_guaranteed_rules(
            *test_outputs,
            *held_outputs,
            rules=g.rules,
            risk=g.risk,
            delta=g.delta,
            alpha=g.alpha,
            max_set_size=g.max_set_size,
            ops=ops,
        ),
        "guaranteed_sweep": evaluate_guaranteed_sweep(
            *test_outputs, *held_outputs, rules=g.rules, risks=g.sweep_risks, delta=g.delta
        ),
    }


def _shard(dataset, world: World):
    """This rank's evaluation shard (the whole dataset in a single process)."""
    if not world.distributed:
        return dataset
    return Subset(dataset, shard_indices(len(dataset), world))


def _gather_ops(ops: OpCounts, total: int, world: World) -> OpCounts:
    """Per-sample operation counts of every rank's shard, in dataset order."""
    if not world.distributed:
        return ops
    for table in (ops.spikes, ops.sops, ops.analogue_macs):
        for name, counts in table.items():
            table[name] = gather_samples(counts, total, world, dim=1)
    return ops


_slug = slug  # the file name of a run's artefacts (weights, outputs, runs/<slug>.json)


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
    weights = _weights_file(out, run_name)
    if not weights.is_file():
        raise FileNotFoundError(f"weights of run {run_name!r} not found: {weights}")
    if num_classes is None:
        opts = dataset_options(cfg, progress=False)
        test = get_dataset(cfg.data.name, cfg.data.root, split="test", augment=False, **opts)
        num_classes = test.num_classes
    trained = build_trainable(cfg, num_classes)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        trained.load_state_dict(state)
    except Exception as err:
        raise ValueError(f"{weights}: cannot load the weights of run {run_name!r}: {err}") from err
    snn = snn_of(cfg, trained.eval())
    return snn, runs[run_name], cfg


def load_run_outputs(
    out_dir: str | Path, run_name: str, *, device: str = "cpu", progress: bool = False
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The SNN outputs ``{"heldout": (Y, labels), "test": (Y, labels)}`` of a finished run.

    Read from ``outputs/<slug>.pt`` where the run cached them; otherwise the SNN is rebuilt
    from its weights (:func:`load_run_snn`), run on the held-out and test splits of its
    configuration (the same seed carves the same held-out split), and the outputs cached.
    """
    out = Path(out_dir)
    path = _outputs_file(out, run_name)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    snn, _, cfg = load_run_snn(out, run_name)
    if cfg.cutoff.calibration.source != "heldout":
        raise ConfigError(
            f"run {run_name!r} in {out} has no held-out calibration split "
            f"(cutoff.calibration.source is {cfg.cutoff.calibration.source!r})"
        )
    _, _, _, test, heldout = _datasets(cfg, progress)
    frames = config_yields_frames(cfg, test)
    kwargs = {"batch_size": cfg.batch_size_eval, "device": device, "progress": progress}
    outputs = {
        "heldout": collect_cum_logits(snn, heldout, cfg.T, frames=frames, **kwargs),
        "test": collect_cum_logits(snn, test, cfg.T, frames=frames, **kwargs),
    }
    _save_outputs(path, outputs)
    return outputs
