"""Measured costs behind the anytime engine's choices (:mod:`spikecut.anytime`).

Two decisions are made from times taken while the engine runs, never from constants:

* :class:`StrategyChooser` picks, per device and batch size, how a batch is run: step by
  step *compacting* the state to the samples still running, step by step *masking* (every
  row keeps computing; no compaction), *full* T-step inference followed by the offline
  rule, or *chunked*: several steps per network call, in the chunks that
  :func:`plan_chunks` finds cheapest for the exits seen so far (a call has a fixed cost
  that a small network or a batch of one pays on every step; a chunk pays it once). It
  times each candidate on the first batches of a size, scales each timing to the typical
  exits of the batches seen (so strategies timed on different samples compare fairly),
  and then keeps the fastest, so the engine is never slower than not exiting by more
  than the noise of its timings. At batch 1 or 2, where the strategies are near ties on a
  small network, one that exits early must beat full inference beyond that noise.
* :class:`CompactionCosts` tells the compacting path whether dropping the rows that exited
  pays: the step time saved over the remaining steps (a line ``fixed + per_row·rows``
  fitted to the step times seen) against the time a compaction took.

All three paths give the same exit steps and predictions (the offline rule on the same
per-step outputs), so the choice changes only the time.
"""

from __future__ import annotations

import functools
import math
import time

import torch

from .stats import student_t_ppf

__all__ = [
    "GRAPHED",
    "STRATEGIES",
    "CompactionCosts",
    "StrategyChooser",
    "now",
    "plan_chunks",
]

STRATEGIES = ("compact", "mask", "full", "chunked")
GRAPHED = "graphed"
"""The masked step loop replayed from CUDA graphs (:mod:`spikecut._anytime_graphs`): a
candidate on CUDA devices only."""


def now(device: torch.device) -> float:
    """``perf_counter`` after the device's queue is drained (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class StrategyChooser:
    """Times every strategy on the first batches of each (device, batch-size bucket, input
    kind) and then picks the one with the least expected time. Buckets are powers of two: a
    dataset's short last batch is timed on its own.

    A timing depends on the batch it was taken on: masking runs until the batch's last exit,
    compaction about as long as its mean exit, full inference always T steps. At batch 1 a
    trial is one sample, so two strategies timed on two samples compare different exits.
    Each timing is therefore divided by its batch's *work* (steps: the last exit for
    ``mask``, the mean exit for ``compact``, T for ``full``) and the strategies are compared
    at the typical work, the mean over every batch of the bucket seen so far, whichever ran
    it (``chunked``'s at the current plan, over every exit counted). The first
    ``warmup_runs`` runs of each strategy are not timed (a path's first calls at new shapes
    pay one-off costs), and the strategies then take turns, ``trials`` timings each; the
    median unit cost counts, and with fewer than three the least. Three by default: with
    two, one lucky timing on a loaded machine could pick a strategy 10-20 % slower than the
    best. Timed one after another, untimed warm-up aside, the first strategy paid for the
    warming machine: on the digits network compacting was timed 1.6× slower than it runs,
    and a plan no faster than full inference was kept.

    Batches of 1 or 2 are *paired* instead (:meth:`to_run`): while they are explored, every
    candidate runs the same batch (in an order that rotates from batch to batch, so that
    none is always first on a fresh sample), ``small_trials`` times, and the strategies are
    compared by their mean time on those same samples, with no scaling (one sample's exit
    says little about the next one's, and a trial is cheap). The warm-up batches matter
    there too: one such time in a mean of six once made a strategy twice as slow
    as the best look the fastest. A strategy that exits early is taken over ``full`` only
    when it was faster on the same batches beyond their noise (a one-sided paired t-test
    at ``confidence``, 99 % by default): on a small network the strategies are near ties,
    and a lucky few trials once picked one that ran at 0.76 of full-T inference's speed
    (at 95 % a bench run still kept masking for digits at 0.91 of it). Exploring goes on,
    up to ``max_small_trials`` batches, until the fastest by the mean has proved itself
    against ``full`` (or ``full`` against every other): a gain that varies from sample to
    sample with the exit step (a sample that exits at step 1 gains much, one that runs to T
    loses) needs many samples to show, either way: with six, a few late exits in a row made
    ``full`` look proven for networks that masking ran 2× faster, in half the batch-1 rows of
    a bench run. Hence ``small_trials`` = 16 pairs before any choice. After the cap the
    fastest proven strategy, or ``full``, is taken. It is revisited every ``recheck_every``
    batches from then on (:meth:`observe_exits`): every batch's exit is counted whichever
    strategy ran it, and the paired timings, regressed on their exits, are read at the
    stream's mean exit, so a gain hidden by the few timed samples' exits shows without
    timing more of them.

    While a key is being learned, every network call's time (:meth:`observe_call`) and
    every batch's exit steps are kept, and :meth:`plan` turns them into the chunks of the
    ``chunked`` strategy. Once the key has settled its plan is fixed, and only one run in
    ``recheck_every`` is timed (the bookkeeping is otherwise per-sample cost at batch 1).
    """

    def __init__(
        self,
        trials: int = 3,
        candidates: tuple[str, ...] = STRATEGIES,
        small_trials: int = 16,
        recheck_every: int = 16,
        warmup_runs: int = 1,
        confidence: float = 0.99,
        max_small_trials: int = 32,
    ) -> None:
        if not 0.5 <= confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        if max_small_trials < small_trials:
            raise ValueError(
                f"max_small_trials ({max_small_trials}) must be >= small_trials ({small_trials})"
            )
        self.confidence = confidence
        self.trials = trials
        self.small_trials = small_trials
        self.max_small_trials = max_small_trials
        self.warmup_runs = warmup_runs
        self._warmed: dict[tuple, int] = {}  # (key, strategy) -> untimed runs
        self.candidates = candidates
        self.recheck_every = recheck_every
        self._unit: dict[tuple, dict[str, list[float]]] = {}
        self._work: dict[tuple, dict[str, list[float]]] = {}  # name -> [sum, count]
        self._calls: dict[tuple, list[float]] = {}  # n, Σx, Σy, Σxx, Σxy; x = rows·steps
        self._exits: dict[tuple, torch.Tensor] = {}  # how many batches' rows exited at t
        self._plans: dict[tuple, tuple[int, ...]] = {}
        self._runs: dict[tuple, int] = {}
        self._paired: dict[tuple, dict[str, list[float]]] = {}  # seconds on the same batches
        self._choice: dict[tuple, str] = {}  # the fastest, once settled
        self._exit_batches: dict[tuple, int] = {}  # batches whose exits were counted
        self._settled: set[tuple] = set()  # keys whose choice is made (kept for good)
        self._explored: dict[tuple, int] = {}  # paired batches handed out, for the order
        self._paired_exits: dict[tuple, list[float | None]] = {}  # full's pairs' mean exits
        self._stream: dict[tuple, list[float]] = {}  # n, Σe, Σe² of every paired-key batch

    @staticmethod
    def key(device: torch.device, batch: int, frames: bool) -> tuple:
        return (device.type, max(1, batch - 1).bit_length(), frames)

    def candidates_for(self, key: tuple) -> tuple[str, ...]:
        """The candidates for ``key``: ``graphed`` only on a CUDA device."""
        if key[0] == "cuda":
            return self.candidates
        return tuple(name for name in self.candidates if name != GRAPHED)

    def trials_for(self, key: tuple) -> int:
        """Timings wanted per strategy for ``key`` (more for batches of 1 or 2)."""
        return self.small_trials if self.paired(key) else self.trials

    @staticmethod
    def paired(key: tuple) -> bool:
        """Batches of 1 or 2: explored with every candidate on the same batch."""
        return key[1] <= 1

    def to_run(self, key: tuple) -> tuple[str, ...]:
        """The strategies to run the next batch with: every candidate while a paired key is
        explored, else :meth:`pick`'s one."""
        candidates = self.candidates_for(key)
        if self.paired(key) and not self.settled(key):
            turn = self._explored[key] = self._explored.get(key, -1) + 1
            turn %= len(candidates)
            return candidates[turn:] + candidates[:turn]
        return (self.pick(key),)

    def pick(self, key: tuple) -> str:
        """The next strategy to run: the one with the fewest runs among those still short of
        timings (in turns, so that a machine warming up or a load drifting weighs on each
        alike, in an order that rotates from round to round), else the fastest."""
        choice = self._choice.get(key)
        if choice is not None:
            return choice
        candidates = self.candidates_for(key)
        seen = self._unit.setdefault(key, {})
        runs = {
            name: len(seen.get(name, ())) + self._warmed.get((key, name), 0)
            for name in candidates
            if len(seen.get(name, ())) < self.trials_for(key)
        }
        if runs:
            # the fewest runs first; each round starts one candidate later, so that batches
            # that alternate (two per pass over a split) are not always met by the same ones
            start = min(runs.values()) % len(candidates)
            order = candidates[start:] + candidates[:start]
            return min(order, key=lambda name: runs.get(name, math.inf))
        eligible = candidates
        if self.paired(key) and "full" in eligible:
            eligible = [name for name in eligible if name == "full" or self._beats_full(key, name)]
        choice = min(eligible, key=lambda name: self.expected(key, name))
        self._choice[key] = choice
        return choice

    def _beats_full(self, key: tuple, strategy: str) -> bool:
        """Whether ``strategy`` was faster than ``full`` on the same batches by more than the
        noise of their paired timings (one-sided paired t-test at ``confidence``)."""
        return self._faster(key, strategy, "full")

    def _faster(self, key: tuple, strategy: str, than: str) -> bool:
        """Whether ``strategy`` beat ``than`` on the same batches beyond their noise."""
        timings = self._paired.get(key, {})
        base, other = timings.get(than, []), timings.get(strategy, [])
        n = min(len(base), len(other))
        if n < 2:
            return False
        # per batch, from the first: in the middle of a paired batch (record() asks whether
        # the key has settled) one list holds the batch's time and the other not yet
        saved = [b - o for b, o in zip(base[:n], other[:n], strict=True)]
        mean = sum(saved) / n
        spread = math.sqrt(sum((d - mean) ** 2 for d in saved) / (n - 1) / n)
        return mean > _t_quantile(self.confidence, n - 1) * spread

    def wants_record(self, key: tuple) -> bool:
        """Whether this run of ``key`` should be timed: every run until the key has settled,
        then one in ``recheck_every``."""
        if not self.settled(key):
            return True
        if self.paired(key):  # the pairs are what count; later lone timings would not pair
            return False
        runs = self._runs[key] = self._runs.get(key, 0) + 1
        return runs % self.recheck_every == 0

    def observe_call(self, key: tuple, rows: int, steps: int, seconds: float) -> None:
        """One network call (and its rule check) of ``steps`` steps on ``rows`` rows took
        ``seconds``: a point of the line ``fixed + per_row_step · rows · steps``."""
        sums = self._calls.setdefault(key, [0.0] * 5)
        x = float(rows * steps)
        sums[0] += 1
        sums[1] += x
        sums[2] += seconds
        sums[3] += x * x
        sums[4] += x * seconds

    def call_cost(self, key: tuple) -> tuple[float, float] | None:
        """``(fixed, per_row_step)`` seconds fitted to the calls observed (least squares,
        both at least 0); ``None`` before calls of two different sizes were seen."""
        sums = self._calls.get(key)
        if sums is None:
            return None
        n, sx, sy, sxx, sxy = sums
        var = n * sxx - sx * sx
        if n < 2 or var <= 1e-9 * max(1.0, n * sxx):
            return None
        slope = max(0.0, (n * sxy - sx * sy) / var)
        return max(0.0, (sy - slope * sx) / n), slope

    def plan(self, key: tuple, T: int, batch: int, refresh: bool = True) -> tuple[int, ...]:
        """The chunks (steps per network call, summing to ``T``) for the ``chunked``
        strategy: :func:`plan_chunks` on the fitted call cost and the exits seen; one step
        per call until both are known. Fixed once the key has settled, or when not
        ``refresh`` (an explicitly chunked engine that has stopped learning)."""
        if key in self._plans and (self.settled(key) or not refresh):
            return self._plans[key]
        cost, counts = self.call_cost(key), self._exits.get(key)
        if cost is None or counts is None or counts.shape[0] != T:
            plan = (1,) * T
        else:
            running = counts.flip(0).cumsum(0).flip(0) / counts.sum()  # P(exit >= t)
            plan = plan_chunks(running.tolist(), batch, *cost)
        self._plans[key] = plan
        return plan

    def record_exits(self, key: tuple, exits: torch.Tensor, T: int) -> None:
        """Count a batch's exit steps (of ``T``) for the plan of ``key``."""
        self._exit_batches[key] = self._exit_batches.get(key, 0) + 1
        counts = torch.bincount(exits.detach().long().cpu() - 1, minlength=T)[:T].double()
        seen = self._exits.get(key)
        self._exits[key] = counts if seen is None or seen.shape != counts.shape else seen + counts

    def exit_batches(self, key: tuple) -> int:
        """How many batches of ``key`` had their exits counted."""
        return self._exit_batches.get(key, 0)

    def record(
        self,
        key: tuple,
        strategy: str,
        seconds_per_sample: float,
        exits: torch.Tensor | None = None,
        T: int | None = None,
    ) -> None:
        """One timing of ``strategy`` on a batch whose exit steps were ``exits`` (of ``T``).

        Without ``exits`` the timing counts as is (work 1 for every strategy)."""
        if exits is not None and T is not None and not self.settled(key):
            self.record_exits(key, exits, T)
        warmed = self._warmed.get((key, strategy), 0)
        if warmed < self.warmup_runs:  # a warm-up run: its exits count, not its time
            self._warmed[(key, strategy)] = warmed + 1
            return
        work = _work(exits, T, self._plans.get(key))
        for name, amount in work.items():  # a running mean: a stream of batches keeps no list
            total = self._work.setdefault(key, {}).setdefault(name, [0.0, 0])
            total[0] += amount
            total[1] += 1
        times = self._unit.setdefault(key, {}).setdefault(strategy, [])
        times.append(seconds_per_sample / max(work[strategy], 1e-12))
        del times[: -self.trials_for(key)]  # the latest timings: a drifting load is followed
        if self.paired(key):
            pairs = self._paired.setdefault(key, {}).setdefault(strategy, [])
            pairs.append(seconds_per_sample)
            del pairs[: -self.max_small_trials]
            if strategy == "full":  # the batch's exits, aligned with full's times (gain())
                paired_exits = self._paired_exits.setdefault(key, [])
                paired_exits.append(None if exits is None else _mean_exit(exits))
                del paired_exits[: -self.max_small_trials]
        self._choice.pop(key, None)

    def expected(self, key: tuple, strategy: str) -> float:
        """Expected seconds per sample of ``strategy`` at the bucket's typical work (for a
        paired key, its mean on the batches every candidate ran)."""
        pairs = self._paired.get(key, {}).get(strategy)
        if pairs:
            return sum(pairs) / len(pairs)
        units = sorted(self._unit[key][strategy])
        unit = units[len(units) // 2] if len(units) >= 3 else units[0]
        work = self._chunked_work(key) if strategy == "chunked" else None
        if work is None:
            total, count = self._work[key][strategy]
            work = total / count
        return unit * work

    def _chunked_work(self, key: tuple) -> float | None:
        """Mean steps a sample spends under the current chunk plan, over every exit counted:
        the running mean of :meth:`record` mixes the plans of earlier batches, and a plan
        that grew from one step a call to whole chunks once looked 13 % cheaper than it was."""
        counts, plan = self._exits.get(key), self._plans.get(key)
        if counts is None or plan is None or sum(plan) != counts.shape[0]:
            return None
        steps = torch.arange(1, counts.shape[0] + 1, dtype=torch.float64)
        return float((counts * _chunk_ends(plan, steps)).sum() / counts.sum())

    def settled(self, key: tuple) -> bool:
        """True once every candidate has its timings for ``key`` (for a paired key: and the
        fastest by the mean has proved itself against ``full``, or ``full`` against every
        other, or the exploring reached its cap). Once settled, always: the answer is kept."""
        if key in self._settled:
            return True
        seen = self._unit.get(key, {})
        wanted = self.trials_for(key)
        candidates = self.candidates_for(key)
        done = all(len(seen.get(name, ())) >= wanted for name in candidates)
        if done and self.paired(key) and "full" in candidates:
            pairs = self._paired.get(key, {})
            explored = min(len(pairs.get(name, ())) for name in candidates)
            fastest = min(candidates, key=lambda name: self.expected(key, name))
            if fastest == "full":  # settled early only if full beat every other one too
                others = [name for name in candidates if name != "full"]
                proven = all(self._faster(key, "full", name) for name in others)
            else:
                proven = self._beats_full(key, fastest)
            done = explored >= self.max_small_trials or proven
        if done:
            self._settled.add(key)
        return done

    def observe_exits(self, key: tuple, exits: torch.Tensor) -> None:
        """Count a batch's mean exit step for a paired key, whichever strategy ran it, and
        every ``recheck_every`` batches after the key settled revisit its choice
        (:meth:`_revisit`): the paired timings are few, the exits of the stream many."""
        if not self.paired(key):
            return
        exit_step = _mean_exit(exits)
        stats = self._stream.setdefault(key, [0, 0.0, 0.0])
        stats[0] += 1
        stats[1] += exit_step
        stats[2] += exit_step * exit_step
        if key in self._settled and stats[0] % self.recheck_every == 0:
            self._revisit(key)

    def _revisit(self, key: tuple) -> None:
        """Take the strategy that saves the most against ``full`` at the stream's mean exit
        (:meth:`gain`) when that saving is beyond its error (one-sided at ``confidence``);
        go back to ``full`` when the current choice is as surely slower than it.

        The exploring cap ends on ``full`` when a gain that swings with the exit step has
        not shown in 32 pairs (tet with RCS: masking at 0.82 of full T's time, kept as full
        in one stream order of eight). The timings, regressed on their exits, say what each
        strategy costs at any exit; the stream's mean exit, over far more samples than were
        timed, says where to read them. Where the truth is a loss the estimate converges to
        it, so later looks do not add false switches beyond near-ties."""
        candidates = self.candidates_for(key)
        if "full" not in candidates:
            return
        gains = {name: self.gain(key, name) for name in candidates if name != "full"}
        proven = {
            name: mean
            for name, (mean, error, dof) in ((n, g) for n, g in gains.items() if g is not None)
            if mean > _t_quantile(self.confidence, dof) * error
        }
        current = self._choice.get(key, "full")
        if proven:
            self._choice[key] = max(proven, key=proven.__getitem__)
        elif current != "full" and gains.get(current) is not None:
            mean, error, dof = gains[current]
            if -mean > _t_quantile(self.confidence, dof) * error:
                self._choice[key] = "full"

    def gain(self, key: tuple, strategy: str) -> tuple[float, float, int] | None:
        """Seconds per sample ``strategy`` saves against ``full`` at the mean exit of every
        batch of a paired key counted so far, its standard error and degrees of freedom; or
        ``None`` before four pairs with their exits.

        The paired savings ``d`` are regressed on the pairs' exits ``e`` (``d = a + b·e``),
        read at the stream's mean exit ``ē``; the error adds the line's (residual noise)
        and ``ē``'s own, ``b²·var(e)/N`` over the ``N`` batches counted."""
        timings = self._paired.get(key, {})
        base, other = timings.get("full", []), timings.get(strategy, [])
        exits = self._paired_exits.get(key, [])
        n = min(len(base), len(other), len(exits))
        stats = self._stream.get(key)
        if n < 4 or stats is None or any(e is None for e in exits[:n]):
            return None
        es = exits[:n]
        saved = [b - o for b, o in zip(base[:n], other[:n], strict=True)]
        mean_e, mean_d = sum(es) / n, sum(saved) / n
        sxx = sum((e - mean_e) ** 2 for e in es)
        sxy = sum((e - mean_e) * (d - mean_d) for e, d in zip(es, saved, strict=True))
        slope = sxy / sxx if sxx > 0 else 0.0
        residual = sum(
            (d - mean_d - slope * (e - mean_e)) ** 2 for e, d in zip(es, saved, strict=True)
        ) / (n - 2)
        count, total, squares = stats
        stream_mean = total / count
        stream_var = max(0.0, squares - count * stream_mean**2) / max(count - 1, 1)
        shift = stream_mean - mean_e
        variance = residual * (1.0 / n + (shift * shift / sxx if sxx > 0 else 0.0))
        variance += slope * slope * stream_var / count
        return mean_d + slope * shift, math.sqrt(variance), n - 2

    def table(self) -> dict[str, dict[str, float]]:
        """Expected seconds per sample of every strategy timed, by key (for reports)."""
        return {
            str(key): {name: self.expected(key, name) for name, times in seen.items() if times}
            for key, seen in self._unit.items()
        }


_t_quantile = functools.lru_cache(maxsize=None)(student_t_ppf)
"""Student's t quantile, kept (the bisection is a revisit's main cost)."""


def _mean_exit(exits: torch.Tensor) -> float:
    """A paired batch's (one or two samples) mean exit step, read without tensor operations."""
    steps = exits.tolist()
    return sum(steps) / len(steps)


def _work(
    exits: torch.Tensor | None, T: int | None, plan: tuple[int, ...] | None = None
) -> dict[str, float]:
    """Steps each strategy spends on a batch with these exit steps (1 each without them);
    ``chunked`` runs each sample to the end of the chunk its exit falls in; ``mask`` and
    ``graphed`` run every row until the last one exits."""
    if exits is None or T is None or exits.numel() == 0:
        return dict.fromkeys((*STRATEGIES, GRAPHED), 1.0)
    exits = exits.detach().float()
    mean = float(exits.mean())
    chunked = mean
    if plan is not None and sum(plan) == T and max(plan) > 1:
        chunked = float(_chunk_ends(plan, exits).mean())
    last = float(exits.max())
    return {"compact": mean, "mask": last, "full": float(T), "chunked": chunked, GRAPHED: last}


def _chunk_ends(plan: tuple[int, ...], steps: torch.Tensor) -> torch.Tensor:
    """The last step of the chunk of ``plan`` that each of ``steps`` falls in (a sample
    run in chunks computes to the end of the chunk its exit falls in)."""
    ends = torch.tensor(plan, dtype=steps.dtype, device=steps.device).cumsum(0)
    return ends[torch.searchsorted(ends, steps)]


def plan_chunks(
    running: list[float], batch: int, fixed: float, per_row_step: float
) -> tuple[int, ...]:
    """The chunk lengths (summing to ``T = len(running)``) of least expected time.

    ``running[s]`` is the fraction of samples still running at step ``s + 1`` (1 at the
    first step). A chunk of ``k`` steps starting after step ``s`` costs ``fixed`` when any
    of the ``batch`` samples still runs (probability ``1 − (1 − running[s])^batch``) plus
    ``per_row_step · k`` for each running row. Long chunks pay the fixed cost less often
    but compute steps past the exits; a dynamic programme over the chunk starts weighs both.
    """
    T = len(running)
    best = [0.0] * (T + 1)
    length = [1] * (T + 1)
    for s in range(T - 1, -1, -1):
        share = min(1.0, max(0.0, running[s]))
        any_running = 1.0 - (1.0 - share) ** batch
        best[s], length[s] = min(
            (any_running * fixed + per_row_step * k * batch * share + best[s + k], -k)
            for k in range(1, T - s + 1)
        )  # a tie goes to the longer chunk: fewer calls
        length[s] = -length[s]
    plan, s = [], 0
    while s < T:
        plan.append(length[s])
        s += length[s]
    return tuple(plan)


_SPAN = 0.25  # the share of the largest row count the counts must span for a fitted slope


class CompactionCosts:
    """Step times against row counts, and compaction times, of one network on one device.

    :meth:`pays` answers whether dropping ``done`` rows now saves more step time
    over the ``remaining`` steps than a compaction costs. Until a compaction has been timed
    it answers yes (so the first one is measured); until the row counts seen span a quarter
    of the largest, the whole step time counts as per-row (an upper bound on the saving).
    """

    def __init__(self) -> None:
        self._steps: dict[int, float] = {}  # rows -> best step seconds
        self._compaction: float | None = None
        self._slope: float | None = None

    def step(self, rows: int, seconds: float) -> None:
        best = self._steps.get(rows)
        if best is None or seconds < best:
            self._steps[rows] = seconds
            self._slope = None

    def compaction(self, seconds: float) -> None:
        self._compaction = seconds if self._compaction is None else min(self._compaction, seconds)

    def per_row(self) -> float:
        """Seconds one row adds to a step (least squares over the best step times). Until the
        row counts seen span a quarter of the largest, the whole step time of the largest
        counts as per-row: a line through a few close counts is the noise's, and a slope
        read as zero would stop compaction for good (no new counts would ever be seen; a
        bench run of enter-tet ran 0.91x of full T so)."""
        if self._slope is None:
            counts = list(self._steps)
            if not counts:
                return 0.0
            largest = max(counts)
            if largest - min(counts) < _SPAN * largest:
                return self._steps[largest] / largest
            n = len(self._steps)
            xs, ys = counts, list(self._steps.values())
            mx, my = sum(xs) / n, sum(ys) / n
            var = sum((x - mx) ** 2 for x in xs)
            cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
            self._slope = max(0.0, cov / var) if var > 0 else 0.0
        return self._slope

    def pays(self, done: int, remaining: int) -> bool:
        if self._compaction is None:
            return True
        return self.per_row() * done * remaining > self._compaction
