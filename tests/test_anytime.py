"""The anytime engine and streaming: same answers as offline evaluation, real compaction."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from spikecut import anytime
from spikecut._anytime_costs import STRATEGIES
from spikecut.anytime import (
    AnytimeClassifier,
    Decision,
    StreamingClassifier,
    compact,
    register_state_attribute,
)
from spikecut.convert import to_snn, to_trainable_snn
from spikecut.cutoff import (
    RULES,
    EntropyCutoff,
    FixedTimestep,
    SoftmaxConfidence,
    TopKCutoff,
    exit_predictions,
)
from spikecut.evaluate import collect_cum_logits
from spikecut.layers import QCFS, TEBN
from spikecut.neurons import LIF, SpikingNetwork, TemporalModule, reset
from spikecut.ops import OpCounter, until_exit

T = 8
SHAPE = (2, 6, 6)


def _body(activation) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        activation(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 16),
        activation(),
        nn.Linear(16, 5),
    )


def _randomise_batchnorm(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)


def converted_snn() -> nn.Module:
    """``to_snn`` of a small QCFS net (IF neurons, soft reset, v0 = θ/2), in float64."""
    torch.manual_seed(0)
    ann = _body(lambda: QCFS(levels=4, threshold=1.0))
    _randomise_batchnorm(ann)
    return to_snn(ann.eval()).double()


def trained_snn() -> nn.Module:
    """A directly trained SNN's shape: ReLUs replaced by LIF (θ=1, λ=0.5, hard reset)."""
    torch.manual_seed(1)
    body = _body(LIF)
    _randomise_batchnorm(body)
    with torch.no_grad():
        body[0].weight.mul_(3.0)
        body[5].weight.mul_(3.0)
    return SpikingNetwork(body).double().eval()


def tebn_snn() -> nn.Module:
    """``to_trainable_snn`` with TEBN: a per-step scale whose step counter is state too."""
    torch.manual_seed(3)  # a seed whose exits spread over several steps
    body = _body(nn.ReLU)
    _randomise_batchnorm(body)
    with torch.no_grad():
        body[0].weight.mul_(3.0)
        body[5].weight.mul_(3.0)
    snn = to_trainable_snn(body, tebn=True, T=T)
    with torch.no_grad():
        next(m for m in snn.modules() if isinstance(m, TEBN)).scale.uniform_(0.3, 2.0)
    return snn.double().eval()


MODELS = {"converted": converted_snn, "trained": trained_snn, "tebn": tebn_snn}


def inputs(seed: int, n: int, frames: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (T, n, *SHAPE) if frames else (n, *SHAPE)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 2


def offline(snn, x, frames=False):
    """``collect_cum_logits`` on ``x`` (static [N, ...] or frames [T, N, ...])."""
    items = x.transpose(0, 1) if frames else x
    labels = torch.zeros(items.shape[0], dtype=torch.long)
    cum, _ = collect_cum_logits(
        snn, TensorDataset(items, labels), T, frames=frames, batch_size=1000, progress=False
    )
    return cum


def make_rule(name: str, snn) -> object:
    """Every rule, fitted on a calibration set labelled with the SNN's own answers at T."""
    cal = offline(snn, inputs(100, 64))
    labels = cal[-1].argmax(-1)
    if name == "topk":
        return TopKCutoff(epsilon=0.0).calibrate(cal, labels)
    if name == "softmax":
        # ε such that about half of the calibration samples are confident at step T/2
        confidence = cal[T // 2 - 1].softmax(-1).amax(-1)
        return SoftmaxConfidence(epsilon=1.0 - float(confidence.median()))
    if name == "entropy":
        return EntropyCutoff(epsilon=0.1).calibrate(cal, labels)
    return FixedTimestep(3)


RULE_NAMES = [*RULES, "fixed"]


@pytest.mark.parametrize("frames", [False, True], ids=["static", "frames"])
@pytest.mark.parametrize("rule_name", RULE_NAMES)
@pytest.mark.parametrize("kind", list(MODELS))
def test_engine_equals_offline_evaluation(kind, rule_name, frames):
    snn = MODELS[kind]()
    rule = make_rule(rule_name, snn)
    x = inputs(7, 48, frames)
    cum = offline(snn, x, frames)
    steps = rule.exit_steps(cum)
    result = AnytimeClassifier(snn, rule, T).run(x, frames=frames)
    assert result.exit_steps.dtype == torch.long and result.predictions.dtype == torch.long
    assert torch.equal(result.exit_steps, steps)
    assert torch.equal(result.predictions, exit_predictions(cum, steps))
    assert torch.equal(result.logits, cum[steps - 1, torch.arange(48)])
    if rule_name != "fixed":  # samples leave at different steps: the batch really shrinks
        assert len(steps.unique()) >= 2 and int(steps.min()) < T


@pytest.mark.parametrize("kind", list(MODELS))
def test_engine_sops_equal_offline_counts_up_to_each_exit(kind):
    snn = MODELS[kind]()
    rule = make_rule("topk", snn)
    x = inputs(8, 40)
    with OpCounter(snn) as counter:
        cum = offline(snn, x)
    counts = counter.pop()
    steps = rule.exit_steps(cum)
    result = AnytimeClassifier(snn, rule, T).run(x)
    assert torch.equal(result.exit_steps, steps)
    assert torch.equal(result.sops, until_exit(counts.total_sops(), steps))
    assert torch.equal(result.analogue_macs, until_exit(counts.total_analogue_macs(), steps))
    assert int(result.sops.min()) > 0
    # an early exit costs less than the full run
    full = until_exit(counts.total_sops())
    early = steps < T
    assert bool((result.sops[early] < full[early]).all())


def _step_outputs(snn, x, keep_at=None):
    """Per-step logits of ``x`` run one step at a time; with ``keep_at = (k, keep)`` the
    state is compacted to ``keep`` after step k (and the input with it)."""
    reset(snn)
    outs = []
    with torch.inference_mode():
        for t in range(1, T + 1):
            outs.append(snn(x.unsqueeze(0))[0])
            if keep_at is not None and t == keep_at[0]:
                compact(snn, keep_at[1])
                index = keep_at[1]
                x = x[index.nonzero().squeeze(1)] if index.dtype == torch.bool else x[index]
    reset(snn)
    return outs


@pytest.mark.parametrize("kind", list(MODELS))
def test_compaction_leaves_the_remaining_rows_unchanged(kind):
    snn = MODELS[kind]().float()
    x = inputs(3, 12).float()
    whole = _step_outputs(snn, x)
    mask = torch.tensor(
        [True, False, True, True, False, False, True, True, False, True, True, False]
    )
    masked = _step_outputs(snn, x, keep_at=(3, mask))
    order = torch.tensor([9, 2, 4, 0])  # an index also reorders the rows
    indexed = _step_outputs(snn, x, keep_at=(5, order))
    for t in range(T):
        rows_m = slice(None) if t < 3 else mask
        rows_i = slice(None) if t < 5 else order
        torch.testing.assert_close(masked[t], whole[t][rows_m], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(indexed[t], whole[t][rows_i], rtol=1e-5, atol=1e-5)
    assert masked[-1].shape[0] == int(mask.sum()) and indexed[-1].shape[0] == 4


def test_compact_checks_the_mask_and_follows_the_protocol(monkeypatch):
    class Counter(TemporalModule):
        """Keeps a per-row tensor under a registered name and a step count (shared)."""

        def __init__(self):
            super().__init__()
            self.total = None
            self.steps = 0

        def reset(self):
            self.total, self.steps = None, 0

        def forward(self, x):
            self.total = x if self.total is None else self.total + x
            self.steps += 1
            return self.total

    class Custom(TemporalModule):
        """Keeps rows in a list and compacts them itself."""

        def __init__(self):
            super().__init__()
            self.rows = ["a", "b", "c"]

        def compact_state(self, index):
            self.rows = [self.rows[i] for i in index.tolist()]

        def forward(self, x):
            return x

    monkeypatch.setattr(anytime, "STATE_ATTRIBUTES", ["v"])
    with pytest.warns(DeprecationWarning, match="register_state"):
        register_state_attribute("total")
        register_state_attribute("total")
    assert anytime.STATE_ATTRIBUTES == ["v", "total"]
    model = nn.Sequential(Counter(), Custom())
    model(torch.tensor([[1.0], [2.0], [3.0]]))
    compact(model, torch.tensor([True, False, True]))
    assert model[0].total.tolist() == [[1.0], [3.0]] and model[0].steps == 1
    assert model[1].rows == ["a", "c"]
    with pytest.raises(ValueError, match="mask over 3 rows"):
        compact(model, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match="Bool or integer"):
        compact(model, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="identifier"):
        register_state_attribute("not a name")


def test_modules_declare_their_own_state_for_compact_and_reset(monkeypatch):
    class Counter(TemporalModule):
        """Declares a per-row total and a shared step count; no global list involved."""

        def __init__(self):
            super().__init__()
            self.register_state("total", None)
            self.register_state("count", 0)

        def forward(self, x):
            self.total = x if self.total is None else self.total + x
            self.count += 1
            return self.total

    monkeypatch.setattr(anytime, "STATE_ATTRIBUTES", [])
    model = nn.Sequential(Counter())
    assert model[0].state_names == ("total", "count")
    assert anytime.state_names(LIF()) == ["v"]
    model(torch.tensor([[1.0], [2.0], [3.0]]))
    compact(model, torch.tensor([2, 0]))
    assert model[0].total.tolist() == [[3.0], [1.0]] and model[0].count == 1
    reset(model)
    assert model[0].total is None and model[0].count == 0
    with pytest.raises(ValueError, match="identifier"):
        model[0].register_state("not a name")


def test_engine_checks_its_inputs_and_rule():
    snn = trained_snn()
    with pytest.raises(RuntimeError, match="calibrate"):
        AnytimeClassifier(snn, TopKCutoff(), T)
    with pytest.raises(ValueError, match="exceeds"):
        AnytimeClassifier(snn, FixedTimestep(T + 1), T)
    engine = AnytimeClassifier(snn, FixedTimestep(2), T)
    with pytest.raises(ValueError, match=r"frames \[T=8, B, ...\]"):
        engine.run(inputs(0, 3, frames=True)[:5], frames=True)
    with pytest.raises(ValueError, match="empty batch"):
        engine.run(inputs(0, 0))
    result = engine.run(inputs(0, 3))
    assert result.exit_steps.tolist() == [2, 2, 2] and result.mean_exit == 2.0
    assert all(m.v is None for m in snn.modules() if isinstance(m, LIF))  # left reset


def test_evaluate_reports_accuracy_exit_and_operations_like_offline():
    snn = converted_snn()
    rule = make_rule("topk", snn)
    x = inputs(11, 30)
    cum = offline(snn, x)
    steps = rule.exit_steps(cum)
    labels = torch.arange(30) % 5
    summary = AnytimeClassifier(snn, rule, T).evaluate(TensorDataset(x, labels), batch_size=7)
    expected_acc = (exit_predictions(cum, steps) == labels).double().mean().item()
    assert summary["samples"] == 30
    assert summary["accuracy"] == pytest.approx(expected_acc)
    assert summary["mean_exit"] == pytest.approx(steps.double().mean().item())
    assert summary["speedup"] == pytest.approx(T / steps.double().mean().item())
    assert summary["mean_sops"] > 0 and summary["mean_analogue_macs"] > 0


# ----------------------------------------------------------------------------- streaming


def _decisions(snn, rule, recordings, chunk_sizes):
    """Feed ``recordings`` ({id: frames [T, ...]}) interleaved in chunks of the given sizes."""
    streamer = StreamingClassifier(snn, rule, T)
    for sid in recordings:
        streamer.open(sid)
    position = dict.fromkeys(recordings, 0)
    decisions = []
    for size in chunk_sizes:
        chunks = {sid: rec[position[sid] : position[sid] + size] for sid, rec in recordings.items()}
        for sid in recordings:
            position[sid] += size
        decisions += streamer.feed_many(chunks)
    return streamer, decisions


def test_stream_in_small_chunks_equals_one_call_and_the_engine():
    snn = trained_snn()
    rule = make_rule("topk", snn)
    frames = inputs(5, 6, frames=True)  # 6 recordings [T, ...]
    engine = AnytimeClassifier(snn, rule, T).run(frames, frames=True)
    for i in range(6):
        one = {i: frames[:, i]}
        _, whole = _decisions(snn, rule, one, [T])
        _, pieces = _decisions(snn, rule, one, [1, 2, 1, 3, 1])
        assert whole == pieces
        assert whole == [Decision(i, int(engine.predictions[i]), int(engine.exit_steps[i]))]


@pytest.mark.parametrize("kind", ["converted", "tebn"])
def test_many_streams_at_once_decide_as_each_would_alone(kind):
    snn = MODELS[kind]()
    rule = make_rule("topk", snn)
    frames = inputs(6, 10, frames=True)
    engine = AnytimeClassifier(snn, rule, T).run(frames, frames=True)
    expected = {i: (int(engine.predictions[i]), int(engine.exit_steps[i])) for i in range(10)}
    assert len(set(engine.exit_steps.tolist())) >= 3
    # streams started at different times: the second half opens after the first's step 2
    streamer = StreamingClassifier(snn, rule, T)
    got = {}
    for i in range(5):
        streamer.open(i)
    for d in streamer.feed_many({i: frames[:2, i] for i in range(5)}):
        got[d.stream_id] = d
    for i in range(5, 10):
        streamer.open(i)
    chunks = {i: frames[2:, i] for i in range(5)} | {i: frames[:, i] for i in range(5, 10)}
    for d in streamer.feed_many(chunks):
        assert d.stream_id not in got
        got[d.stream_id] = d
    assert {i: (d.prediction, d.step) for i, d in got.items()} == expected


def test_decided_stream_waits_or_restarts_with_fresh_state():
    snn = trained_snn()
    rule = FixedTimestep(3)
    rec = inputs(9, 1, frames=True)[:, 0]
    long = torch.cat([rec[:3], rec])  # a decision after 3 frames, then the recording again
    waiting = StreamingClassifier(snn, rule, T)
    waiting.open("a")
    first = waiting.feed("a", long)
    assert [(d.step, d.window) for d in first] == [(3, 0)]
    assert waiting.feed("a", rec) == []
    restarting = StreamingClassifier(snn, rule, T, restart=True)
    restarting.open("a")
    got = restarting.feed("a", long)
    assert [(d.step, d.window) for d in got] == [(3, 0), (3, 1), (3, 2)]
    alone = StreamingClassifier(snn, rule, T)
    alone.open("b")
    (again,) = alone.feed("b", rec[:3])
    assert got[1].prediction == again.prediction == got[0].prediction  # same 3 frames
    assert restarting.steps("a") == 2  # the last two frames started window 3


def test_close_forces_a_decision_and_errors_name_the_stream():
    snn = trained_snn()
    rule = FixedTimestep(T)
    rec = inputs(4, 1, frames=True)[:, 0]
    streamer = StreamingClassifier(snn, rule, T)
    streamer.open("cam")
    assert streamer.feed("cam", rec[:3]) == []
    cum = offline(snn, rec.unsqueeze(1), frames=True)
    forced = streamer.close("cam")
    assert forced == Decision("cam", int(cum[2, 0].argmax()), 3, 0, forced=True)
    assert streamer.streams == []
    streamer.open("cam")
    assert streamer.close("cam") is None
    with pytest.raises(KeyError, match="'cam' is not open"):
        streamer.feed("cam", rec)
    streamer.open("cam")
    with pytest.raises(ValueError, match="already open"):
        streamer.open("cam")
    with pytest.raises(ValueError, match=r"stream 'cam': expected frames \[n, ...\]"):
        streamer.feed("cam", [1, 2, 3])


def test_framing_turns_event_chunks_into_frames():
    snn = trained_snn()
    rule = make_rule("topk", snn)
    rec = (inputs(12, 1, frames=True)[:, 0] * 2).round()  # event counts per pixel and step

    def to_events(frames: torch.Tensor, first_step: int) -> np.ndarray:
        """One event row (step, channel, y, x) per count."""
        idx = frames.long().nonzero().numpy()
        counts = frames.long()[tuple(idx.T)].numpy()
        idx = np.repeat(idx, counts, axis=0)
        idx[:, 0] += first_step
        return idx

    def framing(chunk):
        events, first_step, n = chunk
        out = np.zeros((n, *SHAPE), dtype=np.int64)  # counts: cast to the SNN float type
        np.add.at(out, (events[:, 0] - first_step, events[:, 1], events[:, 2], events[:, 3]), 1)
        return out

    by_frames = StreamingClassifier(snn, rule, T)
    by_events = StreamingClassifier(snn, rule, T, framing=framing)
    by_frames.open(0)
    by_events.open(0)
    want, got = [], []
    for start, stop in [(0, 2), (2, 3), (3, 8)]:
        want += by_frames.feed(0, rec[start:stop])
        got += by_events.feed(0, (to_events(rec[start:stop], start), start, stop - start))
    assert got == want and len(got) == 1


# ----------------------------------------------------------------------------- wall-clock bench


def test_measure_anytime_reports_speedups_from_the_engines_exits():
    from spikecut.bench.anytime import measure_anytime

    snn = trained_snn()
    rule = make_rule("topk", snn)
    x = inputs(21, 40)
    data = TensorDataset(x, torch.zeros(40, dtype=torch.long))
    got = measure_anytime(snn, data, rule, T, batch_size=16, repeats=1, warmup=0)
    steps = rule.exit_steps(offline(snn, x))
    assert got["samples"] == 40 and got["batch_size"] == 16 and got["device"] == "cpu"
    assert got["mean_exit"] == pytest.approx(steps.double().mean().item())
    assert got["steps_speedup"] == pytest.approx(T / steps.double().mean().item())
    assert got["agreement"] == 1.0
    assert got["full_seconds"] > 0 and got["anytime_seconds"] > 0
    assert got["ratio"] == pytest.approx(got["wall_speedup"] / got["steps_speedup"])
    assert got["stepwise_speedup"] == pytest.approx(
        got["stepwise_seconds"] / got["anytime_seconds"]
    )
    assert got["strategy"] in STRATEGIES
    assert got["step_cost_ratio"] > 0
    assert got["oracle_seconds"] > 0
    assert got["oracle_ratio"] == pytest.approx(
        min(got["full_seconds"], got["stepwise_seconds"])
        / got["oracle_seconds"]
        / got["steps_speedup"]
    )
    # one wall / steps per turn: with one turn, the best pass's
    assert got["ratio_turns"] == [pytest.approx(got["ratio"])]
    assert got["faster_turns"] == (got["ratio_turns"][0] * got["steps_speedup"] > 1.0)
    split = got["split"]  # one profiled pass of the step-by-step engine
    assert set(split) == {"network", "rule", "compaction", "other", "total"}
    assert split["network"] > 0 and split["rule"] > 0
    assert split["total"] == pytest.approx(sum(v for k, v in split.items() if k != "total"))
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure_anytime(snn, data, rule, T, repeats=0)
    with pytest.warns(DeprecationWarning, match="repeat"):  # the old name of not frames
        old = measure_anytime(snn, data, rule, T, repeat=True, batch_size=40, repeats=1)
    assert old["mean_exit"] == got["mean_exit"]


def test_measure_anytime_pairs_the_turns_and_takes_the_best_of_each(monkeypatch):
    """The ratios from given turn times (full, anytime, stepwise, one step alone): the
    best of each variant for the headline numbers, each turn against its own baselines
    for the spread."""
    from spikecut.bench import anytime as bench

    turns = [[0.8, 0.6, 0.9], [0.2, 0.3, 0.5], [0.9, 0.5, 1.0], [0.2, 0.1, 0.3]]

    def fake_turns(calls, device, repeats, warmup):
        for call in calls:  # each variant runs once, so the outputs are there to compare
            call()
        oracles = [[0.25, 0.125, 0.3]] + [[0.2, 0.2, 0.2]] * (len(calls) - 5)
        return turns + oracles  # the exit oracle's passes come last

    monkeypatch.setattr(bench, "interleaved_seconds", fake_turns)
    snn = trained_snn()
    rule = make_rule("topk", snn)
    data = TensorDataset(inputs(21, 40), torch.zeros(40, dtype=torch.long))
    got = bench.measure_anytime(snn, data, rule, T, batch_size=16, repeats=3, profile=False)
    speedup = got["steps_speedup"]
    best = (got["full_seconds"], got["anytime_seconds"], got["stepwise_seconds"])
    assert best == (0.6, 0.2, 0.5)
    assert got["wall_speedup"] == pytest.approx(0.5 / 0.2)  # the faster baseline's best
    assert got["step_cost_ratio"] == pytest.approx(0.1 / (0.6 / T))
    assert got["oracle_seconds"] == 0.125  # the best pass of the best oracle
    assert got["oracle_ratio"] == pytest.approx(0.5 / 0.125 / speedup)
    # turn by turn: min(0.8, 0.9) / 0.2, min(0.6, 0.5) / 0.3, min(0.9, 1.0) / 0.5
    expected = [4.0 / speedup, (0.5 / 0.3) / speedup, 1.8 / speedup]
    assert got["ratio_turns"] == pytest.approx(expected)
    assert got["faster_turns"] == 3
    turns[1][2] = 1.0  # the last turn's anytime pass now loses to its full-T pass
    again = bench.measure_anytime(snn, data, rule, T, batch_size=16, profile=False)
    assert again["faster_turns"] == 2


def test_bench_driver_rebuilds_a_finished_run_with_its_saved_thresholds(tmp_path):
    from spikecut._io import atomic_write_json
    from spikecut.bench.anytime import run_anytime_bench
    from spikecut.config import config_to_dict, parse_config
    from spikecut.data import get_dataset
    from spikecut.experiment import load_run_snn
    from spikecut.models import create

    cfg = parse_config({"name": "tiny", "T": 4, "data": {"name": "digits"}})
    cfg.model.name, cfg.model.options = "digits-cnn", {"width": 4, "hidden": 8}
    torch.manual_seed(0)
    ann = create("digits-cnn", num_classes=10, levels=4, threshold=1.0, width=4, hidden=8)
    (tmp_path / "weights").mkdir()
    torch.save(ann.state_dict(), tmp_path / "weights" / "run_a.pt")
    beta = [0.5, 0.25, 0.125, 0.0]
    run = {
        "name": "run a",
        "alpha": 0.0,
        "seed": 0,
        "ann_accuracy": 0.1,
        "snn_accuracy_per_t": [0.1] * 4,
        "oct_mean": 2.0,
        "beta": beta,
        "rules": [],
    }
    atomic_write_json(
        tmp_path / "results.json",
        {"experiment": "tiny", "T": 4, "config": config_to_dict(cfg), "runs": [run]},
    )
    snn, entry, loaded = load_run_snn(tmp_path, "run a")
    assert entry["beta"] == beta and loaded.T == 4
    x = torch.rand(3, 1, 8, 8)
    with torch.inference_mode():
        expected = to_snn(ann)(x.unsqueeze(0).expand(4, *x.shape))
        torch.testing.assert_close(snn(x.unsqueeze(0).expand(4, *x.shape)), expected)
    with pytest.raises(ValueError, match="no run named 'run b'; runs: 'run a'"):
        load_run_snn(tmp_path, "run b")

    rows = run_anytime_bench([tmp_path], repeats=1, single_samples=20, log=lambda _: None)
    row, single = rows  # the batch of batch_size_eval, and one sample at a time
    assert single["batch_size"] == 1 and single["samples"] == 20 and single["agreement"] == 1.0
    assert {k: row[k] for k in ("experiment", "run", "rule", "epsilon")} == {
        "experiment": "tiny",
        "run": "run a",
        "rule": "topk",
        "epsilon": 0.0,
    }
    assert row["samples"] == 360 and row["agreement"] == 1.0
    # the rule is Top-K with the saved β, applied to the rebuilt SNN on the test split
    test = get_dataset("digits", split="test", augment=False)
    cum, _ = collect_cum_logits(snn, test, 4, progress=False)
    saved = TopKCutoff()
    saved.beta = torch.tensor(beta)
    steps = saved.exit_steps(cum)
    assert row["mean_exit"] == pytest.approx(steps.double().mean().item())
    assert row["mean_exit"] < 4.0
    # the streamed samples are spread over the split: 20 of its 360, every 18th
    spread = torch.arange(20) * 360 // 20
    assert single["mean_exit"] == pytest.approx(steps[spread].double().mean().item())


def test_streamed_samples_are_spread_over_the_split():
    from spikecut.bench.anytime import spread_samples

    data = list(range(10))
    picked = list(spread_samples(data, 4))
    assert sorted(picked) == [0, 2, 5, 7]  # evenly spaced ...
    assert picked == list(spread_samples(data, 4))  # ... in one order for a seed ...
    orders = {tuple(spread_samples(data, 4, seed=seed)) for seed in range(8)}
    assert len(orders) > 1 and all(sorted(o) == [0, 2, 5, 7] for o in orders)  # ... shuffled
    labels = [0] * 50 + [1] * 50  # a split sorted by label: both classes come early
    assert set(list(spread_samples(labels, 10))[:5]) == {0, 1}
    assert sorted(spread_samples(data, 10)) == data and sorted(spread_samples(data, 50)) == data
    assert list(spread_samples(data, 1)) == [0]
    with pytest.raises(ValueError, match="at least 1 sample, got 0"):
        spread_samples(data, 0)


def test_compaction_keeps_a_channels_last_state_channels_last():
    lif = LIF()
    lif.v = torch.rand(6, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    expected = lif.v[torch.tensor([0, 2, 5])].clone()
    compact(SpikingNetwork(nn.Sequential(lif)), torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool))
    assert lif.v.is_contiguous(memory_format=torch.channels_last) and not lif.v.is_contiguous()
    assert torch.equal(lif.v, expected)


def test_anytime_bench_table_shows_one_step_alone_and_the_exit_oracle():
    from spikecut.bench.anytime import render_markdown

    row = dict(
        experiment="digits", run="alpha=0", batch_size=1, rule="topk", epsilon=0.0,
        steps_speedup=2.0, wall_speedup=0.9, ratio=0.45, stepwise_speedup=1.1,
        agreement=1.0, strategy="full", device="cpu", step_cost_ratio=2.5, oracle_ratio=0.48,
    )  # fmt: skip
    # rows from before the exit oracle, and before one step alone
    old = {k: v for k, v in row.items() if k != "oracle_ratio"}
    older = {k: v for k, v in old.items() if k != "step_cost_ratio"}
    lines = render_markdown([row, old, older]).splitlines()
    assert "| One step alone | Exit oracle |" in lines[0]
    assert "| 0.45 | n/a | n/a | 1.10× | 2.50× | 0.48 | 100.00 | full |" in lines[2]
    assert "| 0.45 | n/a | n/a | 1.10× | 2.50× | n/a | 100.00 | full |" in lines[3]
    assert "| 0.45 | n/a | n/a | 1.10× | n/a | n/a | 100.00 | full |" in lines[4]


def test_anytime_bench_table_shows_the_spread_over_turns():
    from spikecut.bench.anytime import render_markdown

    row = dict(
        experiment="digits", run="alpha=0", batch_size=1, rule="topk", epsilon=0.0,
        steps_speedup=2.0, wall_speedup=0.9, ratio=0.45, stepwise_speedup=1.1,
        agreement=1.0, strategy="full", device="cpu", step_cost_ratio=2.5,
        ratio_turns=[0.45, 0.38, 0.52, 0.41, 0.44], faster_turns=1,
    )  # fmt: skip
    lines = render_markdown([row]).splitlines()
    assert "| Wall / steps | Per turn | Turns faster |" in lines[0]
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert "| 0.45 | 0.38–0.52 | 1/5 | 1.10× |" in lines[2]
