"""Training loops with the optional RCS regulariser (SPEC §3–§5).

``train_ann`` trains a QCFS-ANN with cross-entropy (for conversion); ``train_snn`` trains a
spiking network directly with the mean or TET loss on its per-step logits. Both use SGD with
momentum, weight decay and a cosine schedule to zero (the paper's optimiser) and share one
loop that also runs under ``torchrun`` (DDP, :mod:`spikecut.distributed`), in mixed precision
on CUDA, checkpoints every epoch (:mod:`spikecut.checkpoint`) and resumes. The final model is
the last epoch's, or the best epoch's on a validation split carved from the training data;
never selected on the test split. ``L_RCS`` is computed and logged even when its weight α is
0, so runs can be compared.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ._deprecation import renamed_parameters, warn_deprecated
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .distributed import (
    ShardedSampler,
    World,
    all_reduce_sum,
    broadcast_state,
    epoch_seed,
    shard_indices,
    sync_batchnorm,
    unsync_batchnorm,
)
from .layers import QCFS, clamp_thresholds
from .layout import to_time_major
from .losses import snn_loss
from .neurons import reset
from .regularizers import RCSRegularizer
from .speed import prepare_for_training
from .time_checkpoint import time_checkpointing

__all__ = [
    "TrainingDiverged",
    "TrainConfig",
    "FitOptions",
    "EpochLog",
    "TrainResult",
    "train_ann",
    "train_snn",
    "seed_everything",
    "accuracy",
]


@dataclass
class TrainConfig:
    """Optimiser, schedule and how training runs; defaults suit the small embedded default.

    ``batch_size`` is the global batch: under torchrun each of N processes takes
    ``batch_size / N``. ``precision`` is "fp32", or mixed precision: "bf16", or "fp16" with
    loss scaling (CUDA only). ``workers`` are DataLoader worker processes.
    ``sync_batchnorm`` pools BatchNorm statistics over all processes.
    ``validation_fraction`` of the training data (stratified, seeded) is held out to measure
    accuracy after each epoch; ``select: best`` then keeps the best epoch's weights.
    ``time_checkpoint`` (SNN training only): run BPTT in checkpointed chunks of that many
    steps, recomputed in the backward pass, so activation memory stops growing with T for
    about one more forward pass of compute; ``time_checkpoint_norms``: ``exact`` refuses
    BatchNorm whose statistics pool over all T steps (gradients equal plain BPTT),
    ``chunk`` lets it pool over each chunk (:mod:`spikecut.time_checkpoint`).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    precision: str = "fp32"
    workers: int = 0
    sync_batchnorm: bool = False
    validation_fraction: float = 0.0
    select: str = "last"
    time_checkpoint: int | None = None
    time_checkpoint_norms: str = "exact"


@dataclass
class EpochLog:
    """What one epoch of training did, averaged over its batches."""

    epoch: int
    loss: float
    task_loss: float
    rcs: float | None  # None where RCS was not recorded (time checkpointing at alpha = 0)
    train_accuracy: float
    lr: float
    seconds: float
    samples_per_second: float = float("nan")
    validation_accuracy: float | None = None


@dataclass
class TrainResult:
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0
    selected_epoch: int | None = None  # the epoch whose weights are the result
    resumed_from: int | None = None  # the checkpoint's epoch when the run was resumed
    peak_memory_mb: float | None = None  # CUDA only
    # optimiser steps x QCFS layers whose threshold was raised to its floor (layers.QCFS)
    threshold_clamps: int = 0

    def summary(self) -> dict:
        last = self.history[-1] if self.history else None
        rates = [e.samples_per_second for e in self.history if math.isfinite(e.samples_per_second)]
        return {
            "epochs": len(self.history),
            "final_loss": last.loss if last else float("nan"),
            "final_rcs": last.rcs if last else float("nan"),
            "final_train_accuracy": last.train_accuracy if last else float("nan"),
            "selected_epoch": self.selected_epoch,
            "resumed_from": self.resumed_from,
            "samples_per_second": sum(rates) / len(rates) if rates else None,
            "peak_memory_mb": self.peak_memory_mb,
            "threshold_clamps": self.threshold_clamps,
            "seconds": self.seconds,
            "history": [asdict(e) for e in self.history],
        }


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (initialisation, augmentation) and return a data-order RNG."""
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def _cosine_lr(step: int, total: int, warmup: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def as_time_major(x: Tensor, steps: int, repeat: bool) -> Tensor:
    """Deprecated: use :func:`spikecut.layout.to_time_major` (``frames = not repeat``)."""
    warn_deprecated(
        "spikecut.train.as_time_major(x, steps, repeat)", "to_time_major(x, T, frames=...)"
    )
    return to_time_major(x, steps, frames=not repeat)


# (net, x, y, rcs) -> (loss, task loss, RCS loss, logits whose argmax is the prediction);
# ``net`` is the model, or its DistributedDataParallel wrapper under torchrun.
StepFn = Callable[
    [nn.Module, Tensor, Tensor, RCSRegularizer], tuple[Tensor, Tensor, Tensor, Tensor]
]


def train_ann(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    alpha: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "train",
    options: FitOptions | None = None,
) -> TrainResult:
    """Train a QCFS-ANN in place with cross-entropy + ``alpha`` · L_RCS.

    ``options`` (:class:`FitOptions`): processes, validation, checkpoints and resume.
    """
    if config.time_checkpoint is not None:
        raise ValueError(
            f"time_checkpoint={config.time_checkpoint} applies to SNN training (train_snn); "
            "an ANN has no time steps to checkpoint: set it to None"
        )

    def step(net: nn.Module, x: Tensor, y: Tensor, rcs: RCSRegularizer):
        logits = net(x)
        task_loss = F.cross_entropy(logits, y)
        rcs_loss = rcs.loss(logits, y)
        return task_loss + alpha * rcs_loss if alpha else task_loss, task_loss, rcs_loss, logits

    return _fit(
        model,
        dataset,
        config,
        step,
        lambda net, x: net(x),
        seed=seed,
        device=device,
        progress=progress,
        desc=desc,
        options=options,
        alpha=alpha,
    )


@renamed_parameters(steps="T", repeat=("frames", operator.not_), rho="rcs_rho")
def train_snn(
    snn: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    T: int,
    loss: str = "tet",
    tet_lambda: float = 1e-3,
    alpha: float = 0.0,
    frames: bool = False,
    rcs_rho: float = 0.3,
    mask_rho: float = 0.3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "train",
    options: FitOptions | None = None,
) -> TrainResult:
    """Train a spiking network in place with surrogate gradients (SPEC §4, §5).

    Each batch is run for ``T`` steps from a reset state: static inputs are repeated
    (``frames=False``), frame datasets give ``[T, ...]`` items (``frames=True``); see
    :mod:`spikecut.layout`. The loss is ``loss`` ("tet" or "mean", TET weight
    ``tet_lambda``) on the per-step logits + ``alpha`` · L_RCS (SNN version, windows
    ``rcs_rho`` and ``mask_rho``). Train accuracy is that of the time-averaged output.
    Deprecated keywords: ``steps`` (T), ``repeat`` (not frames), ``rho`` (rcs_rho).
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")

    def step(net: nn.Module, x: Tensor, y: Tensor, rcs: RCSRegularizer):
        reset(snn)
        outputs = net(to_time_major(x, T, frames=frames))
        task_loss = snn_loss(loss, outputs, y, tet_lambda=tet_lambda)
        rcs_loss = rcs.loss(outputs, y)
        total = task_loss + alpha * rcs_loss if alpha else task_loss
        return total, task_loss, rcs_loss, outputs.detach().mean(0)

    # RCS-SNN reads every step's membranes; at alpha = 0 it is only a diagnostic, and under
    # time checkpointing keeping them would undo the memory the checkpoints save.
    record_rcs = bool(alpha) or config.time_checkpoint is None

    def predict(net: nn.Module, x: Tensor) -> Tensor:
        reset(net)
        return net(to_time_major(x, T, frames=frames)).float().mean(0)

    with time_checkpointing(snn, config.time_checkpoint, config.time_checkpoint_norms):
        result = _fit(
            snn,
            dataset,
            config,
            step,
            predict,
            seed=seed,
            device=device,
            progress=progress,
            desc=desc,
            rcs_options={"rcs_rho": rcs_rho, "mask_rho": mask_rho, "record": record_rcs},
            options=options,
            alpha=alpha,
        )
    reset(snn)
    return result


@dataclass
class FitOptions:
    """How a training loop runs beyond the optimiser: processes, checkpoints, selection.

    ``validation`` is a dataset carved from the training data (never the test split); with
    it, accuracy is measured after every epoch and ``TrainConfig.select="best"`` keeps the
    weights of the best epoch (ties keep the earlier one). ``checkpoint`` is a file written
    atomically after every epoch; ``resume=True`` continues from it when it exists.
    ``fingerprint`` names what produced the run (config and seed): a checkpoint of another
    configuration is refused.
    """

    world: World = field(default_factory=World)
    validation: Dataset | None = None
    checkpoint: Path | None = None
    resume: bool = False
    fingerprint: str = ""
    batch_size_eval: int = 256
    # Called after each epoch's checkpoint with the epoch number (e.g. to stop a test run).
    on_epoch_end: Callable[[int], None] | None = None


def _fit(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    step_fn: StepFn,
    predict: Callable[[nn.Module, Tensor], Tensor],
    *,
    seed: int,
    device: str | torch.device,
    progress: bool,
    desc: str,
    rcs_options: dict | None = None,
    options: FitOptions | None = None,
    alpha: float = 0.0,
) -> TrainResult:
    """The loop shared by both trainers: seeded per-epoch order, SGD + cosine schedule, DDP,
    mixed precision, validation, checkpoints and resume.

    Epoch ``e`` is seeded from ``(seed, e, rank)`` alone (data order, augmentation, dropout),
    so a run resumed from the checkpoint of epoch ``e - 1`` repeats the uninterrupted run.
    ``predict(model, x)`` gives the logits whose argmax is the prediction (validation).
    ``alpha`` (the RCS weight the step uses) only names it when training diverges.
    """
    opts = options or FitOptions()
    device = torch.device(device)
    _check_fit(config, opts, device)
    loop = _set_up(model, dataset, config, opts.world, seed, device)
    result = TrainResult()
    best: dict = {}
    first_epoch = 1
    if opts.resume and opts.checkpoint is not None and opts.checkpoint.is_file():
        first_epoch, best = _restore(opts, model, *loop.checkpointed(), result)
    start = time.perf_counter() - result.seconds
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    bar = tqdm(
        total=config.epochs * loop.steps_per_epoch,
        initial=(first_epoch - 1) * loop.steps_per_epoch,
        desc=desc,
        disable=not (progress and opts.world.is_main),
        leave=False,
    )
    with RCSRegularizer(model, **(rcs_options or {})) as rcs:
        for epoch in range(first_epoch, config.epochs + 1):
            log, clamps = _train_one_epoch(loop, step_fn, rcs, epoch, seed, alpha, bar)
            result.threshold_clamps += clamps
            if opts.validation is not None:
                with rcs.paused():
                    log.validation_accuracy = accuracy(
                        model,
                        opts.validation,
                        predict,
                        opts.world,
                        opts.batch_size_eval,
                        device,
                        config.workers,
                    )
                best = _keep_best(best, model, epoch, log.validation_accuracy)
            result.history.append(log)
            result.seconds = time.perf_counter() - start
            if opts.checkpoint is not None and opts.world.is_main:
                _save(opts, model, *loop.checkpointed(), result, best, epoch)
            _barrier(opts.world)
            if opts.on_epoch_end is not None:
                opts.on_epoch_end(epoch)
    bar.close()
    _select_final(model, config, opts.world, best, result)
    if device.type == "cuda":
        result.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class _Loop:
    """What one training run sets up once and every epoch uses (optimiser set-up)."""

    model: nn.Module
    net: nn.Module  # the model, or its DistributedDataParallel wrapper
    loader: DataLoader
    sampler: ShardedSampler
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    device: torch.device
    world: World
    qcfs_layers: list[QCFS]

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.batches

    def checkpointed(self) -> tuple:
        """The objects a checkpoint saves beside the model: optimiser, schedule, scaler."""
        return self.optimizer, self.scheduler, self.scaler


def _set_up(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    world: World,
    seed: int,
    device: torch.device,
) -> _Loop:
    """Model on the device (BN synchronised if asked), sharded loader, SGD with the cosine
    schedule, and the mixed-precision scaler."""
    model.to(device)
    if config.sync_batchnorm and world.distributed:
        sync_batchnorm(model)
    prepare_for_training(model, device).train()
    sampler = ShardedSampler(len(dataset), config.batch_size, world, seed=seed)
    if sampler.batches == 0:
        raise ValueError(
            f"the training set has {len(dataset)} samples, fewer than one batch of "
            f"{config.batch_size}"
        )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size // world.size,
        sampler=sampler,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
    )
    net = _wrap_ddp(model, world, device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    total_steps = config.epochs * sampler.batches
    warmup_steps = int(config.warmup_epochs * sampler.batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _cosine_lr(step, total_steps, warmup_steps)
    )
    return _Loop(
        model=model,
        net=net,
        loader=loader,
        sampler=sampler,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=config.precision == "fp16"),
        autocast_dtype=PRECISIONS[config.precision],
        device=device,
        world=world,
        qcfs_layers=[m for m in model.modules() if isinstance(m, QCFS)],
    )


class _EpochTotals:
    """Running sums of one epoch (loss·n, task loss·n, RCS·n, correct, seen), kept on the
    device in one float64 tensor and read once, summed over processes, at the epoch's end."""

    FIELDS = ("loss", "task_loss", "rcs", "correct", "seen")

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(self.FIELDS), dtype=torch.float64, device=device)

    def add(
        self, loss: Tensor, task_loss: Tensor, rcs: Tensor | None, logits: Tensor, y: Tensor
    ) -> None:
        n = y.shape[0]
        self.sums += torch.stack(
            [
                loss.detach().double() * n,
                task_loss.detach().double() * n,
                (
                    rcs.detach().double()
                    if rcs is not None
                    else loss.new_zeros((), dtype=torch.float64)
                )
                * n,
                (logits.argmax(1) == y).sum().double(),
                torch.tensor(float(n), dtype=torch.float64, device=self.sums.device),
            ]
        )

    def read(self) -> dict[str, float]:
        """The sums over every process, by name."""
        return dict(zip(self.FIELDS, all_reduce_sum(self.sums).tolist(), strict=True))


def _train_one_epoch(
    loop: _Loop,
    step_fn: StepFn,
    rcs: RCSRegularizer,
    epoch: int,
    seed: int,
    alpha: float,
    bar: tqdm,
) -> tuple[EpochLog, int]:
    """One pass over the training shard; returns its log and the QCFS threshold clamps."""
    epoch_start = time.perf_counter()
    torch.manual_seed(epoch_seed(seed, epoch, loop.world.rank))
    loop.sampler.set_epoch(epoch)
    loop.model.train()
    device, dtype = loop.device, loop.autocast_dtype
    totals = _EpochTotals(device)
    clamps = torch.zeros((), dtype=torch.long, device=device)  # read once per epoch
    for batch, (x, y) in enumerate(loop.loader):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, task_loss, rcs_loss, logits = step_fn(loop.net, x, y, rcs)
        if batch % CHECK_EVERY == 0:
            _check_finite(loss.item(), epoch, loop.scheduler, alpha)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
        loop.optimizer.zero_grad(set_to_none=True)
        loop.scaler.scale(loss).backward()
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        if loop.qcfs_layers:  # keep QCFS thresholds in their domain θ > 0 (layers.QCFS)
            clamps += clamp_thresholds(loop.qcfs_layers)
        loop.scheduler.step()
        totals.add(loss, task_loss, rcs_loss, logits, y)
        bar.update(1)
    sums = totals.read()
    _check_finite(sums["loss"], epoch, loop.scheduler, alpha)
    seconds = time.perf_counter() - epoch_start
    seen = sums["seen"]
    log = EpochLog(
        epoch=epoch,
        loss=sums["loss"] / seen,
        task_loss=sums["task_loss"] / seen,
        rcs=sums["rcs"] / seen if rcs.record else None,
        train_accuracy=sums["correct"] / seen,
        lr=loop.optimizer.param_groups[0]["lr"],
        seconds=seconds,
        samples_per_second=seen / seconds,
    )
    return log, int(clamps)


def _keep_best(best: dict, model: nn.Module, epoch: int, accuracy: float) -> dict:
    """The best epoch so far on the validation split (ties keep the earlier one)."""
    if not best or accuracy > best["accuracy"]:
        return {"epoch": epoch, "accuracy": accuracy, "model": _cpu_state(model)}
    return best


def _select_final(
    model: nn.Module, config: TrainConfig, world: World, best: dict, result: TrainResult
) -> None:
    """Load the selected epoch's weights (``select: best``) and hand every rank rank 0's
    weights, in eval mode."""
    if config.select == "best" and best:
        model.load_state_dict(best["model"])
        result.selected_epoch = best["epoch"]
    else:
        result.selected_epoch = config.epochs
    if config.sync_batchnorm and world.distributed:
        unsync_batchnorm(model)
    broadcast_state(model)  # every rank evaluates rank 0's weights
    model.eval()


PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
SELECTIONS = ("last", "best")
# Steps between reads of the loss on the host (each read waits for the GPU).
CHECK_EVERY = 25


def _check_fit(config: TrainConfig, opts: FitOptions, device: torch.device) -> None:
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    if config.precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}"
        )
    if config.precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision 'fp16' needs a CUDA device, the model is on {device}; use 'bf16'"
        )
    if config.select not in SELECTIONS:
        raise ValueError(f"select must be one of {', '.join(SELECTIONS)}, got {config.select!r}")
    if config.select == "best" and opts.validation is None:
        raise ValueError("select='best' needs a validation split (train.validation_fraction > 0)")


class TrainingDiverged(FloatingPointError):
    """Training produced a non-finite loss: the run cannot go on with these settings.

    Attributes: ``epoch`` (1-based), ``lr`` (the learning rate at that step), ``loss`` (the
    non-finite value), ``alpha`` (the RCS weight of the run) and ``run`` (the run's name;
    ``None`` until a caller that knows it, e.g. :func:`spikecut.experiment.run_experiment`,
    names it with :meth:`in_run`); ``report``, where an experiment wrote one for the runs
    that finished before. A ``FloatingPointError``, so code that caught that still
    does; ``str(err)`` is one line that says what to change.
    """

    def __init__(
        self, epoch: int, lr: float, loss: float, alpha: float = 0.0, run: str | None = None
    ) -> None:
        super().__init__(epoch, lr, loss, alpha, run)  # args: pickles and copies as it is
        self.epoch, self.lr, self.loss, self.alpha, self.run = epoch, lr, loss, alpha, run
        self.report: Path | None = None  # the report of the runs finished before it, if any

    def __str__(self) -> str:
        who = f"run {self.run!r}" if self.run is not None else "training"
        fix = "lower train.lr"
        if self.alpha:
            fix += f" or the run's alpha ({self.alpha:g})"
        where = f"at epoch {self.epoch}: loss is {self.loss} (lr {self.lr:.4g})"
        return f"{who} diverged {where}; {fix}"

    def in_run(self, run: str) -> TrainingDiverged:
        """The same divergence, naming the run it happened in."""
        return TrainingDiverged(self.epoch, self.lr, self.loss, self.alpha, run)


def _check_finite(loss: float, epoch: int, scheduler, alpha: float) -> None:
    """Raise :class:`TrainingDiverged` when ``loss`` is NaN or infinite."""
    if not math.isfinite(loss):
        raise TrainingDiverged(epoch, scheduler.get_last_lr()[0], loss, alpha)


def _wrap_ddp(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _barrier(world: World) -> None:
    if world.distributed:
        torch.distributed.barrier()


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@torch.no_grad()
def accuracy(
    model: nn.Module,
    dataset: Dataset,
    predict: Callable[[nn.Module, Tensor], Tensor],
    world: World | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
) -> float:
    """Top-1 accuracy of ``predict(model, x)`` on ``dataset``, each rank taking its shard
    (``workers`` DataLoader processes load it)."""
    world = world or World()
    was_training = model.training
    model.eval()
    shard = Subset(dataset, shard_indices(len(dataset), world))
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for x, y in DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers):
        y = y.to(device)
        counts[0] += (predict(model, x.to(device)).argmax(1) == y).sum()
        counts[1] += y.shape[0]
    model.train(was_training)
    correct, seen = all_reduce_sum(counts).tolist()
    return correct / seen if seen else float("nan")


def _save(opts, model, optimizer, scheduler, scaler, result, best, epoch) -> None:
    state = {
        "kind": CHECKPOINT_KIND,
        "fingerprint": opts.fingerprint,
        "epoch": epoch,
        "model": _cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "history": [asdict(e) for e in result.history],
        "seconds": result.seconds,
        "threshold_clamps": result.threshold_clamps,
        "best": best,
    }
    save_checkpoint(opts.checkpoint, state)


CHECKPOINT_KIND = "spikecut-training"


def _restore(opts, model, optimizer, scheduler, scaler, result) -> tuple[int, dict]:
    """Load the checkpoint into the training objects; return (next epoch, best so far)."""
    state = load_checkpoint(opts.checkpoint)
    path = opts.checkpoint
    if state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not a training checkpoint (kind {state.get('kind')!r})")
    if state.get("fingerprint") != opts.fingerprint:
        raise CheckpointError(
            f"{path}: was written by another configuration or seed "
            f"({state.get('fingerprint')!r}, this run is {opts.fingerprint!r}); "
            "resume with the same configuration, or start afresh without --resume"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        result.history = [EpochLog(**e) for e in state["history"]]
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: does not fit this model or optimiser: {err}") from None
    result.seconds = float(state.get("seconds", 0.0))
    result.threshold_clamps = int(state.get("threshold_clamps", 0))
    result.resumed_from = int(state["epoch"])
    return int(state["epoch"]) + 1, dict(state.get("best") or {})
