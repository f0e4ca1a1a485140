"""The ``graphed`` strategy: step graphs captured per padded batch and replayed give the
offline answers. CUDA graphs need a GPU; here the same buffers and operations are replayed
by :class:`spikecut._anytime_graphs.EagerReplay`, which re-runs each captured step with the
state references the capture saw (what replaying a graph amounts to). What only a GPU can
check (that every captured operation is capturable) is left to the device benchmark."""

import pytest
import torch
from test_anytime import MODELS, RULE_NAMES, T, inputs, make_rule, offline

from spikecut import _anytime_graphs as graphs_module
from spikecut._anytime_costs import GRAPHED, STRATEGIES, StrategyChooser
from spikecut._anytime_graphs import EagerReplay, bucket
from spikecut.anytime import AnytimeClassifier
from spikecut.cutoff import FixedTimestep, TopKCutoff, exit_predictions


class CountingReplay(EagerReplay):
    """:class:`EagerReplay` that counts its captures and replays."""

    captures = 0
    replays = 0

    def __call__(self):
        recorder = super().__call__()
        capture, replay = recorder.capture, recorder.replay

        def counted_capture(fn):
            CountingReplay.captures += 1
            capture(fn)

        def counted_replay():
            CountingReplay.replays += 1
            replay()

        recorder.capture, recorder.replay = counted_capture, counted_replay
        return recorder


def graphed_engine(snn, rule, backend=EagerReplay):
    engine = AnytimeClassifier(snn, rule, T, count_ops=False, strategy=GRAPHED)
    engine._graph_backend = backend
    return engine


def check_offline(result, cum, steps, rows):
    assert torch.equal(result.exit_steps, steps[rows])
    assert torch.equal(result.predictions, exit_predictions(cum, steps)[rows])
    assert torch.equal(result.logits, cum[steps[rows] - 1, rows])


@pytest.mark.parametrize("frames", [False, True], ids=["static", "frames"])
@pytest.mark.parametrize("rule_name", RULE_NAMES)
@pytest.mark.parametrize("kind", list(MODELS))
def test_replayed_step_graphs_equal_offline_evaluation(kind, rule_name, frames):
    snn = MODELS[kind]()
    rule = make_rule(rule_name, snn)
    x = inputs(7, 40, frames)
    cum = offline(snn, x, frames)
    steps = rule.exit_steps(cum)
    engine = graphed_engine(snn, rule)
    # 40 rows padded to 64, then 33 other rows in the same graphs, then one alone
    batches = [torch.arange(40), torch.arange(7, 40), torch.arange(5, 6)]
    for rows in batches:
        chunk = x[:, rows] if frames else x[rows]
        result = engine.run(chunk, frames=frames)
        check_offline(result, cum, steps, rows)
    assert {key[0] for key in engine._graphs} == {64, 1}
    if rule_name != "fixed":
        assert len(steps.unique()) >= 2 and int(steps.min()) < T


def test_graphs_are_captured_once_per_bucket_and_replayed_only_while_rows_run():
    snn = MODELS["trained"]()
    rule = make_rule("topk", snn)
    x = inputs(9, 30)
    cum = offline(snn, x)
    steps = rule.exit_steps(cum)
    CountingReplay.captures = CountingReplay.replays = 0
    engine = graphed_engine(snn, rule, CountingReplay)
    for _ in range(3):
        check_offline(engine.run(x), cum, steps, torch.arange(30))
    assert CountingReplay.captures == T  # one graph per step, for the bucket of 32
    # a run stops replaying once every real row has its answer
    assert CountingReplay.replays == 3 * int(steps.max())
    assert int(steps.max()) < T  # so the early stop was exercised


def test_replaced_parameters_are_captured_again_and_updated_ones_read_in_place():
    snn = MODELS["converted"]()
    rule = make_rule("topk", snn)
    x = inputs(11, 20)
    engine = graphed_engine(snn, rule)
    engine.run(x)
    first = next(iter(engine._graphs.values()))
    linear = [m for m in snn.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # updated in place: the graphs read the new values
        linear.bias.add_(torch.linspace(-1.0, 1.0, linear.bias.numel(), dtype=linear.bias.dtype))
    cum = offline(snn, x)
    check_offline(engine.run(x), cum, rule.exit_steps(cum), torch.arange(20))
    assert next(iter(engine._graphs.values())) is first
    linear.bias = torch.nn.Parameter(linear.bias.detach().flip(0))  # replaced: captured again
    cum = offline(snn, x)
    check_offline(engine.run(x), cum, rule.exit_steps(cum), torch.arange(20))
    assert next(iter(engine._graphs.values())) is not first


def test_without_graphs_the_masked_loop_answers():
    """No CUDA device and no test backend, or a rule with its own ``fires``: no graphs."""
    snn = MODELS["trained"]()
    rule = make_rule("topk", snn)
    x = inputs(12, 24)
    cum = offline(snn, x)
    steps = rule.exit_steps(cum)
    engine = AnytimeClassifier(snn, rule, T, count_ops=False, strategy=GRAPHED)
    check_offline(engine.run(x), cum, steps, torch.arange(24))
    assert engine._graphs == {}

    class OwnFires(TopKCutoff):
        def fires(self, cum_logits_t, t, T):
            return super().fires(cum_logits_t, t, T)

    own = OwnFires(epsilon=0.0)
    own.beta = rule.beta
    engine = graphed_engine(snn, own)
    check_offline(engine.run(x), cum, steps, torch.arange(24))
    assert engine._graphs == {}


def test_a_refused_capture_warns_once_and_the_masked_loop_answers(monkeypatch):
    snn = MODELS["converted"]()
    rule = make_rule("topk", snn)
    x = inputs(13, 10)
    cum = offline(snn, x)
    steps = rule.exit_steps(cum)

    class Refusing(EagerReplay):
        def __call__(self):
            recorder = super().__call__()

            def refuse(fn):
                raise RuntimeError("operation not permitted when stream is capturing")

            recorder.capture = refuse
            return recorder

    engine = graphed_engine(snn, rule, Refusing)
    with pytest.warns(RuntimeWarning, match="could not capture.*not permitted"):
        check_offline(engine.run(x), cum, steps, torch.arange(10))
    check_offline(engine.run(x), cum, steps, torch.arange(10))  # no second try, no warning
    assert len(engine._graph_failures) == 1 and engine._graphs == {}


def test_the_kept_graph_sets_are_bounded(monkeypatch):
    monkeypatch.setattr("spikecut.anytime._GRAPH_SETS", 2)
    snn = MODELS["converted"]()
    rule = make_rule("topk", snn)
    engine = graphed_engine(snn, rule)
    for n in (3, 9, 17):  # buckets 4, 16, 32
        x = inputs(n, n)
        cum = offline(snn, x)
        check_offline(engine.run(x), cum, rule.exit_steps(cum), torch.arange(n))
    assert sorted(key[0] for key in engine._graphs) == [16, 32]


def test_bucket_is_the_next_power_of_two():
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 64, 65)] == [1, 2, 4, 4, 8, 64, 128]
    with pytest.raises(ValueError, match="batch must be >= 1, got 0"):
        bucket(0)


def test_graphed_is_a_candidate_on_cuda_only_and_never_counts_operations():
    snn = MODELS["converted"]()
    chooser = AnytimeClassifier(snn, FixedTimestep(3), T, count_ops=False).chooser
    cpu = StrategyChooser.key(torch.device("cpu"), 8, False)
    cuda = StrategyChooser.key(torch.device("cuda"), 8, False)
    assert chooser.candidates_for(cpu) == STRATEGIES
    assert chooser.candidates_for(cuda) == (*STRATEGIES, GRAPHED)
    counting = AnytimeClassifier(snn, FixedTimestep(3), T).chooser
    assert GRAPHED not in counting.candidates_for(cuda)
    with pytest.raises(ValueError, match="'graphed' does not count operations"):
        AnytimeClassifier(snn, FixedTimestep(3), T, strategy=GRAPHED)
    with pytest.raises(ValueError, match="one of compact, mask, full, chunked, graphed"):
        AnytimeClassifier(snn, FixedTimestep(3), T, strategy="graph")


def test_eager_replay_carries_new_state_into_the_captured_tensors():
    """The stand-in's own contract: a replay leaves the state where the capture left it."""
    from spikecut.neurons import LIF

    neuron = LIF(threshold=1.0, leak=0.5)
    neuron.state_private = True
    x = torch.full((3,), 0.75)
    recorder = EagerReplay([neuron])()
    with torch.no_grad():
        recorder.capture(lambda: neuron(x.unsqueeze(0)))
        captured = neuron.v
        neuron.reset()
        recorder.replay()
    assert neuron.v is captured and torch.equal(captured, torch.full((3,), 0.75))
    assert graphs_module.__all__ == ["CudaGraphBackend", "EagerReplay", "StepGraphs", "bucket"]


def test_the_chooser_times_graphed_on_a_cuda_key_and_keeps_the_fastest():
    chooser = StrategyChooser(candidates=(*STRATEGIES, GRAPHED), trials=2)
    key = StrategyChooser.key(torch.device("cuda"), 64, False)
    exits = torch.tensor([2, 3, 3, 5])
    # per sample: graphed the cheapest per step of masked work, the others slower
    cost = {"compact": 9e-5, "mask": 8e-5, "full": 7e-5, "chunked": 9e-5, GRAPHED: 1e-5}
    ran = []
    while not chooser.settled(key):
        name = chooser.pick(key)
        ran.append(name)
        chooser.record(key, name, cost[name], exits, T)
    assert set(ran) == {*STRATEGIES, GRAPHED}
    assert chooser.pick(key) == GRAPHED
    cpu = StrategyChooser.key(torch.device("cpu"), 64, False)
    while not chooser.settled(cpu):  # on the CPU graphed is never run
        name = chooser.pick(cpu)
        assert name != GRAPHED
        chooser.record(cpu, name, cost[name], exits, T)
