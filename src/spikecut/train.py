"""Training loop for QCFS-ANNs with the optional RCS regulariser (SPEC §3–§5).

SGD with momentum, weight decay and a cosine schedule to zero (the paper's optimiser),
seeded, fixed number of epochs: the final model is the result, nothing is selected on a test
split. ``L_RCS`` is computed and logged even when its weight α is 0, so runs can be compared.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .regularizers import RCSRegularizer

__all__ = ["TrainConfig", "EpochLog", "train_ann", "seed_everything"]


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
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    generator = seed_everything(seed)
    model.to(device).train()
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
    with RCSRegularizer(model) as rcs:
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            sums = {"loss": 0.0, "task": 0.0, "rcs": 0.0, "correct": 0, "seen": 0}
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                logits = model(x)
                task_loss = F.cross_entropy(logits, y)
                rcs_loss = rcs.loss(logits, y)
                loss = task_loss + alpha * rcs_loss if alpha else task_loss
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
                    epoch=epoch, loss=f"{loss.item():.3f}", rcs=f"{rcs_loss.item():.2f}"
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
