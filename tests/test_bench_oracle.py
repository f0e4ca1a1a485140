"""The exit oracle runs the network on exactly the rows still running, with their own state."""

import pytest
import torch
from test_anytime import MODELS, T, inputs
from torch import nn

from spikecut.bench.oracle import exit_oracle, running_rows
from spikecut.neurons import LIF, SpikingNetwork, TemporalModule, reset

SCHEDULES = {"steps": (1,) * T, "chunks": (2, 1, 3, 2)}


def _exits(n: int, seed: int) -> torch.Tensor:
    steps = torch.randint(1, T + 1, (n,), generator=torch.Generator().manual_seed(seed))
    steps[0], steps[1] = 1, T  # one row leaves at once, one runs to the end
    return steps


def _calls(snn: nn.Module, run) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of every network call of ``run()``."""
    seen = []
    handle = snn.register_forward_hook(lambda _m, args, out: seen.append((args[0], out.clone())))
    try:
        with torch.inference_mode():
            run()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("frames", [False, True], ids=["static", "frames"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("kind", list(MODELS))
def test_each_call_runs_the_rows_still_running_and_gives_their_full_t_outputs(
    kind, schedule, frames
):
    snn = MODELS[kind]()
    batches = [inputs(3, 12, frames), inputs(4, 7, frames)]
    exits = [_exits(12, 0), _exits(7, 1)]
    plans = [SCHEDULES[schedule]] * 2
    run = exit_oracle(snn, batches, exits, T, frames=frames, schedules=plans)
    calls = _calls(snn, run)
    assert all(getattr(m, "v", None) is None for m in snn.modules() if isinstance(m, LIF))
    expected = []
    with torch.inference_mode():
        for x, steps, plan in zip(batches, exits, plans, strict=True):
            reset(snn)
            full = snn(x if frames else x.unsqueeze(0).expand(T, *x.shape))
            order = torch.argsort(steps, descending=True, stable=True)
            start = 0
            for k, rows in zip(plan, running_rows(steps, plan), strict=True):
                if rows:
                    expected.append(full[start : start + k, order[:rows]])
                start += k
    assert [out.shape for _, out in calls] == [e.shape for e in expected]
    for (_, out), want in zip(calls, expected, strict=True):
        torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


def test_a_batch_stops_when_its_last_row_has_left():
    snn = MODELS["trained"]()
    x = inputs(5, 10)
    exits = torch.tensor([1, 3, 2, 1, 3, 1, 2, 2, 1, 3])
    calls = _calls(snn, exit_oracle(snn, [x], [exits], T))
    assert [inp.shape[1] for inp, _ in calls] == [10, 6, 3]  # then nobody is left
    assert running_rows(exits, (1,) * T) == [10, 6, 3, 0, 0, 0, 0, 0]
    assert running_rows(exits, (2, 6)) == [10, 3]


class RowTrace(TemporalModule):
    """A pass-through layer with a per-row state it compacts itself."""

    def __init__(self) -> None:
        super().__init__()
        self.register_state("total", None)
        self.kept: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.unfold(x)
        total = seq.sum(0) if self.total is None else self.total + seq.sum(0)
        self.total = total
        return x

    def compact_state(self, index: torch.Tensor) -> None:
        self.kept.append(index.tolist())
        self.total = self.total.index_select(0, index)


def test_a_module_with_its_own_compaction_keeps_the_leading_rows():
    torch.manual_seed(0)
    trace = RowTrace()
    body = nn.Sequential(nn.Flatten(), nn.Linear(72, 6), LIF(), trace)
    snn = SpikingNetwork(body).double().eval()
    x = inputs(6, 5)
    exits = torch.tensor([2, 4, 1, 4, 3])
    calls = _calls(snn, exit_oracle(snn, [x], [exits], T))
    assert [inp.shape[1] for inp, _ in calls] == [5, 4, 3, 2]
    assert trace.kept == [[0, 1, 2, 3], [0, 1, 2], [0, 1]]


def test_bad_exits_and_schedules_are_clear_errors():
    snn = MODELS["trained"]()
    x = inputs(7, 4)
    with pytest.raises(ValueError, match="1 batches but 2 exit tensors"):
        exit_oracle(snn, [x], [torch.ones(4), torch.ones(4)], T)
    with pytest.raises(ValueError, match=r"expected 4 exit steps .* got shape \(3,\)"):
        exit_oracle(snn, [x], [torch.ones(3, dtype=torch.long)], T)
    with pytest.raises(ValueError, match="must sum to T = 8"):
        exit_oracle(snn, [x], [torch.ones(4, dtype=torch.long)], T, schedules=[(4, 3)])
