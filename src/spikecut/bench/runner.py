"""``spikecut bench``: run the simulation benchmark (and the anytime one) and write the results.

The results are one JSON file (``benchmarks/results/latest.json`` by default)::

    {"simulation": [{"net", "library", "mode", "samples_steps_per_s", "peak_mem_mb"}, ...],
     "anytime": [{"experiment", "rule", "epsilon", "steps_speedup", "wall_speedup"}, ...],
     "ratios": [...], "breakdown": [...], "agreement": [...], "missing_peers": {...},
     "peers": {...},
     "config": {...}, "machine": {...}, "memory_method": str, "notes": [...]}

and a markdown rendering of it beside it (``latest.md``). Both are written atomically.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .._io import atomic_write_json, atomic_write_text
from .._markdown import markdown_table
from .breakdown import measure_breakdown
from .simulation import (
    SimulationConfig,
    check_agreement,
    machine_info,
    measure_simulation,
    memory_method,
    peer_versions,
    speed_ratios,
)

__all__ = ["run_bench", "run_anytime", "render_markdown", "ANYTIME_DRIVER"]

# The anytime benchmark lives in spikecut.bench.anytime; this is the function called there:
# ANYTIME_DRIVER(results_dirs: list[str], *, device: str, quick: bool, rule: str) -> list[dict]
ANYTIME_DRIVER = "run_anytime_bench"


def run_anytime(
    results_dirs: Sequence[str | Path], *, device: str, quick: bool, rule: str = "topk"
) -> tuple[list[dict], str | None]:
    """The anytime wall-clock rows with exit rule ``rule`` (a guaranteed rule is rebuilt
    from each run's stored calibration), or ``[]`` and a note saying why there are none."""
    try:
        module = importlib.import_module("spikecut.bench.anytime")
    except ImportError as err:
        return [], f"anytime benchmark missing: spikecut.bench.anytime cannot be imported ({err})"
    driver = getattr(module, ANYTIME_DRIVER, None)
    if driver is None:
        return [], f"anytime benchmark missing: spikecut.bench.anytime has no {ANYTIME_DRIVER}()"
    if not results_dirs:
        return [], "anytime benchmark not run: give finished experiments with --results DIR ..."
    dirs = [str(d) for d in results_dirs]
    return list(driver(dirs, device=device, quick=quick, rule=rule)), None


def run_bench(
    out: str | Path,
    *,
    quick: bool = False,
    device: str = "cpu",
    results_dirs: Sequence[str | Path] = (),
    threads: int | None = None,
    config: SimulationConfig | None = None,
    log: Callable[[str], None] = print,
    rule: str = "topk",
    memory: bool = False,
) -> dict:
    """Run the benchmarks and write ``out`` (JSON) and ``out`` with suffix ``.md``.

    ``config`` overrides the simulation settings (``quick``/``device``/``threads`` are then
    ignored for it). ``rule`` is the anytime benchmark's exit rule (Top-K at ε = 0 by
    default; a guaranteed rule such as ``topk-risk`` is rebuilt from each run's stored
    calibration). ``memory`` adds the memory section (:mod:`spikecut.bench.memory`).
    Returns the results written.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if config is None:
        overrides = (
            {"device": device} if threads is None else {"device": device, "threads": threads}
        )
        config = SimulationConfig.quick(**overrides) if quick else SimulationConfig(**overrides)
    started = time.time()
    previous_threads = torch.get_num_threads()
    try:
        return _run(out, config, quick, results_dirs, started, log, rule, memory)
    finally:
        torch.set_num_threads(previous_threads)  # the benchmark's setting stays inside it


def _run(
    out,
    config: SimulationConfig,
    quick: bool,
    results_dirs,
    started: float,
    log,
    rule: str,
    memory: bool = False,
) -> dict:
    torch.set_num_threads(config.threads)  # the anytime part runs with the same threads
    rows, missing = measure_simulation(config, log)
    notes = [f"{lib} missing: {reason}" for lib, reason in missing.items()]
    agreement = []
    for net in config.nets:
        agreement += check_agreement(
            net, config.libraries, scale=min(config.scale, 0.25), device=config.device
        )
    anytime, note = run_anytime(results_dirs, device=config.device, quick=quick, rule=rule)
    if note:
        notes.append(note)
        log(note)
    results = {
        "simulation": rows,
        "anytime": anytime,
        "ratios": speed_ratios(rows),
        "breakdown": measure_breakdown(rows, config, log),
        "agreement": agreement,
        "missing_peers": missing,
        "peers": peer_versions(),
        "config": config.to_dict(),
        "machine": machine_info(config.device),
        "memory_method": memory_method(torch.device(config.device)),
        "seconds": round(time.time() - started, 1),
        "notes": notes,
    }
    if memory:
        from .memory import memory_section

        results["memory"] = memory_section(quick=quick, device=config.device, log=log)
    out = Path(out)
    atomic_write_json(out, results)
    atomic_write_text(out.with_suffix(".md"), render_markdown(results))
    return results


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _split(split: dict | None) -> str:
    """The step-by-step engine's time split as percentages (``—`` when not profiled)."""
    if not split or not split.get("total"):
        return "—"
    parts = (split.get(k, 0.0) / split["total"] for k in ("network", "rule", "compaction", "other"))
    return " / ".join(f"{100 * p:.0f}%" for p in parts)


def render_markdown(results: dict) -> str:
    """The results as markdown tables (for the README and ``latest.md``)."""
    cfg, machine = results["config"], results["machine"]
    lines = [
        "# Simulation benchmark",
        "",
        f"Batch {cfg['batch']}, T = {cfg.get('T', cfg.get('steps'))}, width scale {cfg['scale']}, "
        f"{cfg['device']}, {machine['torch_threads']} torch thread(s), torch {machine['torch']}, "
        f"{machine['processor']} ({machine['cpus_available']} CPUs available); best of "
        f"{cfg['repeats']} after {cfg['warmup']} warm-up call(s).",
        "",
    ]
    rows = [
        [r["net"], r["mode"], r["library"], _fmt(r["samples_steps_per_s"]), _fmt(r["peak_mem_mb"])]
        for r in results["simulation"]
    ]
    rows += [
        ["—", "—", library, "MISSING", reason.split(";")[0]]
        for library, reason in results["missing_peers"].items()
    ]
    header = ["net", "mode", "library", "samples·steps/s", "peak memory (MiB)"]
    lines.append(markdown_table(header, rows, numeric_from=3))
    if results["ratios"]:
        lines += [
            "",
            "spikecut against the fastest peer (SpikingJelly, snnTorch) in the same run:",
            "",
        ]
        rows = []
        for r in results["ratios"]:
            stepwise = "—"
            if "stepwise_speed_ratio" in r:
                stepwise = (
                    f"{_fmt(r['stepwise_speed_ratio'], 2)}×, {_fmt(r['stepwise_memory_ratio'], 2)}"
                )
            rows.append(
                [
                    r["net"],
                    r["mode"],
                    r["fastest_peer"],
                    f"{_fmt(r['speed_ratio'], 2)}×",
                    _fmt(r["memory_ratio"], 2),
                    f"{_fmt(r.get('speed_ratio_vs_loop'), 2)}×",
                    f"{_fmt(r.get('dense_ratio'), 2)}",
                    stepwise,
                ]
            )
        header = ["net", "mode", "fastest peer", "speed ratio", "memory ratio (vs least)"]
        header += ["vs hand loop", "of dense limit", "stepwise: speed, memory"]
        lines.append(markdown_table(header, rows, numeric_from=3))
    if results.get("breakdown"):
        lines += [
            "",
            "Where spikecut's time goes, against the dense limit (the same layers as a ReLU "
            "ANN on all T·B inputs in one call): the neurons' share of one profiled call "
            "(LIF forward and, in training, its BPTT backward), and the rest (layers, loss "
            "and their backward) against the dense limit's time:",
            "",
        ]
        rows = [
            [
                r["net"],
                r["mode"],
                f"{1e3 * r['seconds']:.1f}",
                f"{100 * r['neuron_share']:.0f}%",
                f"{1e3 * r['rest_seconds']:.1f}",
                f"{1e3 * r['dense_seconds']:.1f}",
                f"{r['rest_over_dense']:.2f}",
                f"{r['dense_ratio']:.2f}",
            ]
            for r in results["breakdown"]
        ]
        header = ["net", "mode", "spikecut (ms)", "neurons", "rest (ms)", "dense limit (ms)"]
        header += ["rest / dense", "of dense limit"]
        lines.append(markdown_table(header, rows, numeric_from=2))
    if results["agreement"]:
        lines += [
            "",
            "Same weights, same input: largest logit difference against spikecut (inference) and "
            "relative input-gradient difference (training; snnTorch detaches its reset, so its "
            "gradients differ by design):",
            "",
        ]
        rows = [
            [
                r["net"],
                r["library"],
                f"{r['max_abs_diff']:.2e}",
                "n/a" if r["grad_rel_diff"] is None else format(r["grad_rel_diff"], ".2e"),
            ]
            for r in results["agreement"]
        ]
        header = ["net", "library", "max logit diff", "grad rel diff"]
        lines.append(markdown_table(header, rows, numeric_from=2))
    lines += ["", f"Peak memory: {results['memory_method']}.", ""]
    lines += ["# Anytime wall-clock", ""]
    if results["anytime"]:
        from .anytime import turn_range, turns_faster

        lines += [
            "Full-T inference (the faster of one whole-sequence call and T single steps, "
            "with its answer) against the anytime engine over the test split (batch 1: one "
            "sample streamed at a time over test samples spread evenly over the split); "
            "target: wall / steps ≥ 0.85. Strategy: the "
            "engine's measured choice (compact, mask, full or chunked). The split is one "
            "profiled pass of the step-by-step path (compacting; at batch 1 the single-sample "
            "path). One step alone: a one-step call of the network against a step of the "
            "full-T call (its time ÷ T); a step-by-step run's wall / steps is at most its "
            "inverse before any cost of the engine, and only chunks can beat that. Exit "
            "oracle: the wall / steps of the network alone run on exactly the rows still "
            "running (their exits known in advance: no rule, no compaction, no bookkeeping), "
            "one step a call or in the engine's chunks, whichever was faster; what early exit "
            "could deliver on this network and machine, set against what the engine "
            "delivers. Per turn: "
            "the lowest and highest wall / steps when each of the interleaved turns' anytime "
            "pass is set against the same turn's full-T passes; turns faster: in how many of "
            "them the anytime pass was the faster (the machine's noise, made visible).",
            "",
        ]
        rows = [
            [
                r["experiment"],
                r.get("run", ""),
                str(r.get("batch_size", "")),
                r["rule"],
                f"{r['epsilon']:g}",
                f"{r['steps_speedup']:.2f}×",
                f"{r['wall_speedup']:.2f}×",
                f"{r['wall_speedup'] / r['steps_speedup']:.2f}",
                turn_range(r),
                turns_faster(r),
                _fmt(r.get("step_cost_ratio"), 2) + ("×" if r.get("step_cost_ratio") else ""),
                _fmt(r.get("oracle_ratio"), 2),
                r.get("strategy", ""),
                _split(r.get("split")),
            ]
            for r in results["anytime"]
        ]
        header = ["experiment", "run", "batch", "rule", "ε", "steps speed-up"]
        header += ["wall-clock speed-up", "wall / steps", "per turn", "turns faster"]
        header += ["one step alone", "exit oracle", "strategy"]
        header += ["step path: network / rule / compaction / rest"]
        lines.append(markdown_table(header, rows, numeric_from=4))
    else:
        lines.append("No anytime results.")
    if results["notes"]:
        lines += ["", *[f"* {note}" for note in results["notes"]]]
    if results.get("memory"):
        from .memory import render_memory

        lines += ["", render_memory(results["memory"])]
    return "\n".join(lines) + "\n"
