"""The exit oracle: what early exit could save on this network and machine at best.

An engine that knew every sample's exit step in advance would need no rule, no host sync,
no compaction and no bookkeeping: it would run the network on exactly the rows still
running, each step (or each chunk of steps), and nothing else. :func:`exit_oracle` builds
that pass for given exits, so the bench can set it beside the real engine:

* its wall / steps is the ceiling of any exiting engine that calls the network in the same
  shapes. Below 0.85, the issue-14 target is out of reach on this network and machine
  whatever the engine does, because the network's own calls on fewer rows (or one step at a
  time) cost more per row-step than the one full-T call;
* the engine's wall / steps over the oracle's is the share of the saving the engine keeps;
  the rest is its own overhead.

Rows are sorted by exit step (latest first) before the pass, so the rows still running are
always a leading block: every state is narrowed to that block in place (a view, no copy),
which is how the oracle drops rows at no cost. The sort is done once, outside the timing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..anytime import _map_row_states
from ..neurons import SpikingNetwork, TemporalModule, private_state, reset, temporal_modules

__all__ = ["exit_oracle", "running_rows"]


def running_rows(exits: Tensor, schedule: Sequence[int]) -> list[int]:
    """How many rows are still running at the start of each chunk of ``schedule`` (steps
    per network call): those whose exit step lies past the chunk's start."""
    counts, start = [], 0
    for steps in schedule:
        counts.append(int((exits > start).sum()))
        start += steps
    return counts


def _narrow(modules: list[TemporalModule], rows: int, device: torch.device) -> None:
    """Keep the first ``rows`` rows of every per-row state: a view of the leading block
    where the state is a plain tensor, the module's own ``compact_state`` otherwise."""
    _map_row_states(modules, torch.arange(rows, device=device), lambda _m, _n, v: v[:rows])


def exit_oracle(
    snn: nn.Module,
    batches: Sequence[Tensor],
    exits: Sequence[Tensor],
    T: int,
    *,
    frames: bool = False,
    schedules: Sequence[Sequence[int]] | None = None,
) -> Callable[[], None]:
    """A pass over ``batches`` (static ``[B, ...]`` or frames ``[T, B, ...]``) that runs
    ``snn`` on exactly the rows whose exit step (``exits``, one ``[B]`` tensor per batch)
    has not yet come, in the chunks of each batch's schedule (one step a call by default),
    and stops a batch once none is left. Returns the pass, ready to time."""
    if len(batches) != len(exits):
        raise ValueError(f"exit_oracle: {len(batches)} batches but {len(exits)} exit tensors")
    schedules = schedules or [(1,) * T] * len(batches)
    prepared = []
    for x, steps, schedule in zip(batches, exits, schedules, strict=True):
        rows = x.shape[1 if frames else 0]
        if steps.shape != (rows,):
            raise ValueError(
                f"exit_oracle: expected {rows} exit steps for a batch of {rows}, "
                f"got shape {tuple(steps.shape)}"
            )
        if sum(schedule) != T:
            raise ValueError(f"exit_oracle: a schedule must sum to T = {T}, got {schedule}")
        order = torch.argsort(steps.cpu(), descending=True, stable=True).to(x.device)
        ordered = x.index_select(1 if frames else 0, order)
        prepared.append((ordered, tuple(schedule), running_rows(steps, schedule)))
    modules = temporal_modules(snn)
    body = temporal_modules(snn.body) if isinstance(snn, SpikingNetwork) else None

    def run() -> None:
        fixed = snn.fixed_structure(body) if body is not None else contextlib.nullcontext()
        with fixed, private_state(snn):  # the pass owns its state, as the engine's runs do
            for x, schedule, running in prepared:
                reset(snn)
                start = 0
                for i, (steps, rows) in enumerate(zip(schedule, running, strict=True)):
                    if rows == 0:
                        break
                    if i and rows < running[i - 1]:  # rows left since the last call
                        _narrow(modules, rows, x.device)
                    if frames:
                        seq = x[start : start + steps, :rows]
                    else:
                        seq = x[:rows].unsqueeze(0).expand(steps, rows, *x.shape[1:])
                    snn(seq)
                    start += steps
            reset(snn)

    return run
