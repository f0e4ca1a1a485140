"""Exit rules for anytime SNN inference: when may a sample stop early?

Every function here reads the *accumulated* output ``Y`` (``cum_logits``), shape
``[T, N, K]``: ``Y[t-1]`` is the running sum of the per-step logits up to step ``t``.
Steps are 1-based everywhere, so an exit step is an integer in ``1..T``.

A rule is a small object with one interface used two ways:

* offline, ``rule.fire_matrix(Y)`` / ``rule.exit_steps(Y)`` decide all ``T`` steps at once
  (used for calibration, sweeps and reports);
* online, ``rule.fires(Y_t, t, T)`` decides one step for the samples still running
  (used by a step-by-step engine that really stops computing).

Both paths share one criterion per rule (``ExitRule._criterion``), so they agree exactly.
Every rule fires at ``t = T``: the last step is always a (forced) exit.

The module is pure tensor logic; it knows nothing about models.
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._deprecation import warn_deprecated

__all__ = [
    "DEFAULT_EPSILONS",
    "RULES",
    "EntropyCutoff",
    "ExitRule",
    "FixedTimestep",
    "SoftmaxConfidence",
    "TopKCutoff",
    "accuracy_per_step",
    "evaluate_rule",
    "exit_predictions",
    "make_rule",
    "oct_steps",
    "stable_mask",
    "sweep_epsilon",
    "topk_gap",
    "validate_cum_logits",
]

DEFAULT_EPSILONS: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(10))

# Confidence ratios are compared with ``1 - epsilon`` up to this slack, so that a ratio such
# as 93/100 meets epsilon = 0.07 although ``1 - 0.07`` rounds to 0.9300000000000001... in
# binary. It is far below the gap between any two distinct ratios of realistic counts.
_RATIO_TOL = 1e-12


# --------------------------------------------------------------------------- validation


def validate_cum_logits(cum_logits: Tensor, labels: Tensor | None = None) -> None:
    """Check that ``cum_logits`` is a finite float ``[T, N, K]`` tensor (T >= 1, K >= 2)
    and, if given, that ``labels`` are integer class indices ``[N]`` in ``[0, K)``.

    Raises ``ValueError`` (``TypeError`` for non-tensors) saying what was expected and
    what was found, so a bad array fails here rather than as a silent wrong answer.
    """
    if not isinstance(cum_logits, Tensor):
        raise TypeError(f"cum_logits: expected a torch.Tensor, got {type(cum_logits).__name__}")
    if cum_logits.dim() != 3:
        raise ValueError(
            f"cum_logits: expected a 3-D tensor [T, N, K], got {cum_logits.dim()}-D "
            f"with shape {tuple(cum_logits.shape)}"
        )
    T, N, K = cum_logits.shape
    if T < 1:
        raise ValueError(f"cum_logits: expected at least 1 timestep (T >= 1), got T = {T}")
    if K < 2:
        raise ValueError(f"cum_logits: expected at least 2 classes (K >= 2), got K = {K}")
    if not cum_logits.is_floating_point():
        raise ValueError(f"cum_logits: expected a floating-point tensor, got {cum_logits.dtype}")
    if not bool(torch.isfinite(cum_logits).all()):
        bad = int((~torch.isfinite(cum_logits)).sum())
        raise ValueError(f"cum_logits: expected finite values, found {bad} NaN/inf entries")
    if labels is None:
        return
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels: expected an integer tensor, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != N:
        raise ValueError(
            f"labels: expected a 1-D tensor of length N = {N}, got shape {tuple(labels.shape)}"
        )
    if N and (int(labels.min()) < 0 or int(labels.max()) >= K):
        raise ValueError(
            f"labels: expected values in [0, {K}), found values in "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def _validate_step(cum_logits_t: Tensor, t: int, T: int) -> None:
    """Check one online step: ``cum_logits_t`` is finite float ``[N, K]`` and ``1 <= t <= T``."""
    if not isinstance(cum_logits_t, Tensor) or cum_logits_t.dim() != 2:
        found = (
            tuple(cum_logits_t.shape) if isinstance(cum_logits_t, Tensor) else type(cum_logits_t)
        )
        raise ValueError(f"cum_logits_t: expected a 2-D tensor [N, K], got {found}")
    validate_cum_logits(cum_logits_t.unsqueeze(0))
    if not 1 <= t <= T:
        raise ValueError(f"step: expected 1 <= t <= T = {T}, got t = {t}")


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


def _require_samples(cum_logits: Tensor, what: str) -> None:
    if cum_logits.shape[1] < 1:
        raise ValueError(f"{what}: expected at least 1 sample (N >= 1), got N = 0")


def _check_epsilon(epsilon: float) -> float:
    epsilon = float(epsilon)
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon: expected a value in [0, 1), got {epsilon}")
    return epsilon


# ------------------------------------------------------------------ per-step statistics


def _correct(cum_logits: Tensor, labels: Tensor) -> Tensor:
    return cum_logits.argmax(dim=-1) == labels.to(cum_logits.device)


def _stable(correct: Tensor) -> Tensor:
    # Reverse running minimum: stable at t iff correct at t and at every later step.
    return correct.flip(0).to(torch.uint8).cummin(dim=0).values.flip(0).bool()


def _gap(cum_logits: Tensor) -> Tensor:
    top2 = cum_logits.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def _entropy(cum_logits: Tensor) -> Tensor:
    # entr(p) = -p log p with entr(0) = 0, so saturated softmax rows stay finite.
    return torch.special.entr(cum_logits.softmax(dim=-1)).sum(dim=-1)


def accuracy_per_step(cum_logits: Tensor, labels: Tensor) -> list[float]:
    """Fraction of samples whose ``argmax Y(t)`` is correct, for t = 1..T (the fixed-step
    baseline of SPEC §6)."""
    validate_cum_logits(cum_logits, labels)
    return _correct(cum_logits, labels).double().mean(dim=1).tolist()


def stable_mask(cum_logits: Tensor, labels: Tensor) -> Tensor:
    """Bool ``[T, N]``: ``stable(t)`` = the prediction is correct at t and every later step.

    A sample wrong at T is stable nowhere; for every sample the stable steps form a
    (possibly empty) suffix ``OCT..T``.
    """
    validate_cum_logits(cum_logits, labels)
    return _stable(_correct(cum_logits, labels))


def _oct_from_stable(stable: Tensor) -> Tensor:
    T = stable.shape[0]
    n_stable = stable.sum(dim=0)
    return torch.where(n_stable > 0, T - n_stable + 1, torch.full_like(n_stable, T))


def oct_steps(cum_logits: Tensor, labels: Tensor) -> Tensor:
    """Optimal Cutoff Timestep per sample, LongTensor ``[N]`` with values ``1..T``.

    The oracle exit: the smallest t from which the prediction stays correct; T for a
    sample still wrong at T. Its mean is the lower bound a practical rule is measured by.
    """
    return _oct_from_stable(stable_mask(cum_logits, labels))


def topk_gap(cum_logits: Tensor) -> Tensor:
    """``Top1(Y(t)) - Top2(Y(t))`` of the raw accumulated logits, shape ``[T, N]``."""
    validate_cum_logits(cum_logits)
    return _gap(cum_logits)


def _first_fire(fire: Tensor) -> Tensor:
    # Index of the first True along dim 0 (argmax returns the first maximum), 1-based.
    return fire.to(torch.uint8).argmax(dim=0) + 1


# ------------------------------------------------------------------------------- rules


class ExitRule(ABC):
    """One exit criterion, usable offline (all steps at once) and online (one step).

    Subclasses implement ``_criterion`` on a stack of steps; the base class adds the
    forced exit at T, validation, and the derived ``exit_steps``.
    """

    name: str = "rule"

    def __init__(self, epsilon: float = 0.0) -> None:
        self.epsilon = _check_epsilon(epsilon)

    @abstractmethod
    def _criterion(self, cum_logits: Tensor, steps: Tensor) -> Tensor:
        """Bool ``[S, N]``: does the rule fire on ``cum_logits [S, N, K]`` taken at the
        1-based ``steps [S]``? Without the forced exit at T; must treat rows independently."""

    def _criterion_at(self, cum_logits_t: Tensor, t: int) -> Tensor:
        """Bool ``[N]``: ``_criterion`` at the one step ``t`` on ``Y(t)`` ``[N, K]`` (the
        anytime engine's call after every step). Rules may override it with a cheaper
        equivalent; the result must be identical."""
        steps = torch.tensor([t], device=cum_logits_t.device)
        return self._criterion(cum_logits_t.unsqueeze(0), steps)[0]

    def _criterion_numpy(self, cum_logits: np.ndarray, first_step: int) -> np.ndarray | None:
        """Bool ``[S, N]``: ``_criterion`` on float32 ``cum_logits [S, N, K]`` taken at steps
        ``first_step .. first_step + S - 1``, computed in NumPy; ``None`` where the rule has
        no NumPy form with identical decisions. On the CPU the anytime engine uses it for
        small batches, where a tensor operation's fixed cost is most of the rule's time,
        when a subclass overrides it (an override always returns the array)."""
        return None

    def _criterion_python(self) -> Callable[[Sequence[float], int], bool] | None:
        """``criterion(y, t) -> bool``: ``_criterion`` for one sample's ``Y(t)`` given as its
        float32 values in Python numbers; ``None`` where the rule has no such form with
        identical decisions. The anytime engine uses it for one sample streamed on the CPU:
        there 20–30 µs of NumPy or tensor work between two network calls made the next call
        about 100 µs slower, and the same decision in plain Python did not."""
        return None

    def check_ready(self, T: int) -> None:
        """Raise if the rule cannot decide for a run of ``T`` steps (e.g. not calibrated).

        Engines (:mod:`spikecut.anytime`) call it once before a run; subclasses with
        parameters to fit override it.
        """
        return None

    def _check_ready(self, T: int) -> None:
        """Deprecated name of :meth:`check_ready`."""
        cls = type(self)
        if cls.check_ready is cls._check_ready:  # an old-style override called super()
            return None
        warn_deprecated(f"{cls.__name__}._check_ready(T)", "check_ready(T)")
        self.check_ready(T)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass written against the old name (overriding ``_check_ready`` only) is
        still asked through :meth:`check_ready`, with a DeprecationWarning."""
        super().__init_subclass__(**kwargs)
        old = cls.__dict__.get("_check_ready")
        if old is not None and "check_ready" not in cls.__dict__:
            warn_deprecated(f"{cls.__name__}._check_ready", "check_ready", stacklevel=3)
            cls.check_ready = old

    def calibrate(self, cum_logits: Tensor, labels: Tensor) -> ExitRule:
        """Fit the rule's parameters on a calibration split; returns ``self``.

        The default has nothing to fit and only validates the inputs.
        """
        validate_cum_logits(cum_logits, labels)
        return self

    def fires(self, cum_logits_t: Tensor, t: int, T: int) -> Tensor:
        """Online decision at step ``t`` (1-based) of ``T``: Bool ``[N]``, True = exit now.

        ``cum_logits_t`` is ``Y(t)``, shape ``[N, K]``. Always all True at ``t = T``.
        """
        _validate_step(cum_logits_t, t, T)
        self.check_ready(T)
        steps = torch.tensor([t], device=cum_logits_t.device)
        fire = self._criterion(cum_logits_t.unsqueeze(0), steps)[0]
        return fire | (t == T)

    def fire_matrix(self, cum_logits: Tensor) -> Tensor:
        """Offline decisions for every step: Bool ``[T, N]``, row ``t-1`` equals
        ``fires(cum_logits[t-1], t, T)``; the last row is all True."""
        validate_cum_logits(cum_logits)
        T = cum_logits.shape[0]
        self.check_ready(T)
        steps = torch.arange(1, T + 1, device=cum_logits.device)
        fire = self._criterion(cum_logits, steps)
        fire[-1] = True
        return fire

    def exit_steps(self, cum_logits: Tensor) -> Tensor:
        """LongTensor ``[N]``: the first step (1..T) at which the rule fires."""
        return _first_fire(self.fire_matrix(cum_logits))

    def params(self) -> dict[str, Any]:
        """Rule-specific parameters, JSON-serialisable (see ``to_dict``)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description: ``rule`` name, ``epsilon`` and the parameters."""
        return {"rule": self.name, "epsilon": self.epsilon, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "rule")
        return f"{type(self).__name__}({args})"


class TopKCutoff(ExitRule):
    """The paper's rule: exit at the first t with ``Top1 - Top2`` of ``Y(t)`` strictly
    above a calibrated per-step threshold ``beta[t-1]``; always exit at T.

    ``beta`` is None until ``calibrate`` sets it to a float tensor ``[T]`` (SPEC §6).
    """

    name = "topk"

    def __init__(self, epsilon: float = 0.0, bins: int = 100) -> None:
        super().__init__(epsilon)
        self.bins = _check_int("bins", bins, 1)
        self.beta: Tensor | None = None

    def calibrate(self, cum_logits: Tensor, labels: Tensor) -> TopKCutoff:
        """Choose ``beta[t-1]`` as the smallest candidate ``m·G/M`` (m = 0..M-1, M = bins,
        G = largest gap seen) whose confidence ``conf(m, t)`` reaches ``1 - epsilon``.

        ``conf(m, t)`` is the fraction of stable samples among those with gap above the
        candidate at step t; no sample above it (0/0) does not meet the target, and the
        last candidate always does. Counting uses one sort per step, no [M, T, N] tensor.
        """
        validate_cum_logits(cum_logits, labels)
        _require_samples(cum_logits, "TopKCutoff.calibrate")
        T, N, _ = cum_logits.shape
        gap = _gap(cum_logits)
        stable = _stable(_correct(cum_logits, labels))
        M = self.bins
        candidates = torch.arange(M, dtype=gap.dtype, device=gap.device) * gap.max() / M

        # Sort each step's gaps; the samples above a candidate form a suffix of the order.
        gap_sorted, order = gap.sort(dim=1)
        stable_sorted = stable.gather(1, order).long()
        # stable_suffix[t, i] = number of stable samples at sorted positions i..N-1.
        stable_suffix = torch.cat(
            [stable_sorted.flip(1).cumsum(1).flip(1), stable_sorted.new_zeros(T, 1)], dim=1
        )
        n_not_above = torch.searchsorted(
            gap_sorted, candidates.expand(T, M).contiguous(), right=True
        )  # [T, M]: #{g(t) <= beta_m}
        above = N - n_not_above
        stable_above = stable_suffix.gather(1, n_not_above)
        conf = stable_above.double() / above.clamp(min=1).double()
        meets = (above > 0) & (conf >= 1.0 - self.epsilon - _RATIO_TOL)
        meets[:, -1] = True
        self.beta = candidates[_first_fire(meets.T) - 1]
        return self

    def check_ready(self, T: int) -> None:
        if self.beta is None:
            raise RuntimeError("TopKCutoff has no thresholds: call calibrate(...) first")
        if self.beta.shape[0] != T:
            raise ValueError(
                f"TopKCutoff was calibrated for T = {self.beta.shape[0]} steps, "
                f"got cum_logits with T = {T}"
            )

    def _criterion(self, cum_logits: Tensor, steps: Tensor) -> Tensor:
        beta = self.beta.to(cum_logits.device)[steps - 1]
        return _gap(cum_logits) > beta.unsqueeze(1)

    def _beta_forms(self) -> tuple[list[float] | None, np.ndarray]:
        """β as Python numbers and as a NumPy array of its own dtype, kept until β is
        replaced. The numbers are given only for a float32 β: a number is compared in the
        gap's float32, which equals the tensor comparison only when β is float32 too (a
        float64 β promotes that comparison to float64, as NumPy does with the array)."""
        cached = self.__dict__.get("_beta_cache")
        if cached is None or cached[0] is not self.beta:
            values = self.beta.tolist() if self.beta.dtype == torch.float32 else None
            cached = (self.beta, values, self.beta.detach().cpu().numpy())
            self.__dict__["_beta_cache"] = cached
        return cached[1], cached[2]

    def _criterion_at(self, cum_logits_t: Tensor, t: int) -> Tensor:
        # β[t-1] as a Python number, without indexing a tensor on every step
        values = self._beta_forms()[0]
        if values is None:
            return super()._criterion_at(cum_logits_t, t)
        return _gap(cum_logits_t) > values[t - 1]

    def _criterion_numpy(self, cum_logits: np.ndarray, first_step: int) -> np.ndarray:
        # the same float32 values and subtraction as _gap: the two largest of each row
        k = cum_logits.shape[-1]
        top2 = np.partition(cum_logits, k - 2, axis=-1)[..., k - 2 :]
        beta = self._beta_forms()[1][first_step - 1 : first_step - 1 + cum_logits.shape[0]]
        return (top2[..., 1] - top2[..., 0]) > beta[:, None]

    def _criterion_python(self) -> Callable[[Sequence[float], int], bool] | None:
        values = self._beta_forms()[0]
        if values is None:  # a float64 β is compared in float64: the NumPy form does that
            return None

        # The gap is rounded to float32 by storing it here (one slot per criterion). The
        # difference of two float32 numbers computed in double and rounded once to float32
        # is their float32 difference: double carries more than twice float32's precision.
        gap = array("f", (0.0,))

        def criterion(y: Sequence[float], t: int) -> bool:
            top = sorted(y)  # the two largest, a tie counted twice, as topk does
            gap[0] = top[-1] - top[-2]
            return gap[0] > values[t - 1]

        return criterion

    def params(self) -> dict[str, Any]:
        beta = None if self.beta is None else self.beta.double().tolist()
        return {"bins": self.bins, "beta": beta}


class SoftmaxConfidence(ExitRule):
    """Exit when ``max softmax(Y(t)) > 1 - epsilon`` (SEENN-I style); nothing to fit.

    With ``epsilon = 0`` the rule never fires before the forced exit at T.
    """

    name = "softmax"

    def _criterion(self, cum_logits: Tensor, steps: Tensor) -> Tensor:
        return cum_logits.softmax(dim=-1).amax(dim=-1) > 1.0 - self.epsilon


class EntropyCutoff(ExitRule):
    """Exit when the entropy (nats) of ``softmax(Y(t))`` is strictly below ``threshold``
    (DT-SNN style).

    With ``threshold=None`` the threshold is fitted by ``calibrate``: among candidate
    values (0 and ``candidates`` evenly spaced quantiles of all observed entropies), the
    largest ``h`` such that at least a fraction ``1 - epsilon`` of the calibration samples
    that are correct at T exit *safely* under ``h``, i.e. at a step from which their
    prediction stays correct. Like Top-K's confidence target, ε is then the share of
    answers the early exit may lose against running all T steps; samples wrong at T
    cannot be lost and are not counted. The safe fraction can only shrink as ``h`` grows
    (earlier exits), so this is a threshold search; ``h = 0`` (never exit early) is always
    safe.
    A threshold given to ``__init__`` is kept as is by ``calibrate``.
    """

    name = "entropy"

    def __init__(
        self, threshold: float | None = None, epsilon: float = 0.0, candidates: int = 200
    ) -> None:
        super().__init__(epsilon)
        if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold: expected a finite value >= 0 or None, got {threshold}")
        self.candidates = _check_int("candidates", candidates, 1)
        self._given = threshold is not None
        self.threshold: float | None = None if threshold is None else float(threshold)

    def calibrate(self, cum_logits: Tensor, labels: Tensor) -> EntropyCutoff:
        """Fit ``threshold`` as described in the class docstring (no-op if it was given)."""
        validate_cum_logits(cum_logits, labels)
        if self._given:
            return self
        _require_samples(cum_logits, "EntropyCutoff.calibrate")
        T = cum_logits.shape[0]
        entropy = _entropy(cum_logits).double()  # [T, N]
        stable = _stable(_correct(cum_logits, labels))
        first_stable = _oct_from_stable(stable)  # only meaningful where stable[-1]
        # A sample exits before its first stable step s iff some H(t) < h with t < s, i.e.
        # iff h > min_{t<s} H(t) =: critical. A sample correct at T exits safely iff
        # h <= critical (critical = +inf when s = 1); samples wrong at T are not counted.
        correct_at_T = stable[-1]
        before_stable = torch.arange(1, T + 1, device=stable.device).unsqueeze(1) < first_stable
        critical = entropy.masked_fill(~before_stable, math.inf).amin(dim=0)[correct_at_T]

        q = torch.linspace(0, 1, self.candidates, dtype=torch.float64, device=entropy.device)
        observed = entropy.flatten().sort().values
        picks = observed[(q * (observed.numel() - 1)).round().long()]
        hs = torch.cat([picks.new_zeros(1), picks]).unique()  # sorted ascending
        # safe(h) = #{critical >= h} / #{correct at T}, by binary search on sorted criticals.
        n_unsafe = torch.searchsorted(critical.sort().values, hs, right=False)
        safe = (critical.numel() - n_unsafe).double() / max(1, critical.numel())
        ok = (safe >= 1.0 - self.epsilon - _RATIO_TOL) | (critical.numel() == 0)
        self.threshold = float(hs[ok].max()) if bool(ok.any()) else 0.0
        return self

    def check_ready(self, T: int) -> None:
        if self.threshold is None:
            raise RuntimeError("EntropyCutoff has no threshold: call calibrate(...) first")

    def _criterion(self, cum_logits: Tensor, steps: Tensor) -> Tensor:
        return _entropy(cum_logits) < self.threshold

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "candidates": self.candidates}


class FixedTimestep(ExitRule):
    """Baseline: every sample exits at the same ``step`` (1-based). No epsilon (0.0)."""

    name = "fixed"

    def __init__(self, step: int) -> None:
        super().__init__(0.0)
        self.step = _check_int("step", step, 1)

    def check_ready(self, T: int) -> None:
        if self.step > T:
            raise ValueError(f"FixedTimestep: step = {self.step} exceeds the T = {T} timesteps")

    def calibrate(self, cum_logits: Tensor, labels: Tensor) -> FixedTimestep:
        """Validate the inputs and that ``step <= T``; nothing to fit."""
        validate_cum_logits(cum_logits, labels)
        self.check_ready(cum_logits.shape[0])
        return self

    def _criterion(self, cum_logits: Tensor, steps: Tensor) -> Tensor:
        fire = (steps >= self.step).unsqueeze(1)
        return fire.expand(cum_logits.shape[0], cum_logits.shape[1]).clone()

    def _criterion_python(self) -> Callable[[Sequence[float], int], bool]:
        step = self.step
        return lambda y, t: t >= step

    def _criterion_numpy(self, cum_logits: np.ndarray, first_step: int) -> np.ndarray:
        steps = np.arange(first_step, first_step + cum_logits.shape[0])
        return np.repeat((steps >= self.step)[:, None], cum_logits.shape[1], axis=1)

    def params(self) -> dict[str, Any]:
        return {"step": self.step}


# ----------------------------------------------------------------------------- metrics


def exit_predictions(cum_logits: Tensor, exit_steps: Tensor) -> Tensor:
    """LongTensor ``[N]``: ``argmax Y(t)`` at each sample's own exit step ``t``."""
    validate_cum_logits(cum_logits)
    T, N, _ = cum_logits.shape
    if exit_steps.dim() != 1 or exit_steps.shape[0] != N:
        raise ValueError(
            f"exit_steps: expected a 1-D tensor of length N = {N}, got {tuple(exit_steps.shape)}"
        )
    if N and (int(exit_steps.min()) < 1 or int(exit_steps.max()) > T):
        raise ValueError(
            f"exit_steps: expected values in 1..{T}, found "
            f"{int(exit_steps.min())}..{int(exit_steps.max())}"
        )
    idx = exit_steps.to(cum_logits.device).long() - 1
    rows = cum_logits[idx, torch.arange(N, device=cum_logits.device)]
    return rows.argmax(dim=-1)


def evaluate_rule(rule: ExitRule, cum_logits: Tensor, labels: Tensor) -> dict[str, Any]:
    """Apply a (calibrated) rule and report what it costs and what it keeps.

    Keys: ``rule``, ``epsilon``, ``accuracy`` (at the exits), ``mean_exit``, ``speedup``
    (``T / mean_exit``), ``accuracy_delta`` (against argmax at T) and ``exit_histogram``
    (T counts: samples exiting at steps 1..T).
    """
    validate_cum_logits(cum_logits, labels)
    _require_samples(cum_logits, "evaluate_rule")
    T = cum_logits.shape[0]
    labels = labels.to(cum_logits.device)
    steps = rule.exit_steps(cum_logits)
    accuracy = (exit_predictions(cum_logits, steps) == labels).double().mean().item()
    accuracy_at_T = (cum_logits[-1].argmax(dim=-1) == labels).double().mean().item()
    mean_exit = steps.double().mean().item()
    return {
        "rule": rule.name,
        "epsilon": rule.epsilon,
        "accuracy": accuracy,
        "mean_exit": mean_exit,
        "speedup": T / mean_exit,
        "accuracy_delta": accuracy - accuracy_at_T,
        "exit_histogram": torch.bincount(steps - 1, minlength=T).tolist(),
    }


def sweep_epsilon(
    make_rule: Callable[[float], ExitRule],
    cal_logits: Tensor,
    cal_labels: Tensor,
    test_logits: Tensor,
    test_labels: Tensor,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
) -> list[dict[str, Any]]:
    """Trace the accuracy/latency trade-off: for each epsilon build a rule, calibrate it
    on the calibration split and evaluate it on the test split (one ``evaluate_rule``
    dict per epsilon, in order)."""
    results = []
    for epsilon in epsilons:
        rule = make_rule(epsilon).calibrate(cal_logits, cal_labels)
        results.append(evaluate_rule(rule, test_logits, test_labels))
    return results


# ---------------------------------------------------------------------------- registry


# Rules a config can sweep over epsilon. ``FixedTimestep`` has no epsilon (it takes a step)
# and is built directly, so a config naming "fixed" fails validation instead of mid-run.
RULES: dict[str, Callable[..., ExitRule]] = {
    "topk": TopKCutoff,
    "softmax": SoftmaxConfidence,
    "entropy": EntropyCutoff,
}


def make_rule(name: str, epsilon: float = 0.0, **params: Any) -> ExitRule:
    """Build a rule by its config name, e.g. ``make_rule("topk", 0.02, bins=100)``."""
    if name not in RULES:
        raise ValueError(f"unknown cutoff rule {name!r}; known rules: {', '.join(sorted(RULES))}")
    return RULES[name](epsilon=epsilon, **params)


# Rules with a statistical guarantee live in their own module; re-exported here so every exit
# rule is reachable as ``spikecut.cutoff.<Name>``. Imported last: risk.py builds on this module.
from .risk import (  # noqa: E402
    GUARANTEED_RULES,
    RiskControlledCutoff,
    SpikeCP,
    check_guarantee,
    evaluate_guaranteed,
    make_guaranteed_rule,
    rule_from_dict,
)

__all__ += [
    "GUARANTEED_RULES",
    "RiskControlledCutoff",
    "SpikeCP",
    "check_guarantee",
    "evaluate_guaranteed",
    "make_guaranteed_rule",
    "rule_from_dict",
]
