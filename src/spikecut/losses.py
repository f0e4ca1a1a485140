"""Losses for directly trained SNNs (SPEC §4), on per-step logits ``o`` of shape ``[T, B, K]``.

* mean loss: cross-entropy of the time-averaged output, ``CE((1/T)·Σ_t o(t), y)``;
* TET: ``(1 − λ)·(1/T)·Σ_t CE(o(t), y) + λ·MSE(o, φ)``, which supervises every step and so
  pushes each step's output (not only the sum) towards the right answer.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from ._deprecation import renamed_parameters

__all__ = ["mean_loss", "tet_loss", "LOSSES", "snn_loss"]


def _check(outputs: Tensor, labels: Tensor) -> None:
    if outputs.dim() != 3:
        raise ValueError(f"expected per-step logits [T, B, K], got shape {tuple(outputs.shape)}")
    if labels.shape != outputs.shape[1:2]:
        raise ValueError(f"expected labels [B={outputs.shape[1]}], got shape {tuple(labels.shape)}")


def mean_loss(outputs: Tensor, labels: Tensor) -> Tensor:
    """``CE(mean_t o(t), y)``."""
    _check(outputs, labels)
    return F.cross_entropy(outputs.mean(0), labels)


@renamed_parameters(lam="tet_lambda")
def tet_loss(outputs: Tensor, labels: Tensor, tet_lambda: float = 1e-3, phi: float = 1.0) -> Tensor:
    """Temporal efficient training loss: per-step CE averaged over T, plus λ·MSE(o, φ).

    ``tet_lambda`` is λ (the config key ``direct.tet_lambda``; ``lam`` is its deprecated name).
    """
    _check(outputs, labels)
    steps, batch, classes = outputs.shape
    per_step_ce = F.cross_entropy(
        outputs.reshape(steps * batch, classes), labels.repeat(steps)
    )  # mean over (t, n) = (1/T)·Σ_t CE(o(t), y) with CE averaged over the batch
    if tet_lambda == 0:
        return per_step_ce
    mse = (outputs - phi).pow(2).mean()
    return (1.0 - tet_lambda) * per_step_ce + tet_lambda * mse


LOSSES = {"mean": mean_loss, "tet": tet_loss}


def snn_loss(name: str, outputs: Tensor, labels: Tensor, *, tet_lambda: float = 1e-3) -> Tensor:
    """The loss called ``name`` ("mean" or "tet") of per-step logits."""
    if name == "tet":
        return tet_loss(outputs, labels, tet_lambda=tet_lambda)
    if name == "mean":
        return mean_loss(outputs, labels)
    raise ValueError(f"unknown SNN loss {name!r}; expected one of: {', '.join(LOSSES)}")
