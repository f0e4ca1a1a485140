"""Layers the method adds to ordinary networks: QCFS, TEBN and calibration dropout."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._deprecation import renamed_parameters, warn_deprecated
from ._modules import replace_children, restore_children
from .neurons import LIF, TemporalModule

__all__ = [
    "QCFS",
    "TEBN",
    "CalibrationDropout",
    "calibration_dropout",
    "floor_ste",
    "MIN_THRESHOLD_FRACTION",
    "clamp_thresholds",
]

# A QCFS threshold is kept >= this fraction of its initial value during training.
MIN_THRESHOLD_FRACTION = 0.01


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

    θ must stay positive (``h`` divides by it, and the IF neuron it becomes needs θ > 0), but
    plain SGD does not keep it so: where the QCFS sits between two BatchNorms (BN → QCFS →
    conv → BN), the network's output does not change when the first BN's γ, β and θ are
    scaled together, so the gradient is orthogonal to that vector and SGD only turns its
    direction; θ is one coordinate of it, and with θ small next to ‖γ‖ (θ = 1 against 16 or
    64 channels of γ = 1) a few noisy steps turn it through zero. A QCFS with θ ≤ 0 outputs
    zeros, the BN after it sees zero variance and multiplies gradients by 1/sqrt(eps); on
    ResNet-20 that ended training with NaN. :func:`clamp_thresholds` (called by the
    trainers after every optimiser step) keeps θ >= :attr:`min_threshold`, by default
    ``MIN_THRESHOLD_FRACTION`` (1 %) of the initial θ: a projection onto the valid domain that
    leaves every step inside it unchanged.
    """

    def __init__(
        self, levels: int = 4, threshold: float = 8.0, min_threshold: float | None = None
    ) -> None:
        super().__init__()
        if int(levels) != levels or levels < 1:
            raise ValueError(f"QCFS levels must be a positive integer, got {levels!r}")
        if not threshold > 0:
            raise ValueError(f"QCFS threshold must be > 0, got {threshold}")
        if min_threshold is None:
            min_threshold = MIN_THRESHOLD_FRACTION * float(threshold)
        if not 0 < min_threshold <= threshold:
            raise ValueError(
                f"QCFS min_threshold must be in (0, threshold={threshold}], got {min_threshold}"
            )
        self.levels = int(levels)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.min_threshold = float(min_threshold)
        self.input_record: list[Tensor] | None = None

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={self.threshold.item():.4g}"

    def forward(self, z: Tensor) -> Tensor:
        if self.input_record is not None:
            self.input_record.append(z)
        theta = self.threshold
        q = floor_ste(F.relu(z) / theta * self.levels + 0.5) / self.levels
        return q.clamp(0.0, 1.0) * theta


@torch.no_grad()
def clamp_thresholds(layers: nn.Module | Iterable[QCFS]) -> Tensor:
    """Raise every QCFS threshold below its ``min_threshold`` to it (in place).

    ``layers`` is a model (its QCFS modules are used) or the QCFS modules themselves. The
    projection step of projected SGD onto θ >= θ_min (see :class:`QCFS`). Returns how many
    thresholds it raised as a 0-d tensor on their device, counted without a host sync, so a
    trainer can project after every step and read the count once per epoch.
    """
    if isinstance(layers, nn.Module):
        layers = [m for m in layers.modules() if isinstance(m, QCFS)]
    raised = torch.zeros((), dtype=torch.long)
    for layer in layers:
        raised = raised + (layer.threshold < layer.min_threshold)
        layer.threshold.clamp_(min=layer.min_threshold)
    return raised


class TEBN(TemporalModule):
    """Temporal effective batch normalisation (SPEC §4): BN pooled over time, a scale per step.

    The statistics pool over batch, time and space (one ``BatchNorm2d`` on the ``[T*B, C, H,
    W]`` fold), then step t's output is multiplied by a learnable scalar ``p_t`` (initial 1,
    no per-step bias). The layer counts the steps it has seen since the last :meth:`reset`, so
    running one step at a time uses the same ``p_t`` as running the whole sequence.

    Args:
        num_features: channels C.
        T: the number of timesteps the layer has scales for (deprecated name: ``steps``).
    """

    @renamed_parameters(steps="T")
    def __init__(
        self, num_features: int, T: int, *, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        if T < 1:
            raise ValueError(f"TEBN needs T >= 1, got {T}")
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
        self.scale = nn.Parameter(torch.ones(T))
        self.steps_seen: int
        self.register_state("steps_seen", 0)  # steps since the last reset: picks p_t

    @classmethod
    @renamed_parameters(steps="T")
    def from_batchnorm(cls, bn: nn.BatchNorm2d, T: int) -> TEBN:
        """A TEBN that starts from ``bn``'s affine parameters and running statistics."""
        layer = cls(bn.num_features, T, eps=bn.eps, momentum=bn.momentum or 0.1)
        layer.bn.load_state_dict(bn.state_dict())
        return layer.to(bn.weight.device if bn.weight is not None else "cpu")

    @property
    def T(self) -> int:
        """The number of timesteps the layer has scales for."""
        return self.scale.shape[0]

    @property
    def steps(self) -> int:
        """Deprecated name of :attr:`T`."""
        warn_deprecated("TEBN.steps", "TEBN.T")
        return self.T

    def extra_repr(self) -> str:
        return f"{self.bn.num_features}, T={self.T}"

    def forward(self, x: Tensor) -> Tensor:
        seq = self.unfold(x)
        steps = seq.shape[0]
        first, last = self.steps_seen + 1, self.steps_seen + steps
        if last > self.T:
            raise ValueError(
                f"TEBN has per-step scales for {self.T} steps but was asked for steps "
                f"{first}..{last}; reset the network between inputs or build it with "
                f"T >= {last}"
            )
        y = self.bn(seq.flatten(0, 1)).reshape(seq.shape)
        scale = self.scale[self.steps_seen : self.steps_seen + steps].view(
            steps, *([1] * (seq.dim() - 1))
        )
        self.steps_seen += steps
        return (y * scale).reshape(x.shape)


class CalibrationDropout(TemporalModule):
    """Dropout that is active whatever the module's train/eval mode, with masks that do not
    depend on how the pass is batched.

    Inserted after every spiking layer during the Top-K calibration pass only (SPEC §6),
    to make the calibrated thresholds robust to the noise of unseen inputs. Each (sample,
    step) row is multiplied by one of ``bank`` masks (keep with probability 1 - p, scaled
    by 1 / (1 - p)), drawn once per layer from ``seed`` and picked by a hash of the sample's
    index in the pass (``sample_offset`` plus its row in the batch), the step (counted in
    ``steps_seen`` across calls) and the seed. A sample therefore gets the same noise in a
    batch of 100 or of 500, in one call or in time chunks (:class:`~spikecut.neurons.
    SpikingNetwork` ``time_chunk``), so the calibration pass can run in bounded memory with
    results equal to the whole-sequence call. Each element is still dropped with probability
    ``p``; rows share a mask with probability 1 / ``bank``. Picking a stored mask is also
    about three times faster on the CPU than drawing a fresh one.

    Args:
        p: drop probability, in [0, 1).
        seed: seeds the masks and the hash (one per layer: :func:`calibration_dropout`).
        bank: number of stored masks.
    """

    def __init__(self, p: float = 0.3, *, seed: int = 0, bank: int = 256) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        if bank < 1:
            raise ValueError(f"mask bank: expected at least 1 mask, got {bank}")
        self.p = float(p)
        self.seed = int(seed)
        self.bank = int(bank)
        self.sample_offset = 0  # index in the pass of the current batch's first sample
        self.steps_seen: int
        self.register_state("steps_seen", 0)  # steps since the last reset
        self._masks: dict[tuple, Tensor] = {}

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self.seed}, bank={self.bank}"

    def masks(self, features: tuple[int, ...], device: torch.device) -> Tensor:
        """The stored keep-masks ``[bank, *features]`` (bool) for rows of this shape."""
        key = (features, device)
        if key not in self._masks:
            generator = torch.Generator().manual_seed(self.seed)
            keep = torch.rand(self.bank, *features, generator=generator) >= self.p
            self._masks[key] = keep.to(device)
        return self._masks[key]

    def mask_index(self, steps: int, batch: int, device: torch.device) -> Tensor:
        """Which stored mask each row of a ``[steps, batch]`` block uses, ``[steps * batch]``."""
        step = torch.arange(self.steps_seen, self.steps_seen + steps, device=device)
        sample = torch.arange(self.sample_offset, self.sample_offset + batch, device=device)
        key = (sample[None, :] * 1_000_003 + step[:, None] * 7_919 + self.seed).reshape(-1)
        return _mix(key) % self.bank

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0:
            return x
        seq = self.unfold(x)
        steps, batch = seq.shape[0], seq.shape[1]
        index = self.mask_index(steps, batch, x.device)
        keep = self.masks(tuple(seq.shape[2:]), x.device).index_select(0, index)
        self.steps_seen += steps
        rows = seq.reshape(steps * batch, *seq.shape[2:])
        return (rows * keep).mul_(1.0 / (1.0 - self.p)).reshape(x.shape)


def _mix(key: Tensor) -> Tensor:
    """A 64-bit integer hash (splitmix64's finaliser, shifts made logical), non-negative."""
    low = (1 << 62) - 1
    x = key.long()
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * -4658895280553007687  # 0xbf58476d1ce4e5b9 as a signed int64
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * -7723592293110705685  # 0x94d049bb133111eb
    x = x ^ ((x >> 31) & ((1 << 33) - 1))
    return x & low


@contextmanager
def calibration_dropout(model: nn.Module, p: float = 0.3, seed: int = 0) -> Iterator[nn.Module]:
    """Insert :class:`CalibrationDropout` after every spiking layer of ``model``; undo on exit.

    The neurons themselves are kept (wrapped in a ``Sequential``), so their state and
    parameters are the same objects before, during and after calibration. Layer i's masks
    come from seed ``seed * 7919 + i``.
    """
    layers = 0

    def with_dropout(child: nn.Module) -> nn.Module | None:
        nonlocal layers
        if not isinstance(child, LIF):
            return None
        layers += 1
        dropout = CalibrationDropout(p, seed=seed * 7_919 + layers - 1)
        return nn.Sequential(child, dropout)

    replaced = replace_children(model, with_dropout) if p > 0 else []
    try:
        yield model
    finally:
        restore_children(replaced)
