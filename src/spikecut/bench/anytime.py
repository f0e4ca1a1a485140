"""Anytime wall-clock: does stopping each sample early really save the time it promises?

For one SNN, exit rule and test split, :func:`measure_anytime` times

* **full-T inference**: the plain ``snn(x[T, B, ...])`` on every batch (all T steps in one
  call) and its answer, the argmax of the summed output (what a user of full-T inference
  computes; a bare call would answer nothing), against
* **anytime inference**: :meth:`spikecut.anytime.AnytimeClassifier.run` on the same
  batches, which drops each sample from the batch when the rule fires,

with the same batch size, after warm-up passes, best of ``repeats`` passes over the whole
split (inputs are loaded onto the device beforehand; operation counting is off). A second
full-T baseline is the same engine run one step at a time with no early exit
(``FixedTimestep(T)``); on CPU the whole-sequence call can be the slower of the two (its
``[T*B, ...]`` activations are T times larger). The report gives the *steps speed-up*
``T / mean exit step`` (what the rule promises) and the *wall-clock speed-up* = the faster
full-T time / the anytime time (what it delivers), so the early exit is never credited with
a slow baseline; ``full_speedup`` and ``stepwise_speedup`` are the ratios to each baseline.

The variants take turns, and each turn's anytime pass is also set against the baselines of
the same turn: a row shows its spread (the lowest and highest wall / steps over the turns)
and in how many turns early exit beat full-T inference. On a noisy machine that count is
what "never slower than full T" can be judged by.

:func:`run_anytime_bench` does this for finished experiments: it rebuilds each run's SNN
from its results folder (:func:`spikecut.experiment.load_run_snn`) and the rule from the
saved Top-K thresholds (calibrating again only for other rules or ε); a guaranteed rule
(``--rule topk-risk``, ``spikecp``, ...) is rebuilt from the run's stored ``guaranteed``
entry, as ``spikecut run`` or ``spikecut calibrate`` left it. Run it as
``python -m spikecut.bench.anytime RESULTS_DIR ... [--rule R] [--out anytime.json]``.
"""

from __future__ import annotations

import argparse
import operator
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._deprecation import renamed_parameters
from .._io import atomic_write_json, atomic_write_text
from ..anytime import AnytimeClassifier
from ..cutoff import (
    GUARANTEED_RULES,
    ExitRule,
    FixedTimestep,
    TopKCutoff,
    make_rule,
    rule_from_dict,
)
from ..fusion import prepare_for_inference
from ..neurons import reset
from ..speed import keep_large_allocations
from .oracle import exit_oracle
from .timing import PhaseClock, interleaved_seconds

__all__ = [
    "measure_anytime",
    "rule_for_run",
    "run_anytime_bench",
    "render_markdown",
    "spread_samples",
    "main",
]


def _load_batches(
    dataset: Dataset, batch_size: int, frames: bool, device: torch.device
) -> list[Tensor]:
    """Every input batch on ``device``: static ``[B, ...]`` or frames ``[T, B, ...]``."""
    batches = []
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batches.append((x.transpose(0, 1) if frames else x).to(device).contiguous())
    if not batches:
        raise ValueError("measure_anytime: the dataset is empty")
    return batches


@torch.inference_mode()
@renamed_parameters(repeat=("frames", operator.not_))
def measure_anytime(
    snn: nn.Module,
    dataset: Dataset,
    rule: ExitRule,
    T: int,
    *,
    frames: bool = False,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    repeats: int = 5,
    warmup: int = 1,
    prepare: bool = True,
    profile: bool = True,
) -> dict[str, Any]:
    """Time full-T against anytime inference of ``snn`` over ``dataset`` (see module doc).

    ``frames=False``: dataset items are static inputs repeated at every step; with
    ``frames=True`` frame sequences ``[T, ...]`` (deprecated: ``repeat``, its negation).
    Returns ``steps_speedup``, ``wall_speedup``, ``ratio``
    (wall / steps, each variant's best pass), ``ratio_turns`` (wall / steps of each turn,
    its anytime pass against the faster baseline of the same turn: the spread),
    ``faster_turns`` (how many turns the anytime pass beat both baselines; of
    ``repeats``), ``stepwise_speedup`` (against T steps one at a time), ``mean_exit``,
    ``full_seconds``, ``anytime_seconds``, ``stepwise_seconds``, ``agreement``
    (fraction of samples whose anytime exit step and prediction equal the offline rule on
    the full-T outputs), ``strategy`` (the engine's choice for the first batch's size),
    ``step_cost_ratio`` (each batch's first step alone against a step of the full-T call,
    its time ÷ T), ``oracle_ratio`` (the wall / steps of the exit oracle,
    :mod:`spikecut.bench.oracle`: the network alone on exactly the rows still running, one
    step a call or in the engine's chunks, whichever was faster; ``oracle_seconds`` its
    time), ``split`` (:func:`time_split`, with ``profile``), ``samples``, ``batch_size``,
    ``device``, ``repeats``. With
    ``prepare`` (the default) every variant runs the network as
    :func:`~spikecut.fusion.prepare_for_inference` returns it.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    device = torch.device(device)
    if device.type == "cpu":
        keep_large_allocations()  # as spikecut runs (spikecut.speed); for every variant alike
    snn = snn.to(device).eval()
    if prepare:  # BN folded, channels-last (spikecut.fusion): the same network for every variant
        snn = prepare_for_inference(snn, time_chunk=None)
    batches = _load_batches(dataset, batch_size, frames, device)
    engine = AnytimeClassifier(snn, rule, T, count_ops=False)  # strategy "auto"
    full_outputs: list[Tensor] = []

    def full() -> None:
        full_outputs.clear()
        for x in batches:
            reset(snn)
            out = snn(x if frames else x.unsqueeze(0).expand(T, *x.shape))
            out.sum(0).argmax(-1)  # the answer
            full_outputs.append(out)
        reset(snn)

    anytime_results: list = []

    def early() -> None:
        anytime_results.clear()
        for x in batches:
            anytime_results.append(engine.run(x, frames=frames))

    stepwise_engine = AnytimeClassifier(snn, FixedTimestep(T), T, count_ops=False, strategy="mask")

    def stepwise() -> None:
        for x in batches:
            stepwise_engine.run(x, frames=frames)

    def first_step() -> None:  # each batch's first step alone: what one network call costs
        for x in batches:
            reset(snn)
            snn((x[0] if frames else x).unsqueeze(0))
        reset(snn)

    for _ in range(_SETTLE_PASSES):  # the engine times its strategies on the first batches
        if all(engine.chooser.settled(k) for k in _keys(engine, batches, frames, device)):
            break
        early()
    full()  # untimed: the full-T outputs whose offline exits the oracle and the agreement read
    cums = [out.float().cumsum(0) for out in full_outputs]
    exits = [rule.exit_steps(cum) for cum in cums]
    oracles = _oracles(snn, engine, batches, exits, T, frames, device)
    # taking turns, so that a load drifting over the run weighs on every variant alike
    calls = [full, early, stepwise, first_step, *oracles]
    turns = interleaved_seconds(calls, device, repeats, warmup)
    full_seconds, anytime_seconds, stepwise_seconds, step_seconds = (min(t) for t in turns[:4])
    oracle_seconds = min(min(t) for t in turns[4:])
    split = None
    if profile:  # the step-by-step path: compacting, or for one sample the single-sample path
        path = "mask" if batch_size == 1 else "compact"
        split = time_split(snn, rule, T, batches, frames, device, strategy=path)

    cum, offline_steps = torch.cat(cums, dim=1), torch.cat(exits)
    offline_pred = cum[offline_steps - 1, torch.arange(cum.shape[1], device=cum.device)].argmax(-1)
    steps = torch.cat([r.exit_steps for r in anytime_results])
    pred = torch.cat([r.predictions for r in anytime_results])
    agreement = ((steps == offline_steps) & (pred == offline_pred)).double().mean().item()
    mean_exit = steps.double().mean().item()
    steps_speedup = T / mean_exit
    # The full-T baseline is the faster of the two ways to run every step.
    wall_speedup = min(full_seconds, stepwise_seconds) / anytime_seconds
    # the spread: each turn's anytime time against the faster baseline of the same turn
    baselines = [min(f, s) for f, s in zip(turns[0], turns[2], strict=True)]
    per_turn = [b / a for b, a in zip(baselines, turns[1], strict=True)]
    return {
        "steps_speedup": steps_speedup,
        "wall_speedup": wall_speedup,
        "ratio": wall_speedup / steps_speedup,
        "ratio_turns": [w / steps_speedup for w in per_turn],
        "faster_turns": sum(w > 1.0 for w in per_turn),
        "mean_exit": mean_exit,
        "full_seconds": full_seconds,
        "anytime_seconds": anytime_seconds,
        "stepwise_seconds": stepwise_seconds,
        "stepwise_speedup": stepwise_seconds / anytime_seconds,
        # one step alone against one step of the full-T call: a step-by-step run's wall /
        # steps is at most its inverse before any cost of the engine (chunks can do better)
        "step_cost_ratio": step_seconds / (full_seconds / T),
        # the network alone on exactly the rows still running (bench.oracle): the wall /
        # steps no engine calling the network in these shapes can pass on this machine
        "oracle_ratio": min(full_seconds, stepwise_seconds) / oracle_seconds / steps_speedup,
        "oracle_seconds": oracle_seconds,
        "full_speedup": full_seconds / anytime_seconds,
        "agreement": agreement,
        "strategy": _chosen(engine, batches, frames, device),
        "split": split,
        "samples": int(steps.shape[0]),
        "batch_size": batch_size,
        "device": str(device),
        "repeats": repeats,
    }


def _oracles(snn, engine, batches, exits, T, frames, device) -> list:
    """The exit-oracle passes (:mod:`spikecut.bench.oracle`) for the offline rule's
    ``exits``: one step a call, and, where the engine chose chunks for a batch's size, its
    chunks."""
    schedules = []
    for x in batches:
        rows = x.shape[1 if frames else 0]
        key = engine.chooser.key(device, rows, frames)
        chunked = engine.chooser.pick(key) == "chunked"
        schedules.append(engine.chooser.plan(key, T, rows, False) if chunked else (1,) * T)
    oracles = [exit_oracle(snn, batches, exits, T, frames=frames)]
    if any(schedule != (1,) * T for schedule in schedules):
        oracles.append(exit_oracle(snn, batches, exits, T, frames=frames, schedules=schedules))
    return oracles


_SETTLE_PASSES = 20  # 4 strategies × (1 untimed + 3 timed) runs, at one batch per pass (digits)
PHASES = ("network", "rule", "compaction", "other")


def spread_samples(dataset: Dataset, count: int, seed: int = 0) -> Subset:
    """``count`` samples spaced evenly over ``dataset`` (all of it when it is smaller), in
    an order shuffled with ``seed``: a stream whose samples come in no particular order.
    The embedded test splits are sorted by label, so their first hundred samples are one
    class, and in split order the engine would choose its strategy on the first classes'
    exits alone."""
    size = len(dataset)
    if count < 1:
        raise ValueError(f"count: expected at least 1 sample, got {count}")
    spread = torch.tensor(
        [i * size // count for i in range(count)] if count < size else range(size)
    )
    order = torch.randperm(len(spread), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, spread[order].tolist())


def _keys(engine, batches, frames, device) -> set[tuple]:
    return {engine.chooser.key(device, x.shape[1 if frames else 0], frames) for x in batches}


def _chosen(engine, batches, frames, device) -> str:
    x = batches[0]
    return engine.chooser.pick(engine.chooser.key(device, x.shape[1 if frames else 0], frames))


def time_split(
    snn: nn.Module,
    rule: ExitRule,
    T: int,
    batches: list[Tensor],
    frames: bool,
    device: torch.device,
    strategy: str = "compact",
) -> dict[str, float]:
    """Seconds of one pass of the step-by-step engine (``strategy``, after a warm-up pass)
    split into network compute, rule evaluation (with the accumulation of ``Y(t)``),
    compaction and the rest (validation, resets, Python), with the device drained at
    every boundary; ``total`` is their sum."""
    engine = AnytimeClassifier(snn, rule, T, count_ops=False, strategy=strategy)
    for x in batches:
        engine.run(x, frames=frames)
    clock = PhaseClock(device)
    for x in batches:
        engine.run(x, frames=frames, clock=clock)
        clock.lap("other")
    split = {phase: clock.seconds.get(phase, 0.0) for phase in PHASES}
    split["total"] = sum(split.values())
    return split


def rule_for_run(
    snn: nn.Module, run: dict, cfg, name: str = "topk", epsilon: float = 0.0
) -> ExitRule:
    """The exit rule of a finished run: Top-K at ε = 0 from its saved β; a guaranteed rule
    (:data:`~spikecut.cutoff.GUARANTEED_RULES`) rebuilt from the run's stored ``guaranteed``
    entry (its calibration on the held-out split, not redone); any other rule or ε is
    calibrated again as the experiment did (calibration split, calibration dropout)."""
    if name in GUARANTEED_RULES:
        stored = {entry["rule"]: entry for entry in run.get("guaranteed") or []}
        if name not in stored:
            raise ValueError(
                f"run {run.get('name')!r} has no stored guaranteed rule {name!r} (stored: "
                f"{', '.join(stored) or 'none'}); calibrate it with `spikecut calibrate "
                f"RESULTS_DIR --rule {name}` (needs a held-out calibration split)"
            )
        return rule_from_dict(stored[name])
    bins = cfg.cutoff.bins
    if name == "topk" and epsilon == 0.0 and run.get("beta") is not None:
        rule = TopKCutoff(epsilon=0.0, bins=bins)
        rule.beta = torch.tensor(run["beta"], dtype=torch.float32)
        return rule
    from ..data import get_dataset
    from ..evaluate import calibration_cum_logits
    from ..experiment import dataset_options, is_frame_dataset

    data = cfg.data
    opts = dataset_options(cfg, progress=False)
    calibration = get_dataset(data.name, data.root, split="train", augment=False, **opts)
    cal_logits, cal_labels = calibration_cum_logits(
        snn,
        calibration,
        cfg.T,
        dropout=cfg.cutoff.calibration_dropout,
        seed=run.get("seed", cfg.seed),
        batch_size=cfg.batch_size_eval,
        progress=False,
        frames=is_frame_dataset(calibration),
    )
    params = {"bins": bins} if name == "topk" else {}
    return make_rule(name, epsilon, **params).calibrate(cal_logits, cal_labels)


def run_anytime_bench(
    results_dirs: Sequence[str | Path],
    *,
    device: str = "cpu",
    quick: bool = False,
    rule: str = "topk",
    epsilon: float = 0.0,
    runs: Sequence[str] | None = None,
    batch_size: int | None = None,
    repeats: int | None = None,
    single_samples: int = 100,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Anytime wall-clock rows for every run of every finished experiment folder.

    Each row: ``experiment``, ``run``, ``rule``, ``epsilon``, ``steps_speedup``,
    ``wall_speedup`` and the rest of :func:`measure_anytime`'s keys. ``quick`` measures
    only each experiment's first run, best of 2 instead of 5. ``batch_size`` defaults to
    the experiment's ``batch_size_eval``. A second row per run has batch 1 (one sample
    streamed at a time) over ``single_samples`` test samples spread evenly over the split,
    in a shuffled order (:func:`spread_samples`).
    """
    from ..data import get_dataset
    from ..experiment import dataset_options, is_frame_dataset, load_run_snn
    from ..report import load_results

    rows = []
    for folder in results_dirs:
        folder = Path(folder)
        results = load_results(folder / "results.json")
        names = list(runs) if runs is not None else [r["name"] for r in results["runs"]]
        if quick:
            names = names[:1]
        test = None
        for run_name in names:
            snn, run, cfg = load_run_snn(folder, run_name)
            if test is None:
                data, opts = cfg.data, dataset_options(cfg, progress=False)
                test = get_dataset(data.name, data.root, split="test", augment=False, **opts)
            stored = {e["rule"] for e in run.get("guaranteed") or []}
            if rule in GUARANTEED_RULES and rule not in stored:
                log(
                    f"{results['experiment']} / {run_name}: skipped, no stored {rule!r} "
                    "(a run without a held-out split, or calibrated without it)"
                )
                continue
            exit_rule = rule_for_run(snn, run, cfg, rule, epsilon)
            measured = measure_anytime(
                snn,
                test,
                exit_rule,
                cfg.T,
                frames=is_frame_dataset(test),
                batch_size=batch_size or cfg.batch_size_eval,
                device=device,
                repeats=repeats or (2 if quick else 5),
            )
            row = {
                "experiment": results["experiment"],
                "run": run_name,
                "rule": rule,
                "epsilon": float(epsilon),
                **measured,
            }
            log(
                f"{row['experiment']} / {run_name}: {rule} ε={epsilon:g} steps "
                f"{row['steps_speedup']:.2f}x, wall {row['wall_speedup']:.2f}x "
                f"(ratio {row['ratio']:.2f}; against stepwise full-T "
                f"{row['stepwise_speedup']:.2f}x; {row['strategy']})"
            )
            rows.append(row)
            single = measure_anytime(
                snn,
                spread_samples(test, single_samples),
                exit_rule,
                cfg.T,
                frames=is_frame_dataset(test),
                batch_size=1,
                device=device,
                repeats=repeats or (2 if quick else 5),  # noisier than a batch: as many turns
            )
            row = {**row, **single}
            log(
                f"{row['experiment']} / {run_name}: batch 1 ({single['samples']} samples) steps "
                f"{row['steps_speedup']:.2f}x, wall {row['wall_speedup']:.2f}x "
                f"(ratio {row['ratio']:.2f}, {row['strategy']})"
            )
            rows.append(row)
    return rows


def turn_range(row: dict[str, Any]) -> str:
    """The lowest and highest wall / steps over a row's turns (``n/a`` for a row measured
    before turns were kept)."""
    turns = row.get("ratio_turns")
    return f"{min(turns):.2f}–{max(turns):.2f}" if turns else "n/a"


def turns_faster(row: dict[str, Any]) -> str:
    """In how many turns the anytime pass beat full-T inference, as ``k/n``."""
    turns = row.get("ratio_turns")
    return f"{row['faster_turns']}/{len(turns)}" if turns else "n/a"


def render_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| Experiment | Run | Batch | Rule | ε | Steps speed-up | Wall-clock speed-up "
        "| Wall / steps | Per turn | Turns faster | vs stepwise full-T | One step alone "
        "| Exit oracle | Agreement % | Strategy | Device |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | --- | --- |",
    ]
    for r in rows:
        step, oracle = r.get("step_cost_ratio"), r.get("oracle_ratio")
        lines.append(
            f"| {r['experiment']} | {r['run']} | {r['batch_size']} | {r['rule']} | "
            f"{r['epsilon']:g} | {r['steps_speedup']:.2f}× | {r['wall_speedup']:.2f}× | "
            f"{r['ratio']:.2f} | {turn_range(r)} | {turns_faster(r)} | "
            f"{r['stepwise_speedup']:.2f}× | "
            f"{'n/a' if step is None else f'{step:.2f}×'} | "
            f"{'n/a' if oracle is None else f'{oracle:.2f}'} | {100 * r['agreement']:.2f} | "
            f"{r.get('strategy', '')} | {r['device']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spikecut.bench.anytime",
        description="Wall-clock of full-T against anytime (early-exit) inference of finished runs.",
    )
    parser.add_argument("results", nargs="+", help="experiment output folders (results.json)")
    parser.add_argument("--rule", default="topk", help="exit rule (default: topk)")
    parser.add_argument("--epsilon", type=float, default=0.0, help="the rule's ε (default: 0)")
    parser.add_argument("--device", default="cpu", help="device (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: batch_size_eval")
    parser.add_argument("--repeats", type=int, default=None, help="best of N passes (default 5)")
    parser.add_argument("--quick", action="store_true", help="first run only, best of 2")
    parser.add_argument("--out", type=Path, default=None, help="write rows to this JSON file")
    args = parser.parse_args(argv)
    rows = run_anytime_bench(
        args.results,
        device=args.device,
        quick=args.quick,
        rule=args.rule,
        epsilon=args.epsilon,
        batch_size=args.batch_size,
        repeats=args.repeats,
    )
    table = render_markdown(rows)
    print(table, end="")
    if args.out is not None:
        environment = {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
        }
        atomic_write_json(args.out, {"anytime": rows, "environment": environment})
        atomic_write_text(args.out.with_suffix(".md"), table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
