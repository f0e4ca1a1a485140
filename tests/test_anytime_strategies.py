"""The engine's ways to run a batch give the offline answers; its choices follow the
measured costs."""

import itertools

import pytest
import torch
from test_anytime import MODELS, RULE_NAMES, T, inputs, make_rule, offline

from spikecut import anytime
from spikecut._anytime_costs import STRATEGIES, CompactionCosts, StrategyChooser, plan_chunks
from spikecut._anytime_graphs import EagerReplay
from spikecut.anytime import AnytimeClassifier
from spikecut.cutoff import exit_predictions

UNCHUNKED = ("compact", "mask", "full")


def _engine(snn, rule, strategy, count_ops=False):
    return AnytimeClassifier(snn, rule, T, strategy=strategy, count_ops=count_ops)


@pytest.mark.parametrize("frames", [False, True], ids=["static", "frames"])
@pytest.mark.parametrize("rule_name", ["topk", "entropy", "fixed"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_every_strategy_equals_offline_evaluation(kind, rule_name, frames):
    snn = MODELS[kind]()
    rule = make_rule(rule_name, snn)
    x = inputs(7, 40, frames)
    cum = offline(snn, x, frames)
    steps = rule.exit_steps(cum)
    for strategy in STRATEGIES:
        result = _engine(snn, rule, strategy).run(x, frames=frames)
        assert torch.equal(result.exit_steps, steps), strategy
        assert torch.equal(result.predictions, exit_predictions(cum, steps)), strategy
        assert torch.equal(result.logits, cum[steps - 1, torch.arange(40)]), strategy


@pytest.mark.parametrize("frames", [False, True], ids=["static", "frames"])
@pytest.mark.parametrize("rule_name", ["topk", "entropy", "fixed"])
@pytest.mark.parametrize("schedule", [(T,), (1, 3, T - 4), (2,) * (T // 2), (T - 1, 1)])
def test_chunked_runs_equal_offline_evaluation_for_any_chunks(schedule, rule_name, frames):
    """Several steps per call: the rule still reads every step, so the exits are the same."""
    snn = MODELS["trained"]()
    rule = make_rule(rule_name, snn)
    x = inputs(5, 40, frames)
    cum = offline(snn, x, frames)
    steps = rule.exit_steps(cum)
    engine = _engine(snn, rule, "chunked")
    engine.chooser.plan = lambda key, T, batch, refresh=True: schedule
    for chunk in (x, x[:, :1] if frames else x[:1]):  # a batch, and one streamed sample
        n = chunk.shape[1] if frames else chunk.shape[0]
        result = engine.run(chunk, frames=frames)
        assert torch.equal(result.exit_steps, steps[:n])
        assert torch.equal(result.predictions, exit_predictions(cum, steps)[:n])
        assert torch.equal(result.logits, cum[steps[:n] - 1, torch.arange(n)])


def test_chunked_plan_is_the_cheapest_of_all_chunkings():
    def expected(plan, running, batch, fixed, per):
        cost, s = 0.0, 0
        for k in plan:
            cost += (1 - (1 - running[s]) ** batch) * fixed + per * k * batch * running[s]
            s += k
        return cost

    running = [1.0, 0.3, 0.11, 0.11, 0.11, 0.05]
    for batch, fixed, per in [
        (1, 0.25, 0.075),
        (1, 0.2, 0.02),
        (500, 1e-4, 5e-5),
        (32, 1e-3, 1e-5),
    ]:
        plan = plan_chunks(running, batch, fixed, per)
        assert sum(plan) == len(running)
        every = [
            p
            for n in range(1, 7)
            for p in itertools.product(range(1, 7), repeat=n)
            if sum(p) == len(running)
        ]
        least = min(expected(p, running, batch, fixed, per) for p in every)
        assert expected(plan, running, batch, fixed, per) == pytest.approx(least)
    falling = [1.0, 0.5, 0.25, 0.12, 0.06, 0.03]
    assert plan_chunks(falling, 1, 0.0, 1.0) == (1,) * 6  # no fixed cost: one step per call
    assert plan_chunks(running, 1, 1.0, 0.0) == (6,)  # nothing per step: one call
    assert plan_chunks(running, 1, 0.25, 0.075)[0] == 2  # most exit by step 2


def test_chooser_fits_the_call_cost_and_plans_from_the_exits_seen():
    chooser = StrategyChooser(
        trials=1, small_trials=1, candidates=("compact", "chunked"), warmup_runs=0
    )
    key = StrategyChooser.key(torch.device("cpu"), 1, False)
    assert chooser.call_cost(key) is None
    assert chooser.plan(key, 8, 1) == (1,) * 8  # nothing known yet: one step per call
    for steps in (1, 8, 1, 4):
        chooser.observe_call(key, 1, steps, 0.25 + 0.075 * steps)
    fixed, per = chooser.call_cost(key)
    assert fixed == pytest.approx(0.25) and per == pytest.approx(0.075)
    chooser.record(key, "compact", 1.0, torch.tensor([2]), 8)
    assert chooser.plan(key, 8, 1) == (2, 6)  # the only exit seen is at step 2
    chooser.record(key, "chunked", 0.5, torch.tensor([2]), 8)
    assert chooser.settled(key)
    assert chooser.expected(key, "chunked") == pytest.approx(0.5)  # 0.25 s a step, 2 steps
    chooser.observe_call(key, 1, 1, 100.0)  # once settled the plan no longer moves
    chooser.record(key, "compact", 1.0, torch.tensor([8]), 8)
    assert chooser.plan(key, 8, 1) == (2, 6)


def test_chooser_times_one_run_in_n_once_settled():
    chooser = StrategyChooser(trials=1, candidates=("mask",), recheck_every=4, warmup_runs=0)
    key = StrategyChooser.key(torch.device("cpu"), 8, False)
    assert chooser.wants_record(key)
    chooser.record(key, "mask", 1.0)
    assert [chooser.wants_record(key) for _ in range(8)] == [False, False, False, True] * 2


@pytest.mark.parametrize("kind", list(MODELS))
def test_one_streamed_sample_exits_where_the_batch_would(kind):
    snn = MODELS[kind]()
    rule = make_rule("topk", snn)
    x = inputs(9, 6)
    steps = rule.exit_steps(offline(snn, x))
    for strategy in STRATEGIES:
        engine = _engine(snn, rule, strategy)
        single = torch.cat([engine.run(x[i : i + 1]).exit_steps for i in range(6)])
        assert torch.equal(single, steps), strategy


@pytest.mark.parametrize("pays", [True, False], ids=["compacts", "masks"])
def test_compaction_decided_by_costs_keeps_the_answers_and_the_op_counts(pays):
    snn = MODELS["trained"]()
    rule = make_rule("topk", snn)
    x = inputs(8, 40)
    reference = _engine(snn, rule, "mask", count_ops=True).run(x)
    engine = _engine(snn, rule, "compact", count_ops=True)
    costs = engine._costs.setdefault(("cpu", False), CompactionCosts())
    costs.compaction(0.0 if pays else 1e9)  # free: compact at every exit; never worth it
    compacted = []
    original = engine._compact
    engine._compact = lambda net, keep: (compacted.append(keep.numel()), original(net, keep))
    result = engine.run(x)
    assert bool(compacted) == pays
    assert torch.equal(result.exit_steps, reference.exit_steps)
    assert torch.equal(result.predictions, reference.predictions)
    assert torch.equal(result.sops, reference.sops)
    assert torch.equal(result.analogue_macs, reference.analogue_macs)


def test_auto_times_every_strategy_then_keeps_the_fastest():
    snn = MODELS["converted"]()
    rule = make_rule("topk", snn)
    x = inputs(2, 16)
    engine = AnytimeClassifier(snn, rule, T, count_ops=False)
    key = StrategyChooser.key(torch.device("cpu"), 16, False)
    runs = engine.chooser.trials + engine.chooser.warmup_runs  # each strategy's first is untimed
    answers = [engine.run(x).exit_steps for _ in range(runs * len(STRATEGIES) - 1)]
    assert not engine.chooser.settled(key)  # one strategy is a timing short
    answers.append(engine.run(x).exit_steps)
    assert engine.chooser.settled(key)
    assert set(engine.chooser.table()[str(key)]) == set(STRATEGIES)
    assert all(torch.equal(a, answers[0]) for a in answers)
    assert engine.chooser.call_cost(key) is not None  # every path's calls were timed
    assert sum(engine.chooser.plan(key, T, 16)) == T
    # with operation counting, the paths that run several steps per call are no candidates
    counting = AnytimeClassifier(snn, rule, T)
    assert {"full", "chunked"}.isdisjoint(counting.chooser.candidates)


def test_chooser_picks_the_least_measured_time():
    chooser = StrategyChooser(trials=2, candidates=UNCHUNKED, warmup_runs=0)
    key = StrategyChooser.key(torch.device("cpu"), 500, False)
    assert key == StrategyChooser.key(torch.device("cpu"), 300, False)  # same bucket
    assert key != StrategyChooser.key(torch.device("cpu"), 1, False)
    times = {"compact": [3.0, 2.0], "mask": [1.5, 5.0], "full": [4.0, 1.8]}
    for _ in range(2):
        name = chooser.pick(key)
        chooser.record(key, name, times[name].pop(0))
        name = chooser.pick(key)
        chooser.record(key, name, times[name].pop(0))
        name = chooser.pick(key)
        chooser.record(key, name, times[name].pop(0))
    assert chooser.settled(key) and chooser.pick(key) == "mask"


def test_compaction_pays_only_when_the_saved_rows_outweigh_its_cost():
    costs = CompactionCosts()
    assert costs.pays(1, 1)  # not yet measured: compact, so that it is
    costs.step(100, 1.0 + 0.01 * 100)  # fixed 1 s + 10 ms per row
    costs.step(50, 1.0 + 0.01 * 50)
    assert costs.per_row() == pytest.approx(0.01)
    costs.compaction(0.2)
    assert not costs.pays(10, 1)  # saves 0.1 s < 0.2 s
    assert costs.pays(10, 3)  # saves 0.3 s


def test_bad_strategy_is_a_clear_error():
    snn = MODELS["converted"]()
    rule = make_rule("fixed", snn)
    with pytest.raises(ValueError, match="strategy"):
        AnytimeClassifier(snn, rule, T, strategy="fast")
    for strategy in ("full", "chunked"):
        with pytest.raises(ValueError, match="count_ops=False"):
            AnytimeClassifier(snn, rule, T, strategy=strategy)


def test_chooser_compares_strategies_at_the_typical_exit_not_the_trial_samples():
    """Strategies timed on different batches: masking timed on two early-exiting batches
    must not win over full inference when the typical batch exits late (and the other way)."""
    T, per_step, full = 16, 1.0, 10.0  # masking costs 1 per step run, full T steps cost 10

    def settle(mask_exits, other_exits):
        chooser = StrategyChooser(trials=2, candidates=UNCHUNKED, warmup_runs=0)
        key = StrategyChooser.key(torch.device("cpu"), 4, False)
        mask_exits, other_exits = list(mask_exits), list(other_exits)
        while not chooser.settled(key):
            name = chooser.pick(key)
            exit_step = mask_exits.pop(0) if name == "mask" else other_exits.pop(0)
            # compaction pays a little overhead per step on this toy network
            seconds = {"mask": 1.0, "compact": 1.5}.get(name, 0) * per_step * exit_step
            seconds = full if name == "full" else seconds
            chooser.record(key, name, seconds, torch.tensor([exit_step]), T)
        return chooser, key

    # The two masked samples exit at 2 and 3 (2 and 3 s), the four others at 15 and 16:
    # the raw timings favour masking, the typical exit (about 11) favours full (10 s).
    chooser, key = settle([2, 3], [15, 16, 16, 15])
    assert min(chooser._unit[key]["mask"]) * 3 < full  # a raw comparison would pick mask
    assert chooser.pick(key) == "full"
    assert chooser.expected(key, "full") == pytest.approx(full)
    # Typical exits near 3: masking (about 3 s) beats full (10 s) even though the masked
    # trials happened to be the slow samples.
    chooser, key = settle([12, 14], [2, 3, 2, 3])
    assert chooser.pick(key) == "mask"
    assert chooser.expected(key, "mask") == pytest.approx(per_step * (12 + 14 + 2 + 3 + 2 + 3) / 6)


def test_batch_of_one_is_explored_with_every_strategy_on_the_same_sample():
    snn = MODELS["converted"]()
    rule = make_rule("topk", snn)
    x = inputs(3, 6)
    steps = rule.exit_steps(offline(snn, x))
    engine = AnytimeClassifier(snn, rule, T, count_ops=False)
    engine.chooser.small_trials = engine.chooser.max_small_trials = 3
    ran = []  # (strategy, the sample it ran)
    run_once = engine._run_once

    def logged(strategy, x_i, *args):
        ran.append((strategy, x_i.sum().item()))
        return run_once(strategy, x_i, *args)

    engine._run_once = logged
    key = StrategyChooser.key(torch.device("cpu"), 1, False)
    single = torch.cat([engine.run(x[i : i + 1]).exit_steps for i in range(6)])
    assert torch.equal(single, steps)
    rounds = 1 + 3  # one untimed warm-up sample, then the three timed ones
    explored = ran[: rounds * len(STRATEGIES)]
    for i in range(rounds):  # each strategy once, on the same sample, the order rotating
        names, values = zip(*explored[i * len(STRATEGIES) : (i + 1) * len(STRATEGIES)], strict=True)
        assert list(names) == list(STRATEGIES[i:] + STRATEGIES[:i])
        assert len(set(values)) == 1
    assert engine.chooser.settled(key)
    assert len(ran) == rounds * len(STRATEGIES) + 2  # then one strategy a sample
    assert {name for name, _ in ran[-2:]} == {engine.chooser.pick(key)}


def test_every_candidate_of_a_paired_batch_is_timed_even_when_the_key_settles_within_it():
    """Paired timings are compared batch by batch, so they must stay aligned: the decision to
    time is taken once per batch, not once per candidate."""
    snn = MODELS["converted"]()
    rule = make_rule("topk", snn)
    engine = AnytimeClassifier(snn, rule, T, count_ops=False)
    chooser = engine.chooser
    chooser.small_trials = 2
    key = StrategyChooser.key(torch.device("cpu"), 1, False)
    records = []
    record = chooser.record
    chooser.record = lambda *args, **kw: (records.append(args[1]), record(*args, **kw))
    # "mask" looks fastest and proves itself two records into the fourth batch (the first
    # is a warm-up), so the key settles in the middle of a batch
    chooser.expected = lambda key, name: 0.0 if name == "mask" else 1.0
    chooser._beats_full = lambda key, name: len(records) >= 3 * len(STRATEGIES) + 2
    x = inputs(5, 8)
    for i in range(6):
        engine.run(x[i : i + 1])
        lengths = {len(times) for times in chooser._paired.get(key, {}).values()}
        assert len(lengths) <= 1, (i, lengths)
    assert chooser.settled(key) and lengths == {3}


def test_paired_timings_compare_plain_means():
    chooser = StrategyChooser(small_trials=2, max_small_trials=2, candidates=("mask", "full"))
    key = StrategyChooser.key(torch.device("cpu"), 1, False)
    assert chooser.to_run(key) == ("mask", "full")
    # the first pair is a warm-up (one-off costs of a new shape): its times do not count
    for mask, full, exit_step in [(90.0, 2.0, 1), (1.0, 2.0, 1), (5.0, 2.5, 8)]:
        chooser.record(key, "mask", mask, torch.tensor([exit_step]), 8)
        chooser.record(key, "full", full, torch.tensor([exit_step]), 8)
    assert chooser.settled(key) and chooser.to_run(key) == ("full",)  # 3.0 against 2.25
    assert chooser.expected(key, "mask") == pytest.approx(3.0)
    assert not chooser.wants_record(key)  # no lone timings once the pairs decided


def _paired_chooser(timings: dict[str, list[float]]) -> tuple[StrategyChooser, tuple]:
    """A batch-1 chooser fed ``timings`` (seconds per strategy, batch by batch)."""
    chooser = StrategyChooser(small_trials=6, candidates=tuple(timings), warmup_runs=0)
    key = StrategyChooser.key(torch.device("cpu"), 1, False)
    for batch in range(6):
        for name, seconds in timings.items():
            chooser.record(key, name, seconds[batch], torch.tensor([4]), 8)
    return chooser, key


def test_batch_of_one_leaves_full_inference_only_for_a_strategy_faster_beyond_noise():
    full = [1.0, 1.2, 0.9, 1.1, 1.0, 1.3]
    # faster in the mean (by 0.1 a batch) but not beyond the spread of the differences
    lucky = [0.6, 1.3, 0.7, 1.2, 0.9, 1.2]
    chooser, key = _paired_chooser({"full": full, "mask": lucky})
    assert chooser.expected(key, "mask") < chooser.expected(key, "full")
    assert chooser.pick(key) == "full"
    # 0.1 faster on every batch: proven, taken
    chooser, key = _paired_chooser({"full": full, "mask": [f - 0.1 for f in full]})
    assert chooser.pick(key) == "mask"
    # of two strategies the faster one that proved itself; the luckier one is not taken
    steady = [f - 0.05 for f in full]
    chooser, key = _paired_chooser({"full": full, "chunked": lucky, "mask": steady})
    assert chooser.expected(key, "chunked") < chooser.expected(key, "mask")
    assert chooser.pick(key) == "mask"
    # without full among the candidates (counting operations) the fastest mean wins
    chooser, key = _paired_chooser({"mask": lucky, "compact": full})
    assert chooser.pick(key) == "mask"


def test_batch_of_one_explores_on_until_the_fastest_has_proved_itself_or_the_cap():
    key = StrategyChooser.key(torch.device("cpu"), 1, False)

    def explore(mask_seconds, cap=32):
        """Pairs (full: 1.0 a sample) until settled; how many it took, and the choice."""
        chooser = StrategyChooser(
            small_trials=6, max_small_trials=cap, candidates=("mask", "full"), warmup_runs=0
        )
        for batch in range(cap):
            assert chooser.to_run(key) in (("mask", "full"), ("full", "mask"))
            chooser.record(key, "mask", mask_seconds(batch), torch.tensor([2]), 8)
            chooser.record(key, "full", 1.0, torch.tensor([2]), 8)
            if chooser.settled(key):
                return batch + 1, chooser.to_run(key)
        raise AssertionError("not settled at the cap")

    # a real gain that varies with the sample (exit at step 1: much faster; at T: slower):
    # six samples do not show it beyond the noise, a dozen do
    taken, choice = explore(lambda batch: 0.3 if batch % 2 == 0 else 1.2)
    assert 6 < taken < 32 and choice == ("mask",)
    # a steady gain shows at once
    assert explore(lambda batch: 0.8) == (6, ("mask",))
    # late exits first hide the gain; exploring goes on, and it shows
    taken, choice = explore(lambda batch: 1.3 if batch < 3 else (0.3, 0.5)[batch % 2])
    assert taken > 6 and choice == ("mask",)
    # full proved faster than every other: settled at once
    assert explore(lambda batch: 1.5 + 0.01 * (batch % 3)) == (6, ("full",))
    # no gain, only noise around full's time: full is kept once the cap is reached
    noise = [0.6, 1.4, 0.8, 1.2, 0.9, 1.0]  # a mean just under 1.0
    taken, choice = explore(lambda batch: noise[batch % 6], cap=12)
    assert (taken, choice) == (12, ("full",))
    with pytest.raises(ValueError, match="max_small_trials"):
        StrategyChooser(small_trials=6, max_small_trials=5)


def _capped_at_full(paired_exits, mask_seconds, cap=12):
    """A batch-1 chooser explored to its cap without proof (mask: ``mask_seconds(exit)``,
    full: 1.0 a sample, a little noise on both), each batch's exit counted as the engine
    does."""
    key = StrategyChooser.key(torch.device("cpu"), 1, False)
    chooser = StrategyChooser(
        small_trials=6, max_small_trials=cap, candidates=("mask", "full"), warmup_runs=0
    )
    noise = [0.01, -0.02, 0.015, 0.0, -0.01, 0.02]
    for batch, exit_step in enumerate(paired_exits):
        exits = torch.tensor([exit_step])
        chooser.record(key, "mask", mask_seconds(exit_step) + noise[batch % 6], exits, 8)
        chooser.record(key, "full", 1.0 - noise[(batch + 2) % 6], exits, 8)
        chooser.observe_exits(key, exits)
    return chooser, key


def _stream(chooser, key, exits):
    for exit_step in exits:
        chooser.observe_exits(key, torch.tensor([exit_step]))


def test_a_choice_capped_at_full_is_revisited_with_the_exits_of_the_stream():
    """Masking costs 0.05 + 0.15 per step run; the timed samples were mostly late exits, so
    its gain did not show by the cap, but the stream's exits are mostly early ones."""

    def mask(exit_step):
        return 0.05 + 0.15 * exit_step

    paired = [8, 1, 8, 8, 1, 8, 8, 1, 8, 8, 1, 8]  # paired saving: mean 0.1, spread 0.5
    chooser, key = _capped_at_full(paired, mask)
    assert chooser.settled(key) and chooser.pick(key) == "full"
    mean, error, dof = chooser.gain(key, "mask")
    assert mean == pytest.approx(0.1, abs=0.02) and dof == 10
    _stream(chooser, key, [1, 1, 1, 8] * 3)  # 24 batches counted: not a revisit yet
    assert chooser.pick(key) == "full"
    _stream(chooser, key, [1, 1, 1, 8] * 2)  # the 32nd: revisited
    mean, error, dof = chooser.gain(key, "mask")
    stream_mean = (sum(paired) + 5 * (1 + 1 + 1 + 8)) / 32
    assert mean == pytest.approx(1.0 - mask(stream_mean), abs=0.03)
    assert mean > 3 * error
    assert chooser.pick(key) == "mask"
    assert chooser.to_run(key) == ("mask",)


def test_a_revisit_does_not_leave_full_for_a_stream_it_is_faster_on():
    paired = [8, 1, 8, 8, 1, 8, 8, 1, 8, 8, 1, 8]
    chooser, key = _capped_at_full(paired, lambda e: 0.05 + 0.15 * e)
    _stream(chooser, key, [8] * 160)  # late exits: masking would lose
    mean, error, _ = chooser.gain(key, "mask")
    assert mean < 0
    assert chooser.pick(key) == "full"


def test_a_revisit_goes_back_to_full_when_the_stream_shows_the_choice_slower():
    # the timed samples exited early (masking proven faster), the stream runs late
    key = StrategyChooser.key(torch.device("cpu"), 1, False)
    chooser = StrategyChooser(small_trials=6, candidates=("mask", "full"), warmup_runs=0)
    for batch, exit_step in enumerate([1, 2, 1, 3, 1, 2, 1, 8]):
        exits = torch.tensor([exit_step])
        chooser.record(key, "mask", 0.05 + 0.15 * exit_step + 0.01 * (batch % 3), exits, 8)
        chooser.record(key, "full", 1.0, exits, 8)
        chooser.observe_exits(key, exits)
        if chooser.settled(key):
            break
    assert chooser.pick(key) == "mask"
    _stream(chooser, key, [8] * 200)
    assert chooser.pick(key) == "full"


def test_every_streamed_sample_counts_its_exit_for_the_revisits():
    snn = MODELS["converted"]()
    rule = make_rule("topk", snn)
    x = inputs(3, 40)
    engine = AnytimeClassifier(snn, rule, T, count_ops=False)
    engine.chooser.small_trials = engine.chooser.max_small_trials = 3
    steps = torch.cat([engine.run(x[i : i + 1]).exit_steps for i in range(40)])
    key = StrategyChooser.key(torch.device("cpu"), 1, False)
    count, total, squares = engine.chooser._stream[key]
    assert engine.chooser.settled(key)
    assert count == 40  # explored or not, each sample once
    assert total == pytest.approx(steps.double().sum().item())
    assert squares == pytest.approx((steps.double() ** 2).sum().item())
    batched = AnytimeClassifier(snn, rule, T, count_ops=False)
    batched.run(x)  # a batch of 40 is not paired: nothing counted
    assert batched.chooser._stream == {}


def test_a_half_recorded_pair_does_not_settle_the_key():
    """``record`` asks whether the key has settled between the two halves of a pair: the
    test must compare the pairs batch by batch, not the latest time of each."""
    key = StrategyChooser.key(torch.device("cpu"), 1, False)
    chooser = StrategyChooser(small_trials=6, candidates=("mask", "full"), warmup_runs=0)
    mask = [1.3, 1.3, 1.3, 0.5, 0.3, 0.5, 0.3, 0.5]
    for seconds in mask[:7]:
        chooser.record(key, "mask", seconds, torch.tensor([2]), 8)
        chooser.record(key, "full", 1.0, torch.tensor([2]), 8)
    assert not chooser.settled(key)
    chooser.record(key, "mask", mask[7], torch.tensor([2]), 8)  # full's half still to come
    assert not chooser.settled(key)  # aligned from the end, this read as proven
    chooser.record(key, "full", 1.0, torch.tensor([2]), 8)
    assert not chooser.settled(key)  # t = 1.53 on 7 df: not proven


def test_the_proof_asked_of_a_strategy_follows_the_confidence():
    full = [1.0, 1.2, 0.9, 1.1, 1.0, 1.3]
    lucky = [0.6, 1.3, 0.7, 1.2, 0.9, 1.2]  # t = 0.1 / (0.1897 / sqrt 6) = 1.29 on 5 df
    chooser, key = _paired_chooser({"full": full, "mask": lucky})
    chooser.confidence = 0.80  # t(0.80, 5) = 0.920 < 1.29
    assert chooser._beats_full(key, "mask")
    chooser.confidence = 0.85  # t(0.85, 5) = 1.156 < 1.29
    assert chooser._beats_full(key, "mask")
    chooser.confidence = 0.90  # t(0.90, 5) = 1.476 > 1.29
    assert not chooser._beats_full(key, "mask")
    with pytest.raises(ValueError, match="confidence"):
        StrategyChooser(confidence=1.0)


def test_chooser_takes_more_trials_at_batch_one():
    chooser = StrategyChooser(trials=2, small_trials=5)
    assert chooser.trials_for(StrategyChooser.key(torch.device("cpu"), 1, False)) == 5
    assert chooser.trials_for(StrategyChooser.key(torch.device("cpu"), 3, False)) == 2


@pytest.mark.parametrize("rule_name", RULE_NAMES)
def test_one_step_criterion_equals_the_stacked_one(rule_name):
    """The engine's per-step call (``_criterion_at``) decides as the offline stack does."""
    snn = MODELS["converted"]()
    rule = make_rule(rule_name, snn)
    cum = offline(snn, inputs(11, 64))
    stacked = rule._criterion(cum, torch.arange(1, T + 1))
    for t in range(1, T + 1):
        assert torch.equal(rule._criterion_at(cum[t - 1], t), stacked[t - 1])
    if rule_name == "topk":  # new thresholds are read, not a stale copy
        rule.beta = torch.full((T,), float(cum.abs().max()) * 10)
        assert not rule._criterion_at(cum[0], 1).any()


@pytest.mark.parametrize("strategy", [*STRATEGIES, "graphed", "auto"])
@pytest.mark.parametrize("batch", [1, 5])
def test_non_finite_outputs_are_a_clear_error_on_every_path(strategy, batch):
    snn = MODELS["converted"]()
    rule = make_rule("fixed", snn)
    last = [m for m in snn.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias[0] = float("nan")
    engine = AnytimeClassifier(snn, rule, T, count_ops=False, strategy=strategy)
    engine._graph_backend = EagerReplay  # the graphed path replays its steps on the CPU
    with pytest.raises(ValueError, match="expected finite values, found"):
        engine.run(inputs(2, batch))


def test_an_explicitly_chunked_engine_stops_learning_after_its_first_batches():
    snn = MODELS["converted"]()
    rule = make_rule("topk", snn)
    x = inputs(4, 8)
    steps = rule.exit_steps(offline(snn, x))
    engine = _engine(snn, rule, "chunked")
    key = StrategyChooser.key(torch.device("cpu"), 8, False)
    calls = []
    observe = engine.chooser.observe_call
    engine.chooser.observe_call = lambda *args: (calls.append(args), observe(*args))
    for _ in range(anytime._PLAN_BATCHES):
        assert torch.equal(engine.run(x).exit_steps, steps)
    learned, plan = len(calls), engine.chooser.plan(key, T, 8, refresh=False)
    assert learned > 0 and engine.chooser.exit_batches(key) == anytime._PLAN_BATCHES
    for _ in range(3):  # no more timing or counting; the plan stays
        assert torch.equal(engine.run(x).exit_steps, steps)
    assert len(calls) == learned and engine.chooser.exit_batches(key) == anytime._PLAN_BATCHES
    assert engine.chooser.plan(key, T, 8, refresh=False) == plan and sum(plan) == T


@pytest.mark.parametrize("rule_name", ["topk", "fixed", "entropy"])
def test_small_cpu_batches_decide_in_python_or_numpy_with_the_offline_answers(
    rule_name, monkeypatch
):
    """On the CPU one sample is decided in plain Python and a small batch in NumPy (Y summed
    in float64 as the CPU's cumsum does): the exits, answers and logits stay the offline
    ones bit for bit, and rules without those forms keep the tensor path."""
    snn = MODELS["converted"]()
    rule = make_rule(rule_name, snn)
    numpy_calls, python_calls = [], []
    fast_forms = rule_name != "entropy"
    assert ("_criterion_numpy" in vars(type(rule))) == fast_forms
    assert ("_criterion_python" in vars(type(rule))) == fast_forms
    if fast_forms:
        numpy_form, python_form = type(rule)._criterion_numpy, type(rule)._criterion_python

        def spied_python(self):
            criterion = python_form(self)
            return lambda y, t: python_calls.append(len(y)) or criterion(y, t)

        monkeypatch.setattr(
            type(rule),
            "_criterion_numpy",
            lambda self, cum, first: numpy_calls.append(cum.shape) or numpy_form(self, cum, first),
        )
        monkeypatch.setattr(type(rule), "_criterion_python", spied_python)
    x = inputs(9, 40)
    cum = offline(snn, x)
    steps = rule.exit_steps(cum)
    for strategy, n in [("full", 1), ("full", 5), ("mask", 1), ("full", 40), ("mask", 5)]:
        numpy_calls.clear()
        python_calls.clear()
        result = _engine(snn, rule, strategy).run(x[:n])
        assert torch.equal(result.exit_steps, steps[:n]), (strategy, n)
        assert torch.equal(result.predictions, exit_predictions(cum, steps)[:n])
        assert torch.equal(result.logits, cum[steps[:n] - 1, torch.arange(n)])
        assert bool(python_calls) == (fast_forms and n == 1), (strategy, n)
        numpy_rule = fast_forms and 1 < n <= anytime._NUMPY_BATCH and strategy == "full"
        assert bool(numpy_calls) == numpy_rule, (strategy, n)
        assert all(shape[1] == n for shape in numpy_calls)
        assert all(classes == cum.shape[-1] for classes in python_calls)


@pytest.mark.parametrize(
    "values",
    [[0.5, 2.0, 2.0, -1.0], [3.0, 3.0, 3.0], [-0.0, 0.0, -1.0], [1e-30, -1e30, 7.25]],
    ids=["tie", "all-equal", "signed-zeros", "wide"],
)
def test_one_sample_result_read_in_python_is_the_tensor_one(values):
    """One sample's answer taken from Python numbers (the batch-1 path) is argmax's, ties
    going to the first largest, with the same exit step and logits."""
    y = torch.tensor([values])
    from_python = anytime._single_result(y, 3, torch.device("cpu"), values)
    from_tensor = anytime._single_result(y, 3, torch.device("cpu"))
    assert torch.equal(from_python.predictions, y.argmax(dim=-1))
    assert torch.equal(from_python.predictions, from_tensor.predictions)
    assert from_python.predictions.dtype == from_tensor.predictions.dtype == torch.long
    assert torch.equal(from_python.exit_steps, from_tensor.exit_steps)
    assert from_python.exit_steps.tolist() == [3]
    assert from_python.logits is y


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_sample_result_read_in_python_refuses_non_finite_logits(bad):
    values = [1.0, bad, 2.0, bad]
    with pytest.raises(ValueError, match="expected finite values, found 2 NaN/inf"):
        anytime._single_result(torch.tensor([values]), 1, torch.device("cpu"), values)


def test_a_run_outside_inference_mode_builds_no_graph():
    """``run`` enters inference mode itself when the caller has not (and skips entering it
    again when the caller has): no autograd graph either way."""
    snn = MODELS["converted"]()
    snn.requires_grad_(True)
    rule = make_rule("topk", snn)
    engine = _engine(snn, rule, "full")
    for n in (1, 5):
        x = inputs(3, n).requires_grad_(True)
        outside = engine.run(x)
        with torch.inference_mode():
            inside = engine.run(x.detach())
        assert not outside.logits.requires_grad and outside.logits.is_inference()
        assert torch.equal(outside.logits, inside.logits)


def test_unpaired_strategies_take_turns_after_an_untimed_warm_up_run_each():
    """A machine that warms up over the first batches must not weigh on the strategy timed
    first only: every strategy runs once untimed, then they take turns."""
    chooser = StrategyChooser(trials=2, candidates=UNCHUNKED)
    key = StrategyChooser.key(torch.device("cpu"), 500, False)
    order = []
    while not chooser.settled(key):
        name = chooser.pick(key)
        order.append(name)
        # the first batch of the run is slow whoever runs it
        chooser.record(key, name, 100.0 if len(order) == 1 else 1.0 + UNCHUNKED.index(name))
    rounds = [order[i : i + len(UNCHUNKED)] for i in range(0, len(order), len(UNCHUNKED))]
    # each round starts one strategy later: batches that alternate meet every strategy
    assert rounds == [list(UNCHUNKED[i:] + UNCHUNKED[:i]) for i in range(3)]
    assert all(len(times) == 2 for times in chooser._unit[key].values())
    assert chooser.pick(key) == UNCHUNKED[0]  # its slow first run was the warm-up


def test_chunked_is_judged_at_its_current_plan_over_every_exit_seen():
    """Exits recorded while the plan was one step a call must count at the plan kept."""
    chooser = StrategyChooser(trials=1, candidates=("compact", "chunked"), warmup_runs=0)
    key = StrategyChooser.key(torch.device("cpu"), 500, False)
    exits = torch.tensor([1, 1, 2, 2])  # exits at steps 1-2 of 4
    chooser._plans[key] = (1, 1, 1, 1)
    chooser.record(key, "compact", 1.5, exits, 4)  # mean exit 1.5: 1 s a step
    chooser._plans[key] = (4,)  # the plan grew to one call of all 4 steps
    chooser.record(key, "chunked", 2.0, exits, 4)  # 4 steps a sample: 0.5 s a step
    assert chooser.expected(key, "chunked") == pytest.approx(2.0)  # not 0.5 · (1.5 + 4) / 2
    assert chooser.pick(key) == "compact"
    chooser._plans[key] = (2, 2)
    assert chooser.expected(key, "chunked") == pytest.approx(1.0)  # every exit ends a chunk at 2


def test_compaction_is_not_stopped_for_good_by_noise_between_close_row_counts():
    """Step times at 500 and 480 rows, the smaller one slower by noise: a line through them
    has no slope, which would say compaction never pays and keep the engine at those counts
    for good. Until the counts span a quarter of the largest, the step time counts per row."""
    costs = CompactionCosts()
    costs.step(500, 1.00)
    costs.step(480, 1.02)  # noise
    costs.compaction(0.05)
    assert costs.per_row() == pytest.approx(1.00 / 500)
    assert costs.pays(100, 4)  # saves 0.8 s > 0.05 s
    costs.step(300, 0.99)  # a wide span, and the time does not fall with the rows:
    assert costs.per_row() < 1e-4  # the fitted line: a row costs next to nothing
    # (a launch-bound step), far below the 2 ms a row of the proportional estimate
    assert not costs.pays(100, 4)


def test_chunked_calls_do_not_count_as_step_times_for_compaction():
    snn = MODELS["trained"]()
    rule = make_rule("topk", snn)
    x = inputs(8, 40)
    engine = _engine(snn, rule, "chunked")
    key = StrategyChooser.key(torch.device("cpu"), 40, False)
    assert T % 2 == 0
    engine.chooser._plans[key] = (2,) * (T // 2)
    engine.chooser._settled.add(key)
    engine.run(x)
    costs = engine._costs[("cpu", False)]
    assert costs._steps == {}  # every call ran two steps: no step time was recorded
