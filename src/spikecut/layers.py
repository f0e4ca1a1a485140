"""Layers the method adds to ordinary networks: the QCFS activation and calibration dropout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .neurons import LIF

__all__ = ["QCFS", "CalibrationDropout", "calibration_dropout", "floor_ste"]


class _FloorSTE(torch.autograd.Function):
    """``floor`` whose backward pass is the identity (straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        return grad_output


def floor_ste(x: Tensor) -> Tensor:
    """``floor(x)`` with a straight-through gradient."""
    return _FloorSTE.apply(x)


class QCFS(nn.Module):
    """Quantisation-clip-floor-shift activation (SPEC §3), the ReLU of a convertible ANN.

    ``h(z) = θ · clip(floor(L·ReLU(z)/θ + 1/2) / L, 0, 1)`` with a trainable per-layer
    threshold θ. The floor passes gradients straight through, so both ``z`` and θ learn.
    Conversion replaces each QCFS by an IF neuron with this θ (see :mod:`spikecut.convert`).

    While :attr:`input_record` is a list, every forward call appends its input ``z`` to it;
    the ANN version of the RCS regulariser reads these.
    """

    def __init__(self, levels: int = 4, threshold: float = 8.0) -> None:
        super().__init__()
        if int(levels) != levels or levels < 1:
            raise ValueError(f"QCFS levels must be a positive integer, got {levels!r}")
        if not threshold > 0:
            raise ValueError(f"QCFS threshold must be > 0, got {threshold}")
        self.levels = int(levels)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.input_record: list[Tensor] | None = None

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={self.threshold.item():.4g}"

    def forward(self, z: Tensor) -> Tensor:
        if self.input_record is not None:
            self.input_record.append(z)
        theta = self.threshold
        q = floor_ste(F.relu(z) / theta * self.levels + 0.5) / self.levels
        return q.clamp(0.0, 1.0) * theta


class CalibrationDropout(nn.Module):
    """Dropout that is active whatever the module's train/eval mode.

    Inserted after every spiking layer during the Top-K calibration pass only (SPEC §6),
    to make the calibrated thresholds robust to the noise of unseen inputs.
    """

    def __init__(self, p: float = 0.3) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, training=True)


@contextmanager
def calibration_dropout(model: nn.Module, p: float = 0.3) -> Iterator[nn.Module]:
    """Insert :class:`CalibrationDropout` after every spiking layer of ``model``; undo on exit.

    The neurons themselves are kept (wrapped in a ``Sequential``), so their state and
    parameters are the same objects before, during and after calibration.
    """
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    if p > 0:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, LIF):
                    replaced.append((parent, name, child))
                    setattr(parent, name, nn.Sequential(child, CalibrationDropout(p)))
    try:
        yield model
    finally:
        for parent, name, child in replaced:
            setattr(parent, name, child)
