"""Training loops with the optional RCS regulariser (SPEC §3–§5).

``train_ann`` trains a QCFS-ANN with cross-entropy (for conversion); ``train_snn`` trains a
spiking network directly with the mean or TET loss on its per-step logits. Both use SGD with
momentum, weight decay and a cosine schedule to zero (the paper's optimiser), are seeded, and
run a fixed number of epochs: the final model is the result, nothing is selected on a test
split. ``L_RCS`` is computed and logged even when its weight α is 0, so runs can be compared.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .losses import snn_loss
from .neurons import reset
from .regularizers import RCSRegularizer
from .speed import prepare_for_training

__all__ = ["TrainConfig", "EpochLog", "TrainResult", "train_ann", "train_snn", "seed_everything"]


@dataclass
class TrainConfig:
    """Optimiser and schedule; defaults are the paper's values scaled to the small default."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0


@dataclass
class EpochLog:
    """What one epoch of training did, averaged over its batches."""

    epoch: int
    loss: float
    task_loss: float
    rcs: float
    train_accuracy: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        last = self.history[-1] if self.history else None
        return {
            "epochs": len(self.history),
            "final_loss": last.loss if last else float("nan"),
            "final_rcs": last.rcs if last else float("nan"),
            "final_train_accuracy": last.train_accuracy if last else float("nan"),
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
    """A batch as a time-major sequence: a static ``[B, ...]`` batch repeated ``steps`` times
    (direct encoding), or frames ``[B, T, ...]`` transposed to ``[T, B, ...]``."""
    if repeat:
        return x.unsqueeze(0).expand(steps, *x.shape)
    if x.dim() < 3 or x.shape[1] != steps:
        raise ValueError(f"expected frames [B, T={steps}, ...], got shape {tuple(x.shape)}")
    return x.transpose(0, 1)


# (loss, task loss, RCS loss, logits whose argmax is the prediction) of one batch
StepFn = Callable[[Tensor, Tensor, RCSRegularizer], tuple[Tensor, Tensor, Tensor, Tensor]]


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
) -> TrainResult:
    """Train a QCFS-ANN in place with cross-entropy + ``alpha`` · L_RCS."""

    def step(x: Tensor, y: Tensor, rcs: RCSRegularizer):
        logits = model(x)
        task_loss = F.cross_entropy(logits, y)
        rcs_loss = rcs.loss(logits, y)
        return task_loss + alpha * rcs_loss if alpha else task_loss, task_loss, rcs_loss, logits

    return _fit(
        model, dataset, config, step, seed=seed, device=device, progress=progress, desc=desc
    )


def train_snn(
    snn: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    steps: int,
    loss: str = "tet",
    tet_lambda: float = 1e-3,
    alpha: float = 0.0,
    repeat: bool = True,
    rho: float = 0.3,
    mask_rho: float = 0.3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train a spiking network in place with surrogate gradients (SPEC §4, §5).

    Each batch is run for ``steps`` steps from a reset state: static inputs are repeated
    (``repeat=True``), frame datasets give ``[T, ...]`` items. The loss is ``loss`` ("tet"
    or "mean") on the per-step logits + ``alpha`` · L_RCS (SNN version, windows ``rho`` and
    ``mask_rho``). Train accuracy is that of the time-averaged output.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")

    def step(x: Tensor, y: Tensor, rcs: RCSRegularizer):
        reset(snn)
        outputs = snn(as_time_major(x, steps, repeat))
        task_loss = snn_loss(loss, outputs, y, tet_lambda=tet_lambda)
        rcs_loss = rcs.loss(outputs, y)
        total = task_loss + alpha * rcs_loss if alpha else task_loss
        return total, task_loss, rcs_loss, outputs.detach().mean(0)

    result = _fit(
        snn,
        dataset,
        config,
        step,
        seed=seed,
        device=device,
        progress=progress,
        desc=desc,
        rcs_options={"rho": rho, "mask_rho": mask_rho},
    )
    reset(snn)
    return result


def _fit(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    step_fn: StepFn,
    *,
    seed: int,
    device: str | torch.device,
    progress: bool,
    desc: str,
    rcs_options: dict | None = None,
) -> TrainResult:
    """The loop shared by both trainers: seeded order, SGD + cosine schedule, logging."""
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    generator = seed_everything(seed)
    prepare_for_training(model.to(device), device).train()
    loader = DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, drop_last=True, generator=generator
    )
    if len(loader) == 0:
        raise ValueError(
            f"the training set has {len(dataset)} samples, fewer than one batch of "
            f"{config.batch_size}"
        )
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    total_steps = config.epochs * len(loader)
    warmup_steps = int(config.warmup_epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _cosine_lr(step, total_steps, warmup_steps)
    )
    result = TrainResult()
    start = time.perf_counter()
    bar = tqdm(total=total_steps, desc=desc, disable=not progress, leave=False)
    with RCSRegularizer(model, **(rcs_options or {})) as rcs:
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            sums = {"loss": 0.0, "task": 0.0, "rcs": 0.0, "correct": 0, "seen": 0}
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                loss, task_loss, rcs_loss, logits = step_fn(x, y, rcs)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"training diverged at epoch {epoch}: loss is {loss.item()} "
                        f"(lr={scheduler.get_last_lr()[0]:.4g}); lower the learning rate or alpha"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                n = y.shape[0]
                sums["loss"] += loss.item() * n
                sums["task"] += task_loss.item() * n
                sums["rcs"] += rcs_loss.item() * n
                sums["correct"] += int((logits.argmax(1) == y).sum())
                sums["seen"] += n
                bar.update(1)
                bar.set_postfix(
                    epoch=epoch,
                    loss=f"{loss.item():.3f}",
                    rcs=f"{rcs_loss.item():.2f}",
                    refresh=False,
                )
            seen = sums["seen"]
            result.history.append(
                EpochLog(
                    epoch=epoch,
                    loss=sums["loss"] / seen,
                    task_loss=sums["task"] / seen,
                    rcs=sums["rcs"] / seen,
                    train_accuracy=sums["correct"] / seen,
                    lr=optimizer.param_groups[0]["lr"],
                    seconds=time.perf_counter() - epoch_start,
                )
            )
    bar.close()
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
