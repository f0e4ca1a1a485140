"""Anytime inference that really stops: each sample leaves the batch when its rule fires.

:class:`AnytimeClassifier` runs a spiking network one step at a time. After every step the
exit rule (:mod:`spikecut.cutoff`) reads each running sample's accumulated output ``Y(t)``;
the samples it releases get their prediction and exit step, and the network's state is
*compacted* to the rows still running, so the next step computes only for those. Its
predictions and exit steps are the offline ones (``rule.exit_steps`` on the logits that
:func:`spikecut.evaluate.collect_cum_logits` accumulates) on the same per-step outputs:
``Y(t)`` is accumulated with the same ``cumsum`` and decided by the same arithmetic. Rows of
an eval-mode network do not depend on each other in value, but a network's outputs can
differ in the last bit with the number of rows a call computes (on the CPU a convolution
on one row takes another kernel than on eight, and a matrix product on one or two rows sums
in another order), so a sample whose Top-K gap lies within a rounding error of its
threshold could exit a step apart. In every run of ``spikecut bench`` so far the engine and
the offline evaluation agreed on every sample (its ``agreement`` column).

:class:`StreamingClassifier` serves live inputs: many streams (e.g. event sensors) are fed
frame chunks as they arrive; streams at the same step are batched together, and each gets a
:class:`Decision` as soon as its rule fires.

**State protocol.** A time-aware module (:class:`~spikecut.neurons.TemporalModule`) declares
the attributes that carry its state between calls with
:meth:`~spikecut.neurons.TemporalModule.register_state` (``"v"``, the membrane of
:class:`~spikecut.neurons.LIF`; ``"steps_seen"``, the step counter of
:class:`~spikecut.layers.TEBN`), and the engine reads ``module.state_names``. A tensor value
holds one row per sample (dim 0); any other value (``None`` after a reset, a step counter)
is shared by all rows. A module with state of another shape may define
``compact_state(index: LongTensor)`` to keep those rows itself; :func:`compact` then calls
it instead. Streaming saves and restores the declared attributes only.

The global :data:`STATE_ATTRIBUTES` list and :func:`register_state_attribute` are
deprecated: names registered there are still honoured, for one release.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from array import array
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ._anytime_costs import GRAPHED, STRATEGIES, CompactionCosts, StrategyChooser, now
from ._anytime_graphs import CudaGraphBackend, StepGraphs, bucket
from ._deprecation import warn_deprecated
from .cutoff import ExitRule
from .layout import to_time_major
from .neurons import SpikingNetwork, TemporalModule, reset, temporal_modules, temporarily_set
from .ops import OpCounter

__all__ = [
    "STATE_ATTRIBUTES",
    "AnytimeClassifier",
    "AnytimeResult",
    "Decision",
    "StreamingClassifier",
    "compact",
    "state_names",
    "register_state_attribute",
]

_PLAN_BATCHES = 16
"""Batches of each size an explicitly chunked engine learns its plan from (calls timed,
exits counted); after them the plan stays and the run carries no bookkeeping."""

_GRAPH_SETS = 8
"""Step-graph sets kept per engine (one per padded batch size and input shape); the oldest
goes when a new one is captured (each holds its own device memory)."""

_ALL_STRATEGIES = (*STRATEGIES, GRAPHED)
_UNCOUNTED = ("full", "chunked", GRAPHED)
"""Strategies that cannot count operations up to each sample's own exit."""

_NUMPY_BATCH = 16
"""Batches up to this size decide the rule in NumPy on the CPU (``_numpy_rule``)."""

_PYTHON_VALUES = 256
"""Up to this many values (one sample's logits), a CPU check runs in plain Python."""

STATE_ATTRIBUTES: list[str] = ["v", "steps_seen"]  # LIF membranes; TEBN step counters
"""Deprecated: modules declare their state (``TemporalModule.register_state``). Names added
with :func:`register_state_attribute` are still read, for one release."""


def register_state_attribute(name: str) -> None:
    """Deprecated: declare state on the module with ``TemporalModule.register_state``."""
    warn_deprecated("spikecut.anytime.register_state_attribute", "TemporalModule.register_state")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"state attribute: expected an identifier, got {name!r}")
    if name not in STATE_ATTRIBUTES:
        STATE_ATTRIBUTES.append(name)


def state_names(module: TemporalModule) -> list[str]:
    """The state attributes of ``module``: those it declared, then any it has among the
    names of the deprecated global :data:`STATE_ATTRIBUTES`."""
    declared = list(getattr(module, "state_names", ()))
    legacy = [n for n in STATE_ATTRIBUTES if n not in declared and hasattr(module, n)]
    return declared + legacy


def _state_items(model: nn.Module) -> Iterable[tuple[TemporalModule, str]]:
    for module in temporal_modules(model):
        for name in state_names(module):
            yield module, name


def compact(model: nn.Module, keep: Tensor) -> None:
    """Keep only the rows ``keep`` of every per-row state in ``model`` (in place).

    ``keep`` is a Bool mask over the current rows or a LongTensor of row indices (in the
    order the rows should have afterwards). Modules defining ``compact_state(index)`` get
    the index tensor; otherwise every tensor in a registered state attribute is indexed
    along dim 0 (see the module docstring).
    """
    if not isinstance(keep, Tensor) or keep.dim() != 1:
        raise ValueError(f"keep: expected a 1-D Bool mask or index tensor, got {keep!r}")
    if keep.dtype == torch.bool:
        rows = keep.shape[0]
        index = keep.nonzero().squeeze(1)
    elif not keep.is_floating_point():
        rows, index = None, keep.long()
    else:
        raise ValueError(f"keep: expected a Bool or integer tensor, got {keep.dtype}")
    _compact_modules(temporal_modules(model), index, rows)


def _compact_modules(modules: list[TemporalModule], index: Tensor, rows: int | None) -> None:
    """:func:`compact` on an already collected module list (the engine's, walked once)."""

    def keep(module: TemporalModule, name: str, value: Tensor) -> Tensor:
        if rows is not None and value.shape[0] != rows:
            raise ValueError(
                f"keep: mask over {rows} rows, but {type(module).__name__}.{name} has "
                f"{value.shape[0]} rows"
            )
        return _keep_rows(value, index.to(value.device))

    _map_row_states(modules, index, keep)


def _map_row_states(
    modules: list[TemporalModule],
    index: Tensor,
    keep: Callable[[TemporalModule, str, Tensor], Tensor],
) -> None:
    """Replace every per-row state of ``modules`` (a tensor in a declared state attribute)
    by ``keep(module, name, value)``, the rows ``index`` of it in their new order; a module
    with its own ``compact_state(index)`` is handed ``index`` instead. The walk
    :func:`compact` makes, with the taking of the rows left to ``keep`` (a copy there, a
    view of a leading block in :mod:`spikecut.bench.oracle`)."""
    for module in modules:
        custom = getattr(module, "compact_state", None)
        if callable(custom):
            custom(index)
            continue
        for name in state_names(module):
            value = getattr(module, name, None)
            if isinstance(value, Tensor):
                setattr(module, name, keep(module, name, value))


def _keep_rows(value: Tensor, index: Tensor) -> Tensor:
    """``value``'s rows ``index``, in ``value``'s memory layout (a channels-last state stays
    channels-last: mixing layouts in the next step's arithmetic is several times slower).

    Rows are the outermost dimension of a contiguous and of a channels-last tensor, so both
    are copied row by row with ``index_select`` (the channels-last one as its contiguous
    ``[N, H, W, C]`` view); advanced indexing, which keeps any layout, was several times
    slower on channels-last states."""
    if value.is_contiguous():
        return value.index_select(0, index)
    if value.dim() == 4 and value.is_contiguous(memory_format=torch.channels_last):
        return value.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)
    return value[index]


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback


def _first_parameter(model: nn.Module) -> tuple[nn.Module, str] | None:
    """Where ``model``'s first parameter lives (module, name), to read its device cheaply."""
    for module in model.modules():
        for name, value in module._parameters.items():
            if value is not None:
                return module, name
    return None


def _all_finite(values: Tensor) -> bool:
    """Whether every entry is finite; on the CPU through NumPy (one call instead of
    three tensor operations on a small tensor), or for one sample's logits in plain Python
    (see :meth:`spikecut.cutoff.ExitRule._criterion_python`)."""
    if values.device.type == "cpu":
        if values.numel() <= _PYTHON_VALUES:
            return all(map(math.isfinite, values.reshape(-1).tolist()))
        return bool(np.isfinite(values.numpy()).all())
    return bool(torch.isfinite(values).all())


def _require_finite(logits: Tensor) -> None:
    """Refuse exit logits holding NaN or inf (an input or a network gone wrong)."""
    if not _all_finite(logits):
        raise _not_finite(int((~torch.isfinite(logits)).sum()))


def _not_finite(bad: int) -> ValueError:
    return ValueError(f"cum_logits: expected finite values, found {bad} NaN/inf entries")


class _Accumulator:
    """The running sum ``Y(t)`` of per-step logits of the rows still running.

    It keeps the per-step outputs and takes ``cumsum`` over them, the operation offline
    evaluation uses, so ``Y(t)`` is bit for bit the offline value (tested on CPU; CUDA
    runs the same per-column scan).
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.buffer: Tensor | None = None

    def add(self, t: int, out: Tensor) -> Tensor:
        if self.buffer is None:
            self.buffer = out.new_empty(self.steps, *out.shape)
        self.buffer[t - 1] = out
        return self.buffer[:t].cumsum(0)[t - 1]

    def add_steps(self, start: int, outs: Tensor) -> Tensor:
        """Steps ``start + 1 .. start + k`` at once (``outs`` ``[k, N, K]``); their ``Y``."""
        if self.buffer is None:
            self.buffer = outs.new_empty(self.steps, *outs.shape[1:])
        end = start + outs.shape[0]
        self.buffer[start:end] = outs
        return self.buffer[:end].cumsum(0)[start:]

    def keep(self, index: Tensor) -> None:
        self.buffer = self.buffer.index_select(1, index)


class _OpTally:
    """Operations per sample: running totals of the active rows, final ones at exit."""

    def __init__(self, counter: OpCounter, batch: int, device: torch.device) -> None:
        self.counter = counter
        self.sops = torch.zeros(batch, dtype=torch.long, device=device)
        self.macs = torch.zeros(batch, dtype=torch.long, device=device)
        self.running_sops = torch.zeros(batch, dtype=torch.long, device=device)
        self.running_macs = torch.zeros(batch, dtype=torch.long, device=device)

    def step(self) -> None:
        """Add the counts of the step just run (one call of one step)."""
        counts = self.counter.pop()
        self.running_sops += counts.total_sops()[0]
        self.running_macs += counts.total_analogue_macs()[0]

    def leave(self, rows: Tensor, leaving: Tensor) -> None:
        """Samples ``rows`` (original indices) exit; ``leaving`` are their active positions."""
        self.sops[rows] = self.running_sops[leaving]
        self.macs[rows] = self.running_macs[leaving]

    def leave_where(self, fire: Tensor) -> None:
        """The rows where ``fire`` is True exit (no compaction: rows are the originals)."""
        self.sops = torch.where(fire, self.running_sops, self.sops)
        self.macs = torch.where(fire, self.running_macs, self.macs)

    def keep(self, keep: Tensor) -> None:
        self.running_sops = self.running_sops[keep]
        self.running_macs = self.running_macs[keep]


def _record(
    leaving: Tensor,
    active: Tensor | None,
    at: int | Tensor,
    values: Tensor,
    exit_steps: Tensor,
    logits: Tensor,
    tally: _OpTally | None,
) -> None:
    """Rows ``leaving`` (positions among the current rows) exit at step(s) ``at`` with
    ``Y`` = ``values`` (one row per leaving row); ``active`` maps positions to original
    samples (None: the identity)."""
    rows = leaving if active is None else active[leaving]
    exit_steps[rows] = at
    logits[rows] = values
    if tally is not None:
        tally.leave(rows, leaving)


def _result(logits: Tensor, exit_steps: Tensor, tally: _OpTally | None) -> AnytimeResult:
    _require_finite(logits)
    return AnytimeResult(
        predictions=logits.argmax(dim=-1),
        exit_steps=exit_steps,
        logits=logits,
        sops=None if tally is None else tally.sops,
        analogue_macs=None if tally is None else tally.macs,
    )


def _listed_sum() -> Callable[[int, Tensor], array]:
    """``accumulate(t, out) -> Y(t)`` for one sample in plain Python: the outputs summed in
    double and rounded to float32 at each step, as the CPU's ``cumsum`` does (so ``Y(t)`` is
    the offline value bit for bit)."""
    listed: list[float] | None = None

    def accumulate(t: int, out: Tensor) -> array:
        nonlocal listed
        values = out.reshape(-1).tolist()
        if listed is not None:
            values = [a + b for a, b in zip(listed, values, strict=True)]
        listed = values
        return array("f", listed)

    return accumulate


def _single_result(
    y: Tensor | np.ndarray | array,
    t: int,
    device: torch.device,
    values: Sequence[float] | None = None,
) -> AnytimeResult:
    """One sample's result from its ``Y`` at the exit step ``t`` (a tensor, a NumPy array
    or a float32 ``array``, as the single-sample rule left it). ``values``: the same ``Y``
    as Python numbers (an ``array`` is its own), checked and read without tensor
    operations (each costs a streamed sample microseconds)."""
    if isinstance(y, array):
        values = y
        y = torch.frombuffer(y, dtype=torch.float32).reshape(1, -1)
    elif isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if values is None:
        _require_finite(y)
        predictions = y.argmax(dim=-1)
    else:  # the first largest, as argmax takes it
        if not all(map(math.isfinite, values)):
            raise _not_finite(sum(not math.isfinite(value) for value in values))
        best = max(range(len(values)), key=values.__getitem__)
        predictions = torch.full((1,), best, dtype=torch.long, device=device)
    exit_steps = torch.full((1,), t, dtype=torch.long, device=device)
    return AnytimeResult(predictions=predictions, exit_steps=exit_steps, logits=y)


# --------------------------------------------------------------------------- engine


@dataclass
class AnytimeResult:
    """What :meth:`AnytimeClassifier.run` returns, one entry per input sample.

    Attributes:
        predictions: LongTensor ``[B]``, ``argmax Y(t)`` at the exit step.
        exit_steps: LongTensor ``[B]``, the step (1..T) at which the rule fired.
        logits: float ``[B, K]``, the accumulated output ``Y`` at the exit step.
        sops: int64 ``[B]``, synaptic operations spent up to the exit (``None`` when the
            run did not count operations); see :mod:`spikecut.ops`.
        analogue_macs: int64 ``[B]``, MACs of the analogue-input layers up to the exit
            (``None`` when not counted).
    """

    predictions: Tensor
    exit_steps: Tensor
    logits: Tensor
    sops: Tensor | None = None
    analogue_macs: Tensor | None = None

    @property
    def mean_exit(self) -> float:
        return float(self.exit_steps.double().mean())


class AnytimeClassifier:
    """Runs ``snn`` step by step and lets each sample stop as soon as ``rule`` fires.

    Args:
        snn: a time-major network mapping ``[t, B, ...]`` to per-step logits ``[t, B, K]``
            that carries its state between calls (a :class:`~spikecut.neurons.SpikingNetwork`).
            It is put in eval mode and reset before and after every run.
        rule: a ready exit rule (calibrated, if it needs it) for ``T`` steps.
        T: the most steps a sample may take; every sample still running exits at ``T``.
        count_ops: count spikes and synaptic operations per sample (a little slower).
        strategy: how a batch is run; every strategy gives the same exit steps and
            predictions, only the time differs. ``"compact"``: step by step, the state
            compacted to the running samples when the measured costs say it pays;
            ``"mask"``: step by step, exited samples masked but still computed (no
            compaction: the path for one streamed sample); ``"full"``: all T steps in one
            call, then the rule offline (not with ``count_ops``); ``"chunked"``: several
            steps per call, in the chunks planned from the measured call cost and the exits
            seen (:func:`spikecut._anytime_costs.plan_chunks`; not with ``count_ops``);
            ``"graphed"``: the masked step loop replayed from CUDA graphs captured per
            padded batch size (:mod:`spikecut._anytime_graphs`; CUDA only, elsewhere the
            masked loop runs; not with ``count_ops``); ``"auto"`` (default): times the
            candidates (``graphed`` on CUDA devices only) on the first batches of each size
            and device and keeps the fastest
            (:class:`spikecut._anytime_costs.StrategyChooser`).
    """

    def __init__(
        self,
        snn: nn.Module,
        rule: ExitRule,
        T: int,
        *,
        count_ops: bool = True,
        strategy: str = "auto",
    ) -> None:
        if not isinstance(rule, ExitRule):
            raise TypeError(f"rule: expected a spikecut.cutoff.ExitRule, got {type(rule).__name__}")
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T: expected an integer >= 1, got {T!r}")
        if strategy not in ("auto", *_ALL_STRATEGIES):
            raise ValueError(
                f"strategy: expected 'auto' or one of {', '.join(_ALL_STRATEGIES)}, "
                f"got {strategy!r}"
            )
        if strategy in _UNCOUNTED and count_ops:
            raise ValueError(
                f"strategy {strategy!r} does not count operations; use count_ops=False"
            )
        rule.check_ready(T)
        self.snn = snn
        self.rule = rule
        self.T = T
        self.count_ops = count_ops
        self.strategy = strategy
        # counting operations per sample needs one step per call, outside any graph
        candidates = tuple(s for s in _ALL_STRATEGIES if not (count_ops and s in _UNCOUNTED))
        self.chooser = StrategyChooser(candidates=candidates)
        # the step graphs per (padded batch, input, device); a backend other than CUDA's
        # (spikecut._anytime_graphs.EagerReplay) lets the tests run them on the CPU
        self._graphs: dict[tuple, StepGraphs] = {}
        self._graph_backend: type | None = None
        self._graph_failures: dict[tuple, str] = {}
        self._costs: dict[tuple[str, bool], CompactionCosts] = {}
        # id(snn), temporal, neurons, the body's temporal, (module, name) of a parameter
        self._modules: tuple | None = None
        self._aranges: dict[tuple, Tensor] = {}

    def run(self, x: Tensor, *, frames: bool = False, clock: Any = None) -> AnytimeResult:
        """Classify one batch, stopping each sample at its own exit step.

        ``x`` is time-major, as everywhere in spikecut (:mod:`spikecut.layout`): with
        ``frames=True`` a sequence ``[T, B, ...]`` whose step ``t`` is fed at step ``t``;
        with ``frames=False`` a static batch ``[B, ...]`` fed at every step (what
        ``to_time_major(x, T)`` would repeat, without the copy). A DataLoader batch of
        frames ``[B, T, ...]`` becomes ``to_time_major(x, T, frames=True)``.

        ``clock`` (for profiles, e.g. :class:`spikecut.bench.timing.PhaseClock`): an object
        whose ``lap(phase)`` is called after each part of the work, with ``phase`` one of
        ``"network"``, ``"rule"``, ``"compaction"`` and ``"other"``.
        """
        if torch.is_inference_mode_enabled():  # entering it again cost a sample ~10 µs
            return self._run(x, frames, clock)
        with torch.inference_mode():
            return self._run(x, frames, clock)

    def _run(self, x: Tensor, frames: bool, clock: Any) -> AnytimeResult:
        if not isinstance(x, Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if frames and (x.dim() < 2 or x.shape[0] != self.T):
            raise ValueError(f"x: expected frames [T={self.T}, B, ...], got shape {tuple(x.shape)}")
        if not frames and x.dim() < 1:
            raise ValueError("x: expected a batch [B, ...], got a 0-d tensor")
        batch = x.shape[1] if frames else x.shape[0]
        if batch < 1:
            raise ValueError("x: expected at least one sample, got an empty batch")
        snn = self.snn
        if snn.training:
            snn.eval()
        device = self._device(snn, x.device)
        x = x.to(device)
        chooser = self.chooser
        key = StrategyChooser.key(device, batch, frames)
        auto = self.strategy == "auto"
        # the planner learns from auto runs until they settle, and from the first batches
        # of an explicitly chunked engine
        if auto:
            learning = not chooser.settled(key)
        else:
            learning = self.strategy == "chunked" and chooser.exit_batches(key) < _PLAN_BATCHES
        observe = (
            (lambda rows, k, sec: chooser.observe_call(key, rows, k, sec)) if learning else None
        )
        # while a batch of one or two is explored, every candidate runs it (paired timings)
        strategies = chooser.to_run(key) if auto else (self.strategy,)
        result = None
        # decided once per batch: every candidate of a paired batch is timed, or none
        timed = auto and chooser.wants_record(key)
        for strategy in strategies:
            started = now(device) if timed else 0.0
            answer = self._run_once(strategy, x, frames, batch, device, clock, key, observe)
            result = answer if result is None else result
            if timed:
                seconds = (now(device) - started) / batch
                chooser.record(key, strategy, seconds, answer.exit_steps, self.T)
            elif learning:  # an explicit strategy still teaches the planner the exits
                chooser.record_exits(key, answer.exit_steps, self.T)
        if auto:  # a batch of one or two: its exits weigh the paired timings (revisits)
            chooser.observe_exits(key, result.exit_steps)
        if clock is not None:  # every path has refused non-finite logits (_require_finite)
            clock.lap("other")
        return result

    def _run_once(self, strategy, x, frames, batch, device, clock, key, observe) -> AnytimeResult:
        """One batch by one strategy, between resets of the network's state."""
        snn = self.snn
        temporal, neurons = self._temporal_modules(snn)
        counter = OpCounter(snn) if self.count_ops else None
        for module in temporal:
            module.reset()
        if counter is not None:
            counter.attach()
        try:
            # the run starts from a reset state that only it holds: updated in place
            with (
                temporarily_set(neurons, "state_private", True),
                self._fixed_structure(snn),
            ):
                if strategy == "chunked":
                    schedule = self.chooser.plan(key, self.T, batch, refresh=observe is not None)
                    return self._run_compact(
                        snn, x, frames, batch, device, counter, clock, schedule, observe
                    )
                path = getattr(self, f"_run_{strategy}")
                return path(snn, x, frames, batch, device, counter, clock, observe=observe)
        finally:
            if counter is not None:
                counter.detach()
            for module in temporal:
                module.reset()

    def _temporal_modules(self, snn: nn.Module) -> tuple[list[TemporalModule], list[Any]]:
        """The network's time-aware modules and neurons, collected once per network."""
        if self._modules is None or self._modules[0] != id(snn):
            temporal = temporal_modules(snn)
            neurons = [m for m in temporal if hasattr(m, "state_private")]
            body = temporal_modules(snn.body) if isinstance(snn, SpikingNetwork) else None
            self._modules = (id(snn), temporal, neurons, body, _first_parameter(snn))
        return self._modules[1], self._modules[2]

    def _device(self, snn: nn.Module, fallback: torch.device) -> torch.device:
        """The network's device, read from its first parameter, found once (walking the
        parameters on every run cost a streamed sample about 4 µs)."""
        self._temporal_modules(snn)
        where = self._modules[4]
        if where is not None:
            parameter = where[0]._parameters.get(where[1])
            if parameter is not None:  # still there (a replaced one is read as well)
                return parameter.device
        return _model_device(snn, fallback)

    def _arange(self, start: int, end: int, device: torch.device) -> Tensor:
        """``torch.arange(start, end)`` on ``device``, kept (step numbers, row numbers)."""
        key = (start, end, device)
        cached = self._aranges.get(key)
        if cached is None:
            if len(self._aranges) > 64:
                self._aranges.clear()
            cached = self._aranges[key] = torch.arange(start, end, device=device)
        return cached

    def _fixed_structure(self, snn: nn.Module) -> contextlib.AbstractContextManager[None]:
        """A :class:`~spikecut.neurons.SpikingNetwork` walks its module tree on every call;
        within a run the engine's own list serves."""
        body = self._modules[3] if self._modules is not None else None
        return snn.fixed_structure(body) if body is not None else contextlib.nullcontext()

    def _rule_fires(self, y: Tensor, t: int) -> Tensor:
        """Bool ``[N]``: the rule's decision on ``Y(t)`` before the forced exit at T.

        The rule's criterion is read directly (the inputs are the engine's own, checked
        once at the end of the run), unless a rule overrides ``fires`` itself.
        """
        if type(self.rule).fires is not ExitRule.fires:
            return self.rule.fires(y, t, self.T)
        return self.rule._criterion_at(y, t)

    def _run_compact(
        self, snn, x, frames, batch, device, counter, clock, schedule=None, observe=None
    ) -> AnytimeResult:
        """In chunks of steps (``schedule``; one step each by default): after each chunk the
        rule reads every step of it, the rows it released get their answers, and exited
        rows are masked until compacting them away pays. ``observe(rows, steps, seconds)``
        receives each chunk's time (network and rule), for the planner."""
        T = self.T
        schedule = schedule or (1,) * T
        costs = self._costs.setdefault((device.type, frames), CompactionCosts())
        steps = self._arange(1, T + 1, device)
        active: Tensor | None = None  # original index of every row (None: all, in order)
        done: Tensor | None = None  # rows that exited but are still in the state
        n_done = 0
        accumulator = _Accumulator(T)
        tally = _OpTally(counter, batch, device) if counter is not None else None
        exit_steps = torch.full((batch,), T, dtype=torch.long, device=device)
        logits: Tensor | None = None
        static = x
        start = 0
        for k in schedule:
            begun = time.perf_counter()
            end = start + k
            if frames:
                seq = x[start:end] if active is None else x[start:end].index_select(1, active)
            else:
                seq = static.unsqueeze(0).expand(k, *static.shape)
            out = snn(seq).float()
            if tally is not None:
                tally.step()
            if clock is not None:
                clock.lap("network")
            if logits is None:
                logits = out.new_zeros(batch, *out.shape[2:])
            y = accumulator.add_steps(start, out)  # Y at steps start+1 .. end
            rows = y.shape[1]
            fire = self._chunk_fires(y, start, end, steps)
            if done is not None:
                fire &= ~done
            if k == 1:
                first = None
                leaving = fire[0].nonzero().squeeze(1)  # host sync: who leaves decides the rest
            else:
                fired = fire.any(0)
                first = fire.to(torch.uint8).argmax(0)  # each row's first firing step
                leaving = fired.nonzero().squeeze(1)
            if clock is not None:
                clock.lap("rule")
            seconds = time.perf_counter() - begun
            if k == 1:  # a chunk's steps share one call's fixed cost: not a step's time
                costs.step(rows, seconds)
            if observe is not None:
                observe(rows, k, seconds)
            start = end
            if leaving.numel() == 0:
                continue
            if first is None:
                _record(leaving, active, end, y[0][leaving], exit_steps, logits, tally)
            else:  # operations are counted only one step per call, so no tally here
                at = first[leaving]
                _record(leaving, active, end - k + 1 + at, y[at, leaving], exit_steps, logits, None)
            n_done += leaving.numel()
            if n_done == rows or end == T:
                break
            exited = fire[0] if first is None else fired
            done = exited if done is None else done.logical_or_(exited)
            if not costs.pays(n_done, T - end):
                continue
            begun = time.perf_counter()
            keep = (~done).nonzero().squeeze(1)
            self._compact(snn, keep)
            accumulator.keep(keep)
            active = keep if active is None else active[keep]
            if not frames:
                static = static.index_select(0, keep)
            if tally is not None:
                tally.keep(keep)
            done, n_done = None, 0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            costs.compaction(time.perf_counter() - begun)
            if clock is not None:
                clock.lap("compaction")
        return _result(logits, exit_steps, tally)

    def _chunk_fires(self, y: Tensor, start: int, end: int, steps: Tensor) -> Tensor:
        """Bool ``[k, N]``: the rule at steps ``start + 1 .. end`` on their ``Y``; at ``T``
        every row fires (the forced exit), without asking the rule."""
        last = end == self.T
        judged = y[:-1] if last else y
        if judged.shape[0] == 0:
            fire = y.new_zeros(0, y.shape[1], dtype=torch.bool)
        elif judged.shape[0] == 1:
            fire = self._rule_fires(judged[0], start + 1).unsqueeze(0)
        elif type(self.rule).fires is not ExitRule.fires:
            fire = torch.stack(
                [self.rule.fires(judged[i], start + 1 + i, self.T) for i in range(len(judged))]
            )
        else:
            fire = self.rule._criterion(judged, steps[start : start + judged.shape[0]])
        if last:
            fire = torch.cat([fire, fire.new_ones(1, y.shape[1])])
        return fire

    def _compact(self, snn: nn.Module, keep: Tensor) -> None:
        _compact_modules(self._temporal_modules(snn)[0], keep, None)

    def _run_mask(
        self, snn, x, frames, batch, device, counter, clock, observe=None
    ) -> AnytimeResult:
        """Step by step on every row; a row's answer is taken when its rule fires, and the
        run stops when every row has its answer. No compaction, no index bookkeeping."""
        if batch == 1 and counter is None:
            return self._run_single(snn, x, frames, device, clock, observe)
        T = self.T
        accumulator = _Accumulator(T)
        tally = _OpTally(counter, batch, device) if counter is not None else None
        exit_steps = torch.full((batch,), T, dtype=torch.long, device=device)
        running = torch.ones(batch, dtype=torch.bool, device=device)
        logits: Tensor | None = None
        for t in range(1, T + 1):
            begun = time.perf_counter() if observe is not None else 0.0
            step_input = x[t - 1] if frames else x
            out = snn(step_input.unsqueeze(0))[0].float()
            if tally is not None:
                tally.step()
            if clock is not None:
                clock.lap("network")
            y = accumulator.add(t, out)
            if logits is None:
                logits = torch.zeros_like(y)
            fire = running if t == T else self._rule_fires(y, t) & running
            exit_steps.masked_fill_(fire, t)
            logits = torch.where(fire.unsqueeze(1), y, logits)
            if tally is not None:
                tally.leave_where(fire)
            running.logical_and_(~fire)
            stop = t == T or not bool(running.any())  # one host sync per step
            if clock is not None:
                clock.lap("rule")
            if observe is not None:
                observe(batch, 1, time.perf_counter() - begun)
            if stop:
                break
        return _result(logits, exit_steps, tally)

    def _run_graphed(
        self, snn, x, frames, batch, device, counter, clock, observe=None
    ) -> AnytimeResult:
        """The masked step loop replayed from CUDA graphs (:mod:`spikecut._anytime_graphs`):
        one launch and one host sync per step. Where graphs cannot serve (no CUDA device and
        no test backend, a rule that overrides ``fires``, a capture that failed) the masked
        loop itself runs: the same answers, by construction."""
        graphs = self._step_graphs(snn, x, frames, batch, device)
        if graphs is None:
            return self._run_mask(snn, x, frames, batch, device, counter, clock, observe)
        exit_steps, logits = graphs.run(x, batch)
        if clock is not None:
            clock.lap("network")
        return _result(logits, exit_steps, None)

    def _step_graphs(self, snn, x, frames, batch, device) -> StepGraphs | None:
        """The step graphs for this batch's bucket, captured on first use and kept."""
        backend = self._graph_backend
        if backend is None and device.type == "cuda":
            backend = CudaGraphBackend
        if backend is None or type(self.rule).fires is not ExitRule.fires:
            return None
        rows = bucket(batch)
        sample_shape = tuple(x.shape[2:] if frames else x.shape[1:])
        key = (rows, sample_shape, x.dtype, device, frames)
        if key in self._graph_failures:
            return None
        parameters = tuple(p.data_ptr() for p in snn.parameters())
        graphs = self._graphs.get(key)
        if graphs is not None and graphs.parameters == parameters:
            return graphs
        temporal = self._temporal_modules(snn)[0]
        example = x[:, :1] if frames else x[:1]
        try:
            graphs = StepGraphs(
                snn,
                temporal,
                self._graph_criterion(device),
                self.T,
                rows,
                example,
                frames,
                backend(temporal),
            )
        except Exception as err:  # noqa: BLE001 - a capture refused: the masked loop serves
            self._graph_failures[key] = f"{type(err).__name__}: {err}"
            warnings.warn(
                f"spikecut: CUDA graphs could not capture this network's step ({err}); "
                "the 'graphed' strategy runs the masked step loop instead",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        graphs.parameters = parameters
        if len(self._graphs) >= _GRAPH_SETS:
            self._graphs.pop(next(iter(self._graphs)))
        self._graphs[key] = graphs
        return graphs

    def _graph_criterion(self, device: torch.device) -> Callable[[Tensor, int], Tensor]:
        """The rule at step ``t`` without a host-to-device copy (which a capture refuses):
        a rule's own ``_criterion_at`` (Top-K's compares with β as a number), else its
        ``_criterion`` on a kept device tensor of step numbers. Identical decisions."""
        rule = self.rule
        if type(rule)._criterion_at is not ExitRule._criterion_at:
            return rule._criterion_at
        steps = self._arange(1, self.T + 1, device)
        return lambda y, t: rule._criterion(y.unsqueeze(0), steps[t - 1 : t])[0]

    def _numpy_rule(self, device: torch.device, batch: int) -> bool:
        """Whether the rule is decided in NumPy: on the CPU, for a batch small enough that
        a tensor operation's fixed cost is most of the rule's time, when the rule has a
        NumPy form (:meth:`~spikecut.cutoff.ExitRule._criterion_numpy`, identical decisions)
        and does not override ``fires``."""
        if device.type != "cpu" or batch > _NUMPY_BATCH:
            return False
        rule = type(self.rule)
        return rule.fires is ExitRule.fires and rule._criterion_numpy is not (
            ExitRule._criterion_numpy
        )

    def _run_single(self, snn, x, frames, device, clock, observe) -> AnytimeResult:
        """One streamed sample, step by step, until its rule fires: no masks, no
        compaction, one decision per step."""
        T = self.T
        accumulate, fires = self._single_sample_rule(device)
        for t in range(1, T + 1):
            begun = time.perf_counter() if observe is not None else 0.0
            out = snn((x[t - 1] if frames else x).unsqueeze(0))[0].float()
            if clock is not None:
                clock.lap("network")
            y = accumulate(t, out)
            stop = t == T or fires(y, t)  # one host sync per step
            if clock is not None:
                clock.lap("rule")
            if observe is not None:
                observe(1, 1, time.perf_counter() - begun)
            if stop:
                break
        return _single_result(y, t, device)

    def _single_sample_rule(self, device: torch.device) -> tuple[Callable, Callable]:
        """``accumulate(t, out) -> Y(t)`` and ``fires(Y(t), t) -> bool`` for one streamed
        sample: in plain Python where the rule has that form
        (:meth:`~spikecut.cutoff.ExitRule._criterion_python`), else in NumPy where
        :meth:`_numpy_rule` allows, else on tensors. Python and NumPy sum ``Y(t)`` in
        float64 and round it to float32 at each step, as the CPU's ``cumsum`` does, so it is
        the offline value bit for bit."""
        criterion = self._python_rule(device, 1)
        if criterion is not None:
            return _listed_sum(), criterion
        if not self._numpy_rule(device, 1):
            accumulator = _Accumulator(self.T)
            return accumulator.add, lambda y, t: bool(self._rule_fires(y, t))
        rule = self.rule
        total: np.ndarray | None = None  # Y(t) in float64

        def accumulate(t: int, out: Tensor) -> np.ndarray:
            nonlocal total
            values = out.numpy()
            total = values.astype(np.float64) if total is None else total + values
            return total.astype(np.float32)

        return accumulate, lambda y, t: bool(rule._criterion_numpy(y[None], t)[0, 0])

    def _python_rule(self, device: torch.device, batch: int) -> Callable | None:
        """The rule's plain-Python criterion, used for one sample on the CPU (None where the
        rule has none or overrides ``fires``). Between two network calls at batch 1, 20–30
        µs of NumPy or tensor work cost the next call about 100 µs in a run on the
        project's CPU, the same decision in Python about nothing."""
        if device.type != "cpu" or batch != 1 or type(self.rule).fires is not ExitRule.fires:
            return None
        return self.rule._criterion_python()

    def _run_full(
        self, snn, x, frames, batch, device, counter, clock, observe=None
    ) -> AnytimeResult:
        """All T steps in one call (the network's own chunking applies), then the rule on
        the accumulated outputs, as the offline evaluation does."""
        T = self.T
        begun = now(device) if observe is not None else 0.0
        seq = x if frames else x.unsqueeze(0).expand(T, *x.shape)
        out = snn(seq).float()
        if clock is not None:
            clock.lap("network")
        fires = self._python_rule(device, batch)
        if fires is not None:  # one sample: one cumsum, read once, decided in plain Python
            cum = out.cumsum(0)  # [T, 1, K], the offline Y(t)
            rows = cum.tolist()
            t = next((t for t in range(1, T) if fires(rows[t - 1][0], t)), T)
            if clock is not None:
                clock.lap("rule")
            if observe is not None:
                observe(batch, T, now(device) - begun)
            return _single_result(cum[t - 1], t, device, rows[t - 1][0])
        if self._numpy_rule(device, batch):
            return self._decide_numpy(out, device, begun, clock, observe)
        cum = out.cumsum(0)
        if type(self.rule).fires is not ExitRule.fires:
            fire = torch.stack([self.rule.fires(cum[t - 1], t, T) for t in range(1, T + 1)])
        else:
            fire = self.rule._criterion(cum, self._arange(1, T + 1, device))
            fire[-1] = True
        first = fire.to(torch.uint8).argmax(dim=0)
        exit_steps = first + 1
        logits = cum[first, self._arange(0, batch, device)]
        _require_finite(logits)
        if clock is not None:
            clock.lap("rule")
        if observe is not None:
            observe(batch, T, now(device) - begun)
        return AnytimeResult(
            predictions=logits.argmax(dim=-1), exit_steps=exit_steps, logits=logits
        )

    def _decide_numpy(self, out, device, begun, clock, observe) -> AnytimeResult:
        """The rest of :meth:`_run_full` in NumPy: ``Y`` summed in float64 and rounded to
        float32, as the CPU's ``cumsum`` does, then the rule; the same exits and answers."""
        steps, batch = out.shape[0], out.shape[1]
        cum = np.cumsum(out.numpy(), axis=0, dtype=np.float64).astype(np.float32)
        fire = self.rule._criterion_numpy(cum, 1)
        fire[-1] = True
        first = fire.argmax(axis=0)
        logits = cum[first, np.arange(batch)]
        finite = np.isfinite(logits)
        if not finite.all():
            raise _not_finite(int((~finite).sum()))
        if clock is not None:
            clock.lap("rule")
        if observe is not None:
            observe(batch, steps, now(device) - begun)
        return AnytimeResult(
            predictions=torch.from_numpy(logits.argmax(axis=-1)),
            exit_steps=torch.from_numpy(first + 1),
            logits=torch.from_numpy(logits),
        )

    def evaluate(
        self,
        data: Dataset | DataLoader,
        *,
        frames: bool = False,
        batch_size: int = 256,
    ) -> dict[str, Any]:
        """Run over labelled data; accuracy, mean exit step and mean operations.

        ``data`` yields ``(x, y)``: a Dataset (batched here, in order) or a DataLoader, whose
        items are single samples, so its batches are batch-major: a static ``[B, ...]``, or
        with ``frames=True`` frames ``[B, T, ...]``. Each batch is put in the time-major
        layout of :meth:`run` by :func:`~spikecut.layout.to_time_major` (the same helper
        a caller of :meth:`run` uses), so ``evaluate`` and ``run`` agree sample for sample.
        Keys: ``samples``, ``accuracy``, ``mean_exit``, ``speedup`` (T / mean exit) and,
        when operations are counted, ``mean_sops`` and ``mean_analogue_macs``.
        """
        loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
        correct = samples = 0
        steps_sum = sops_sum = macs_sum = 0
        for x, y in loader:
            result = self.run(to_time_major(x, self.T, frames=True) if frames else x, frames=frames)
            y = torch.as_tensor(y)
            correct += int((result.predictions.cpu() == y).sum())
            samples += y.shape[0]
            steps_sum += int(result.exit_steps.sum())
            if result.sops is not None:
                sops_sum += int(result.sops.sum())
                macs_sum += int(result.analogue_macs.sum())
        if samples == 0:
            raise ValueError("evaluate: the data yielded no samples")
        mean_exit = steps_sum / samples
        summary: dict[str, Any] = {
            "samples": samples,
            "accuracy": correct / samples,
            "mean_exit": mean_exit,
            "speedup": self.T / mean_exit,
        }
        if self.count_ops:
            summary["mean_sops"] = sops_sum / samples
            summary["mean_analogue_macs"] = macs_sum / samples
        return summary


# --------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class Decision:
    """A stream's answer.

    Attributes:
        stream_id: the stream it belongs to.
        prediction: the predicted class.
        step: the step (1..T) of the decision, counted from the start of the window.
        window: 0 for a stream's first decision, 1 for the next (with ``restart=True``), ...
        forced: True when :meth:`StreamingClassifier.close` decided a stream that ended
            before its rule fired (the prediction is then ``argmax Y`` at the last step).
    """

    stream_id: Hashable
    prediction: int
    step: int
    window: int = 0
    forced: bool = False


class _Stream:
    """Per-stream state: steps taken in the current window, outputs so far, neuron rows."""

    def __init__(self, fresh: list[Any]) -> None:
        self.fresh = fresh
        self.window = 0
        self.decided = False
        self.restart()

    def restart(self) -> None:
        self.step = 0
        self.outputs: list[Tensor] = []
        self.state: list[Any] = list(self.fresh)


class StreamingClassifier:
    """Classifies live streams (e.g. event sensors) as their frames arrive.

    Open a stream with :meth:`open`, give it frame chunks with :meth:`feed` (or many
    streams at once with :meth:`feed_many`) and collect the :class:`Decision` of each
    stream as soon as its rule fires. A chunk holds whole steps: a tensor (or array)
    ``[n, ...]`` of n frames, or anything ``framing`` turns into one (e.g. a function that
    bins a chunk of events into frames). Streams at the same step are run together as one
    batch, one step at a time; each stream keeps its own neuron state, which starts fresh
    when the stream opens and when it is decided.

    After a decision a stream ignores further frames (``restart=False``) or starts a new
    window with fresh state at its next frame (``restart=True``, for continuous
    recognition). Decisions equal those of :class:`AnytimeClassifier` on the same frames.
    """

    def __init__(
        self,
        snn: nn.Module,
        rule: ExitRule,
        T: int,
        *,
        framing: Callable[[Any], Any] | None = None,
        restart: bool = False,
    ) -> None:
        if not isinstance(rule, ExitRule):
            raise TypeError(f"rule: expected a spikecut.cutoff.ExitRule, got {type(rule).__name__}")
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T: expected an integer >= 1, got {T!r}")
        rule.check_ready(T)
        self.snn = snn.eval()
        self.rule = rule
        self.T = T
        self.framing = framing
        self.restart = restart
        self._items = list(_state_items(snn))
        reset(snn)
        self._fresh = [getattr(module, name) for module, name in self._items]
        self._streams: dict[Hashable, _Stream] = {}

    @property
    def streams(self) -> list[Hashable]:
        """The ids of the open streams, in the order they were opened."""
        return list(self._streams)

    def steps(self, stream_id: Hashable) -> int:
        """Steps the stream has taken in its current window."""
        return self._get(stream_id).step

    def open(self, stream_id: Hashable) -> None:
        """Start a stream with fresh state."""
        if stream_id in self._streams:
            raise ValueError(f"stream {stream_id!r} is already open")
        self._streams[stream_id] = _Stream(self._fresh)

    def close(self, stream_id: Hashable) -> Decision | None:
        """End a stream and forget its state.

        Returns a forced :class:`Decision` (``argmax Y`` at its last step) when the stream
        took steps but was not decided; ``None`` otherwise.
        """
        stream = self._get(stream_id)
        del self._streams[stream_id]
        if stream.step == 0:
            return None
        y = torch.stack(stream.outputs).cumsum(0)[-1]
        return Decision(stream_id, int(y.argmax()), stream.step, stream.window, forced=True)

    def feed(self, stream_id: Hashable, chunk: Any) -> list[Decision]:
        """Give one stream its next frames; returns the decisions they caused."""
        return self.feed_many({stream_id: chunk})

    @torch.inference_mode()
    def feed_many(self, chunks: Mapping[Hashable, Any]) -> list[Decision]:
        """Give several streams their next frames; returns the decisions, in step order.

        Frame ``i`` of every chunk is processed in round ``i``; in each round the streams
        at the same step form one batch.
        """
        frames = {sid: self._frames(sid, chunk) for sid, chunk in chunks.items()}
        for sid in frames:
            self._get(sid)
        decisions: list[Decision] = []
        rounds = max((f.shape[0] for f in frames.values()), default=0)
        try:
            for r in range(rounds):
                groups: dict[int, list[Hashable]] = {}
                for sid, f in frames.items():
                    stream = self._streams[sid]
                    if r < f.shape[0] and not (stream.decided and not self.restart):
                        groups.setdefault(stream.step, []).append(sid)
                for step in sorted(groups):
                    sids = groups[step]
                    x = torch.stack([frames[sid][r] for sid in sids])
                    decisions += self._advance(sids, x, step + 1)
        finally:
            reset(self.snn)
        return decisions

    def _get(self, stream_id: Hashable) -> _Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise KeyError(f"stream {stream_id!r} is not open (call open() first)") from None

    def _frames(self, stream_id: Hashable, chunk: Any) -> Tensor:
        if self.framing is not None:
            chunk = self.framing(chunk)
        if isinstance(chunk, np.ndarray):
            chunk = torch.from_numpy(np.ascontiguousarray(chunk))
        if not isinstance(chunk, Tensor) or chunk.dim() < 1:
            raise ValueError(
                f"stream {stream_id!r}: expected frames [n, ...] (a tensor or array), got "
                f"{tuple(chunk.shape) if isinstance(chunk, Tensor) else type(chunk).__name__}"
            )
        device = _model_device(self.snn, chunk.device)
        if not chunk.is_floating_point():  # e.g. event counts: use the network's float type
            dtype = next((p.dtype for p in self.snn.parameters() if p.is_floating_point()), None)
            chunk = chunk.to(dtype or torch.get_default_dtype())
        return chunk.to(device)

    def _advance(self, sids: list[Hashable], x: Tensor, t: int) -> list[Decision]:
        """One step for the streams ``sids`` (all at step ``t - 1``): load their rows, run,
        store the rows back, and decide."""
        streams = [self._streams[sid] for sid in sids]
        self._load(streams)
        out = self.snn(x.unsqueeze(0))[0].float()
        self._store(streams)
        history = torch.stack(
            [torch.stack([*s.outputs, o]) for s, o in zip(streams, out, strict=True)], 1
        )
        y = history.cumsum(0)[t - 1]
        fire = self.rule.fires(y, t, self.T).tolist()
        decisions = []
        for sid, stream, o, row, fired in zip(sids, streams, out, y, fire, strict=True):
            stream.outputs.append(o)
            stream.step = t
            if fired:
                decisions.append(Decision(sid, int(row.argmax()), t, stream.window))
                stream.window += 1
                stream.decided = True
                stream.restart()
        return decisions

    def _load(self, streams: list[_Stream]) -> None:
        for i, (module, name) in enumerate(self._items):
            values = [s.state[i] for s in streams]
            if all(isinstance(v, Tensor) for v in values):
                value = torch.cat(values) if len(values) > 1 else values[0]
            elif any(isinstance(v, Tensor) for v in values):
                raise RuntimeError(f"streams at one step disagree on the state of {name!r}")
            else:
                value = values[0]
            setattr(module, name, value)

    def _store(self, streams: list[_Stream]) -> None:
        n = len(streams)
        for i, (module, name) in enumerate(self._items):
            value = getattr(module, name)
            if isinstance(value, Tensor):
                if value.shape[0] != n:
                    raise RuntimeError(
                        f"{type(module).__name__}.{name} has {value.shape[0]} rows for {n} streams"
                    )
                rows = value.split(1)
            else:
                rows = [value] * n
            for stream, row in zip(streams, rows, strict=True):
                stream.state[i] = row
