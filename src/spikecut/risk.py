"""Exit rules with a statistical guarantee, and a check of that guarantee on real outputs.

* :class:`RiskControlledCutoff` — one threshold on a confidence score, chosen by
  Learn-then-Test (Angelopoulos, Bates et al. 2021) with fixed-sequence testing (Ringel et
  al., ICML 2024). Per-sample loss ``ℓ = 1[correct at T and wrong at the exit step]``;
  guarantee ``P(E[ℓ] <= risk) >= 1 - δ`` over the draw of ``n`` exchangeable calibration
  samples.
* :class:`SpikeCP` — conformal prediction sets at checkpoints (Chen, Park, Simeone 2023);
  exit when the set is small enough.
* :func:`check_guarantee` — re-split pooled outputs into calibration/test many times and
  count how often the test loss exceeds the promised risk.

What the guarantee does *not* promise: it needs calibration and test samples to be
exchangeable (the same distribution, no shift); it bounds the accuracy lost against the
SNN run for all T steps, not against the ANN; it holds with probability 1 - δ over the
calibration draw, so one calibration in ten (δ = 0.1) may miss it.

All tensors follow :mod:`spikecut.cutoff`: ``cum_logits`` is the accumulated output ``Y``,
``[T, N, K]``; steps are 1-based.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .cutoff import (
    EntropyCutoff,
    ExitRule,
    FixedTimestep,
    SoftmaxConfidence,
    TopKCutoff,
    _check_int,
    _correct,
    _entropy,
    _first_fire,
    _gap,
    _require_samples,
    evaluate_rule,
    exit_predictions,
    validate_cum_logits,
)

__all__ = [
    "GUARANTEED_RULES",
    "PVALUES",
    "RISK_SCORES",
    "RiskControlledCutoff",
    "SpikeCP",
    "CHECK_MODES",
    "binomial_cdf",
    "check_guarantee",
    "clopper_pearson",
    "evaluate_guaranteed",
    "exit_loss",
    "ltt_pvalues",
    "make_guaranteed_rule",
    "risk_score",
    "rule_from_dict",
]

RISK_SCORES = ("topk", "softmax", "entropy")
PVALUES = ("binomial", "hoeffding-bentkus")

# The thresholds λ tried, from strict to loose: +inf (never exit early), then a geometric
# grid from 1e9 down to 1e-6, then 0. Fixed in advance (it must not depend on the
# calibration data for fixed-sequence testing to be valid); fixed-sequence testing pays
# nothing for a fine grid, so neighbouring values differ by about 1 %.
_GRID_POINTS = 3000
_GRID = torch.cat(
    [
        torch.tensor([math.inf], dtype=torch.float64),
        torch.logspace(9, -6, _GRID_POINTS, dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
    ]
)


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}: expected a value in (0, 1), got {value}")
    return value


# ------------------------------------------------------------------------------ scores


def risk_score(
    cum_logits: Tensor, score: str, steps: Tensor | None = None, step_power: float = 0.0
) -> Tensor:
    """Confidence score ``s(t) >= 0`` of ``Y(t)``, float64 ``[S, N]``; larger = more sure.

    * ``topk``: ``(Top1 − Top2)(Y(t)) / t^γ`` (γ = ``step_power``, default 0: the paper's
      raw gap; γ = 1: the gap of the mean output ``Y(t)/t``).
    * ``softmax``: ``−log(1 − max softmax Y(t))``, computed as
      ``logsumexp(Y) − logsumexp(Y without its top entry)`` (exact where the probability
      rounds to 1). Monotone in the softmax confidence.
    * ``entropy``: ``1 / H(softmax Y(t))`` (nats; ``+inf`` at zero entropy). Monotone in
      the negative entropy.

    ``steps`` (1-based, ``[S]``) are the steps of the rows of ``cum_logits``; default 1..S.
    """
    if score not in RISK_SCORES:
        raise ValueError(f"score: expected one of {', '.join(RISK_SCORES)}, got {score!r}")
    y = cum_logits.double()
    if steps is None:
        steps = torch.arange(1, y.shape[0] + 1, device=y.device)
    if score == "topk":
        return _gap(y) / steps.to(y).pow(step_power).unsqueeze(1)
    if score == "softmax":
        top = y.argmax(dim=-1, keepdim=True)
        rest = y.scatter(-1, top, -math.inf)
        return (y.logsumexp(dim=-1) - rest.logsumexp(dim=-1)).clamp(min=0.0)
    return 1.0 / _entropy(y)


def exit_loss(cum_logits: Tensor, labels: Tensor, exit_steps: Tensor) -> Tensor:
    """Bool ``[N]``: ``ℓ = 1[correct at T and wrong at the exit step]`` per sample.

    Its mean bounds the accuracy lost against running all T steps (samples wrong at T and
    right at the exit count as gains, not negative losses).
    """
    labels = labels.to(cum_logits.device)
    right_at_exit = exit_predictions(cum_logits, exit_steps) == labels
    return (cum_logits[-1].argmax(dim=-1) == labels) & ~right_at_exit


# ---------------------------------------------------------------------------- p-values


def binomial_cdf(k: Tensor | Sequence[int] | int, n: int, p: float) -> Tensor:
    """``P(Binom(n, p) <= k)`` for each ``k`` (float64), summed exactly in log space."""
    n = _check_int("n", n, 0)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")
    k = torch.as_tensor(k, dtype=torch.float64)
    j = torch.arange(n + 1, dtype=torch.float64)
    if p in (0.0, 1.0):
        cdf = (j >= n).double() if p == 1.0 else torch.ones(n + 1, dtype=torch.float64)
    else:
        log_pmf = (
            math.lgamma(n + 1)
            - torch.lgamma(j + 1)
            - torch.lgamma(n - j + 1)
            + j * math.log(p)
            + (n - j) * math.log1p(-p)
        )
        cdf = log_pmf.logcumsumexp(0).exp().clamp(max=1.0)
        cdf[n] = 1.0  # exactly, not 1 - rounding
    index = k.floor().clamp(min=-1, max=n).long()
    return torch.where(index < 0, torch.zeros_like(k), cdf[index.clamp(min=0)])


def ltt_pvalues(
    losses: Tensor | Sequence[int], n: int, risk: float, method: str = "binomial"
) -> Tensor:
    """Valid p-values for ``H0: E[ℓ] > risk`` from ``losses`` (the sum of ``n`` losses in
    {0, 1}), one per entry.

    * ``binomial``: ``p = P(Binom(n, risk) <= n·R̂)``. Exact for 0/1 losses: under H0 the
      count is a Binom(n, E[ℓ]) with ``E[ℓ] > risk``, stochastically larger.
    * ``hoeffding-bentkus``: ``p = min(exp(−n·h(min(R̂, risk), risk)),
      e·P(Binom(n, risk) <= ⌈n·R̂⌉))`` with ``h(a, b) = a log(a/b) + (1−a) log((1−a)/(1−b))``;
      valid for any loss in [0, 1], more conservative here.
    """
    risk = _check_fraction("risk", risk)
    if method not in PVALUES:
        raise ValueError(f"pvalue: expected one of {', '.join(PVALUES)}, got {method!r}")
    counts = torch.as_tensor(losses, dtype=torch.float64)
    binom = binomial_cdf(counts.ceil(), n, risk)
    if method == "binomial":
        return binom
    r_hat = (counts / max(n, 1)).clamp(max=risk)
    a, b = r_hat, risk
    h = torch.xlogy(a, a / b) + torch.xlogy(1 - a, (1 - a) / (1 - b))
    return torch.minimum(torch.exp(-n * h), math.e * binom).clamp(max=1.0)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided interval for a binomial proportion ``k / n``,
    found by bisection on :func:`binomial_cdf` (no scipy needed)."""
    n = _check_int("n", n, 1)
    k = _check_int("k", k, 0)
    if k > n:
        raise ValueError(f"k: expected k <= n = {n}, got {k}")
    tail = (1.0 - _check_fraction("confidence", confidence)) / 2

    def solve(f: Callable[[float], float]) -> float:
        lo, hi = 0.0, 1.0  # f increases in p; find f(p) = 0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        return (lo + hi) / 2

    # lower: P(X >= k | p) = tail; upper: P(X <= k | p) = tail.
    lower = 0.0 if k == 0 else solve(lambda p: 1 - tail - float(binomial_cdf(k - 1, n, p)))
    upper = 1.0 if k == n else solve(lambda p: tail - float(binomial_cdf(k, n, p)))
    return lower, upper


# ------------------------------------------------------------------- risk-controlled rule


class RiskControlledCutoff(ExitRule):
    """Exit at the first t with ``s(t) > λ`` (:func:`risk_score`); always exit at T.

    ``score`` is ``topk`` (gap of ``Y(t)``), ``softmax`` or ``entropy``; ``pvalue`` is
    ``binomial`` or ``hoeffding-bentkus`` (:func:`ltt_pvalues`).

    ``λ`` is calibrated by Learn-then-Test so that, with probability at least ``1 − δ``
    over the n exchangeable calibration samples, ``E[ℓ] <= risk`` with
    ``ℓ = 1[correct at T and wrong at the exit]`` (the share of the SNN's correct answers
    that the early exit loses).

    Calibration: for the thresholds ``λ_0 = +inf > λ_1 > ... > 0`` (a fixed grid, strict to
    loose), ``R̂(λ_j)`` = mean loss, ``p_j`` = a valid p-value for ``H0: E[ℓ(λ_j)] > risk``
    (:func:`ltt_pvalues`). Fixed-sequence testing rejects ``H0`` for ``λ_0, ..., λ_{j*}``
    while ``p_j <= δ`` and stops at the first ``p_j > δ``; each test runs at level δ without
    correction because the order is fixed in advance, so the family-wise error is ≤ δ and
    the kept ``λ = λ_{j*}`` (the loosest rejected) is certified. Looser λ only moves exits
    earlier (the score's running maximum crosses it sooner), so the risk tends to grow along
    the sequence and stopping at the first failure loses little. (Validity needs no such
    monotonicity: only that the order is fixed before the data are seen.)

    Why one scalar on the raw accumulated scores: a single parameter keeps the whole
    calibration set behind one test sequence (no splitting of n or δ between steps). ``Y(t)``
    is a sum over steps; in a converted IF network ``|Y(t) − t·z_ANN|`` stays roughly bounded
    (the membrane residual), so the signal in the gap grows ∝ t while its error does not. One
    constant threshold on the raw gap thus asks for a mean gap ``λ/t`` that loosens as the
    estimate sharpens; normalising by t (``step_power=1``) demands the same mean gap at every
    step. Measured with :func:`check_guarantee` (risk 0.01, δ 0.1, 100 draws; the mean exit
    on the pool; digits / MNIST-5k / MNIST-5k with RCS): raw gap 1.86 / 1.18 / 1.68 steps,
    gap/√t 2.09 / 1.22 / 1.84, gap/t 2.77 / 1.32 / 2.47, all within the guarantee. Softmax
    and entropy read the raw ``Y(t)`` likewise. ``step_power`` must be fixed in advance:
    choosing it on the calibration data would void the guarantee.

    ``λ_0 = +inf`` has zero loss; if even it cannot be certified (``(1 − risk)^n > δ``, i.e.
    too few samples: n < 230 for risk 0.01, δ 0.1) the rule exits at T and ``certified`` is False.
    """

    def __init__(
        self,
        score: str = "topk",
        risk: float = 0.01,
        delta: float = 0.1,
        pvalue: str = "binomial",
        step_power: float = 0.0,
    ) -> None:
        if not (math.isfinite(step_power) and step_power >= 0):
            raise ValueError(f"step_power: expected a finite value >= 0, got {step_power}")
        self.step_power = float(step_power)
        if score not in RISK_SCORES:
            raise ValueError(f"score: expected one of {', '.join(RISK_SCORES)}, got {score!r}")
        if pvalue not in PVALUES:
            raise ValueError(f"pvalue: expected one of {', '.join(PVALUES)}, got {pvalue!r}")
        self.risk = _check_fraction("risk", risk)
        self.delta = _check_fraction("delta", delta)
        super().__init__(self.risk)
        self.score = score
        self.pvalue = pvalue
        self.name = f"{score}-risk"
        self.threshold: float | None = None  # λ; +inf when nothing was certified
        self.n: int | None = None
        self.certified: bool | None = None
        self.empirical_risk: float | None = None
        self.p_value: float | None = None
        self.tested = 0  # hypotheses tested before stopping

    def calibration_curve(self, cum_logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(λ grid [G], loss counts [G])`` on a calibration split, strict to loose."""
        validate_cum_logits(cum_logits, labels)
        _require_samples(cum_logits, "RiskControlledCutoff.calibrate")
        s = risk_score(cum_logits, self.score, step_power=self.step_power).cpu()
        running = s.cummax(dim=0).values  # exit before step t+1 iff running[t] > λ
        correct = _correct(cum_logits, labels).cpu()
        grid = _GRID
        G = grid.numel()
        # running[t, i] <= λ_j  <=>  j <= J[t, i] (the grid descends), J = #{λ >= running} - 1.
        J = G - torch.searchsorted(grid.flip(0), running, right=False) - 1  # [T, N]
        # Sample i exits at (0-based) step k for j in (J[k], J[k-1]] (J[-1] := G-1; the last
        # step takes j in [0, J[T-2]]): J falls with t, so the pieces tile 0..G-1. Its loss
        # there is lost[k] = correct at T and wrong at k; add it per piece, by differences.
        lost = (correct[-1] & ~correct).long()  # [T, N]
        start = torch.cat([J[:-1] + 1, torch.zeros_like(J[:1])])  # [T, N]
        end = torch.cat([torch.full_like(J[:1], G - 1), J[:-1]])  # inclusive
        used = start <= end
        diff = torch.zeros(G + 1, dtype=torch.long)
        diff.scatter_add_(0, start[used], lost[used])
        diff.scatter_add_(0, end[used] + 1, -lost[used])
        counts = diff.cumsum(0)[:G]
        return grid, counts

    def calibrate(self, cum_logits: Tensor, labels: Tensor) -> RiskControlledCutoff:
        """Choose λ by fixed-sequence testing (class docstring)."""
        grid, counts = self.calibration_curve(cum_logits, labels)
        n = cum_logits.shape[1]
        p = ltt_pvalues(counts, n, self.risk, self.pvalue)
        failed = p > self.delta
        first_fail = int(_first_fire(torch.cat([failed, torch.ones(1, dtype=torch.bool)]))) - 1
        self.n = n
        self.tested = min(first_fail + 1, grid.numel())
        self.certified = first_fail > 0
        kept = max(first_fail - 1, 0)
        self.threshold = float(grid[kept])
        self.empirical_risk = float(counts[kept]) / n
        self.p_value = float(p[kept])
        return self

    def check_ready(self, T: int) -> None:
        if self.threshold is None:
            raise RuntimeError(f"{type(self).__name__} has no threshold: call calibrate(...) first")

    def _criterion(self, cum_logits: Tensor, steps: Tensor) -> Tensor:
        return risk_score(cum_logits, self.score, steps, self.step_power) > self.threshold

    def params(self) -> dict[str, Any]:
        finite = self.threshold is not None and math.isfinite(self.threshold)
        return {
            "score": self.score,
            "step_power": self.step_power,
            "risk": self.risk,
            "delta": self.delta,
            "pvalue": self.pvalue,
            "n": self.n,
            "certified": self.certified,
            "threshold": self.threshold if finite else None,  # None: exits at T
            "empirical_risk": self.empirical_risk,
            "p_value": self.p_value,
            "tested": self.tested,
        }


# ---------------------------------------------------------------------------- SpikeCP


class SpikeCP(ExitRule):
    """SpikeCP (Chen, Park, Simeone 2023): conformal sets at checkpoints, exit when small.

    At checkpoints ``t_1 < ... < t_S`` (default every step), the non-conformity of label y is
    ``NC_y = −log softmax(Y(t_s))_y``. Calibration: ``q_s`` = the ``⌈(1 − α/S)(n + 1)⌉``-th
    smallest ``NC`` of the true labels over the n calibration samples (``+inf`` if that
    index exceeds n). Set ``Γ_s = {y : NC_y <= q_s}``; exit at the first checkpoint with
    ``|Γ_s| <= max_set_size`` and predict the top label; at T always exit. By a union bound
    over the S checkpoints, the set at the exit contains the label with probability
    ``>= 1 − α`` (exchangeable samples). At a forced exit at T that is not a checkpoint the
    set is every label.
    """

    name = "spikecp"

    def __init__(
        self,
        alpha: float = 0.1,
        max_set_size: int = 1,
        checkpoints: Sequence[int] | None = None,
    ) -> None:
        self.alpha = _check_fraction("alpha", alpha)
        super().__init__(0.0)
        self.max_set_size = _check_int("max_set_size", max_set_size, 1)
        if checkpoints is not None:
            checkpoints = [_check_int("checkpoints[]", c, 1) for c in checkpoints]
            if not checkpoints or sorted(set(checkpoints)) != checkpoints:
                raise ValueError(
                    f"checkpoints: expected a non-empty increasing list of steps, got {checkpoints}"
                )
        self.checkpoints = checkpoints
        self.q: Tensor | None = None  # [T] float64; +inf at non-checkpoint steps
        self.is_checkpoint: Tensor | None = None  # [T] bool
        self.n: int | None = None

    def _steps_for(self, T: int) -> list[int]:
        steps = list(range(1, T + 1)) if self.checkpoints is None else self.checkpoints
        if steps[-1] > T:
            raise ValueError(f"checkpoints: expected steps in 1..T = {T}, got {steps}")
        return steps

    def calibrate(self, cum_logits: Tensor, labels: Tensor) -> SpikeCP:
        """Compute ``q_s`` at every checkpoint (class docstring)."""
        validate_cum_logits(cum_logits, labels)
        _require_samples(cum_logits, "SpikeCP.calibrate")
        T, n, _ = cum_logits.shape
        steps = self._steps_for(T)
        S = len(steps)
        rank = math.ceil((1.0 - self.alpha / S) * (n + 1) - 1e-9)
        index = torch.tensor(steps) - 1
        nc = -cum_logits.double().log_softmax(dim=-1)[index].cpu()  # [S, n, K]
        nc_true = nc.gather(2, labels.cpu().view(1, n, 1).expand(S, n, 1)).squeeze(2)
        q = torch.full((T,), math.inf, dtype=torch.float64)
        if rank <= n:
            q[index] = nc_true.sort(dim=1).values[:, rank - 1]
        self.q = q
        self.is_checkpoint = torch.zeros(T, dtype=torch.bool)
        self.is_checkpoint[index] = True
        self.n = n
        return self

    def check_ready(self, T: int) -> None:
        if self.q is None:
            raise RuntimeError("SpikeCP has no quantiles: call calibrate(...) first")
        if self.q.shape[0] != T:
            raise ValueError(f"SpikeCP was calibrated for T = {self.q.shape[0]} steps, got T = {T}")

    def sets(self, cum_logits: Tensor, steps: Tensor) -> Tensor:
        """Bool ``[S, N, K]``: the prediction sets ``Γ`` at the 1-based ``steps``
        (every label at a step that is not a checkpoint)."""
        q = self.q.to(cum_logits.device)[steps - 1]
        nc = -cum_logits.double().log_softmax(dim=-1)
        inside = nc <= q.view(-1, 1, 1)
        outside = ~self.is_checkpoint.to(cum_logits.device)[steps - 1]
        return inside | outside.view(-1, 1, 1)

    def _criterion(self, cum_logits: Tensor, steps: Tensor) -> Tensor:
        small = self.sets(cum_logits, steps).sum(dim=-1) <= self.max_set_size
        return small & self.is_checkpoint.to(cum_logits.device)[steps - 1].unsqueeze(1)

    def exit_sets(self, cum_logits: Tensor) -> Tensor:
        """Bool ``[N, K]``: each sample's prediction set at its exit step."""
        validate_cum_logits(cum_logits)
        T, N, _ = cum_logits.shape
        self.check_ready(T)
        steps = self.exit_steps(cum_logits)
        rows = cum_logits[steps - 1, torch.arange(N, device=cum_logits.device)]
        return self.sets(rows.unsqueeze(1), steps).squeeze(1)

    def params(self) -> dict[str, Any]:
        q = None if self.q is None else [v if math.isfinite(v) else None for v in self.q.tolist()]
        return {
            "alpha": self.alpha,
            "max_set_size": self.max_set_size,
            "checkpoints": self.checkpoints,
            "n": self.n,
            "quantiles": q,  # None: +inf (no quantile, or not a checkpoint)
        }


# ---------------------------------------------------------------------- evaluation/check


GUARANTEED_RULES = ("topk-risk", "softmax-risk", "entropy-risk", "spikecp")


def make_guaranteed_rule(
    name: str,
    *,
    risk: float = 0.01,
    delta: float = 0.1,
    alpha: float = 0.1,
    max_set_size: int = 1,
) -> ExitRule:
    """Build a guaranteed rule by its config name (:data:`GUARANTEED_RULES`)."""
    if name == "spikecp":
        return SpikeCP(alpha=alpha, max_set_size=max_set_size)
    if name.endswith("-risk") and name[: -len("-risk")] in RISK_SCORES:
        return RiskControlledCutoff(score=name[: -len("-risk")], risk=risk, delta=delta)
    raise ValueError(f"unknown guaranteed rule {name!r}; known: {', '.join(GUARANTEED_RULES)}")


def _rebuild_float(value: float | None) -> float:
    """A stored threshold: JSON ``null`` stands for ``+inf`` (no finite threshold)."""
    return math.inf if value is None else float(value)


def rule_from_dict(record: dict[str, Any]) -> ExitRule:
    """Rebuild a calibrated rule from its :meth:`~spikecut.cutoff.ExitRule.to_dict` record
    (e.g. a run's ``guaranteed`` entry in results.json), without calibrating again.

    The rebuilt rule gives the same exit steps as the one that was saved: thresholds are
    stored as exact JSON floats, and ``null`` thresholds mean ``+inf`` (never exit early).
    Extra keys (the evaluation's accuracy, mean exit, ...) are ignored.
    """
    if not isinstance(record, dict) or not isinstance(record.get("rule"), str):
        raise ValueError(f"rule record: expected a dict with a 'rule' name, got {record!r}")
    name = record["rule"]

    def need(*keys: str) -> None:
        missing = [k for k in keys if k not in record]
        if missing:
            raise ValueError(
                f"rule record {name!r}: missing {', '.join(missing)} (expected the keys of "
                f"its to_dict(); found {', '.join(record)})"
            )

    epsilon = float(record.get("epsilon", 0.0))
    if name == "topk":
        need("beta")
        if record["beta"] is None:
            raise ValueError("rule record 'topk': beta is null (the rule was never calibrated)")
        rule = TopKCutoff(epsilon=epsilon, bins=record.get("bins", 100))
        rule.beta = torch.tensor(record["beta"], dtype=torch.float64)
        return rule
    if name == "softmax":
        return SoftmaxConfidence(epsilon)
    if name == "entropy":
        need("threshold")
        if record["threshold"] is None:
            raise ValueError("rule record 'entropy': threshold is null (never calibrated)")
        return EntropyCutoff(
            threshold=record["threshold"],
            epsilon=epsilon,
            candidates=record.get("candidates", 200),
        )
    if name == "fixed":
        need("step")
        return FixedTimestep(record["step"])
    if name == "spikecp":
        need("alpha", "max_set_size", "quantiles")
        if record["quantiles"] is None:
            raise ValueError("rule record 'spikecp': quantiles are null (never calibrated)")
        cp = SpikeCP(record["alpha"], record["max_set_size"], record.get("checkpoints"))
        T = len(record["quantiles"])
        steps = cp._steps_for(T)
        cp.q = torch.tensor([_rebuild_float(v) for v in record["quantiles"]], dtype=torch.float64)
        cp.is_checkpoint = torch.zeros(T, dtype=torch.bool)
        cp.is_checkpoint[torch.tensor(steps) - 1] = True
        cp.n = record.get("n")
        return cp
    if name.endswith("-risk") and name[: -len("-risk")] in RISK_SCORES:
        need("risk", "delta", "threshold", "n")
        if record["n"] is None:
            raise ValueError(f"rule record {name!r}: n is null (the rule was never calibrated)")
        rule = RiskControlledCutoff(
            score=name[: -len("-risk")],
            risk=record["risk"],
            delta=record["delta"],
            pvalue=record.get("pvalue", "binomial"),
            step_power=record.get("step_power", 0.0),
        )
        rule.threshold = _rebuild_float(record["threshold"])
        rule.n = record["n"]
        for key in ("certified", "empirical_risk", "p_value"):
            setattr(rule, key, record.get(key))
        rule.tested = record.get("tested", 0)
        return rule
    known = ", ".join(["topk", "softmax", "entropy", "fixed", *GUARANTEED_RULES])
    raise ValueError(f"rule record: unknown rule {name!r}; known: {known}")


def evaluate_guaranteed(rule: ExitRule, cum_logits: Tensor, labels: Tensor) -> dict[str, Any]:
    """:func:`~spikecut.cutoff.evaluate_rule` plus the rule's calibration record
    (``to_dict``) and, on the test split, ``loss`` (mean ℓ) and for SpikeCP ``coverage``
    (label inside the set at the exit) and ``mean_set_size``."""
    row = {**rule.to_dict(), **evaluate_rule(rule, cum_logits, labels)}
    steps = rule.exit_steps(cum_logits)
    row["loss"] = float(exit_loss(cum_logits, labels, steps).double().mean())
    if isinstance(rule, SpikeCP):
        sets = rule.exit_sets(cum_logits)
        inside = sets[torch.arange(labels.shape[0]), labels.to(sets.device)]
        row["coverage"] = float(inside.double().mean())
        row["mean_set_size"] = float(sets.sum(dim=-1).double().mean())
    return row


CHECK_MODES = ("resample", "split")


def check_guarantee(
    cum_logits: Tensor,
    labels: Tensor,
    make_rule: Callable[[Tensor, Tensor], ExitRule],
    *,
    risk: float,
    delta: float,
    repeats: int = 200,
    cal_fraction: float = 0.5,
    seed: int = 0,
    mode: str = "resample",
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Recalibrate ``repeats`` times on pooled outputs and count how often the risk is missed.

    ``make_rule(cal_logits, cal_labels)`` returns a *calibrated* rule (so a calibrator that
    ignores its split, e.g. thresholds fitted on the training data, can be checked too).
    Each repeat calibrates on ``n = cal_fraction · N`` samples and measures the loss ℓ:

    * ``mode="resample"`` (default): the pool is the population. The n calibration samples
      are drawn from it i.i.d. (with replacement), so they are exchangeable by construction,
      and the rule's loss is measured on the whole pool: its exact risk under that
      population. A violation is exactly the event LTT bounds, ``E[ℓ] > risk``.
    * ``mode="split"``: a random split without replacement, the loss measured on the other
      samples. That test loss is itself an estimate: a rule whose risk sits just under the
      bound exceeds it on a finite test split far more often than δ, so this mode
      over-counts violations of a valid rule (and the repeats share samples).

    Returns the violation rate with its Clopper–Pearson interval at ``confidence``, whether
    it is significantly above ``delta`` (the interval's lower end above δ), the mean exit,
    the mean loss, the mean accuracy change against T and the share of certified repeats.
    """
    validate_cum_logits(cum_logits, labels)
    repeats = _check_int("repeats", repeats, 1)
    cal_fraction = _check_fraction("cal_fraction", cal_fraction)
    if mode not in CHECK_MODES:
        raise ValueError(f"mode: expected one of {', '.join(CHECK_MODES)}, got {mode!r}")
    N = cum_logits.shape[1]
    n_cal = round(cal_fraction * N)
    if not 1 <= n_cal < N:
        raise ValueError(f"cal_fraction: {cal_fraction} of N = {N} leaves an empty split")
    g = torch.Generator().manual_seed(seed)
    labels = labels.to(cum_logits.device)
    losses, exits, deltas, certified = [], [], [], []
    for _ in range(repeats):
        if mode == "resample":
            cal = torch.randint(N, (n_cal,), generator=g).to(cum_logits.device)
            y, lab = cum_logits, labels
        else:
            perm = torch.randperm(N, generator=g).to(cum_logits.device)
            cal, test = perm[:n_cal], perm[n_cal:]
            y, lab = cum_logits[:, test], labels[test]
        rule = make_rule(cum_logits[:, cal], labels[cal])
        steps = rule.exit_steps(y)
        losses.append(float(exit_loss(y, lab, steps).double().mean()))
        exits.append(float(steps.double().mean()))
        right = (exit_predictions(y, steps) == lab).double().mean()
        deltas.append(float(right - (y[-1].argmax(-1) == lab).double().mean()))
        certified.append(bool(getattr(rule, "certified", True)))
    violations = sum(loss > risk for loss in losses)
    lower, upper = clopper_pearson(violations, repeats, confidence)
    return {
        "mode": mode,
        "repeats": repeats,
        "n_calibration": n_cal,
        "n_test": N if mode == "resample" else N - n_cal,
        "risk": risk,
        "delta": delta,
        "violations": violations,
        "violation_rate": violations / repeats,
        "violation_interval": [lower, upper],
        "significantly_above_delta": lower > delta,
        "certified_rate": sum(certified) / repeats,
        "mean_loss": sum(losses) / repeats,
        "mean_exit": sum(exits) / repeats,
        "mean_accuracy_delta": sum(deltas) / repeats,
    }
