"""Memory section of ``spikecut bench``: peak memory of ResNet-20 against T (issue 15).

Four passes over one fixed batch of random 3×32×32 images, at each T:

* ``inference`` — :func:`spikecut.evaluate.collect_cum_logits` on the QCFS-converted
  ResNet-20 (``to_snn``), as a run's test pass;
* ``calibration`` — :func:`spikecut.evaluate.calibration_cum_logits` (dropout after every
  neuron), as a run's calibration pass;
* ``training`` — one BPTT step (forward, TET loss, backward) of the directly trained
  ResNet-20 (LIF neurons, TEBN) in training mode;
* ``training+checkpoint`` — the same step with ``time_checkpoint`` chunks
  (:mod:`spikecut.time_checkpoint`; BatchNorm statistics per chunk, ``checkpoint_norms=
  "chunk"``, since TEBN's statistics pool over time).

Each point runs in a fresh Python process: after one warm-up call, the peak is the growth of
the resident set's high-water mark over the resident set before the measured call (glibc
set to return every freed block of 64 KiB or more, and trimmed first), or on CUDA
``torch.cuda.max_memory_allocated`` above the memory allocated before it. The model, its
weights and the input are allocated before, so they do not count; the result is what the
pass itself needs. Calls are also timed (best of ``repeats``): wall-clock seconds, and on the
CPU the process's CPU seconds, which a machine shared with other jobs disturbs less.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import torch

from .simulation import status_mb, tune_glibc
from .timing import synchronize

__all__ = [
    "PASSES",
    "MemoryConfig",
    "measure_memory",
    "memory_ratios",
    "memory_section",
    "render_memory",
]

PASSES = ("inference", "calibration", "training", "training+checkpoint")
CLASSES = 10


@dataclass(frozen=True)
class MemoryConfig:
    """Sizes of the memory section. ``batch``: images per inference/calibration pass;
    ``train_batch``: images per training step; ``checkpoint_steps``: steps per checkpointed
    chunk; ``threads``: torch threads in each measuring process (one by default: glibc's
    per-thread arenas would otherwise add noise to the resident set); ``repeats``: timed
    calls after the warm-up (the first is also the one whose memory is measured)."""

    Ts: tuple[int, ...] = (4, 8, 16, 32, 64)
    batch: int = 16
    train_batch: int = 8
    checkpoint_steps: int = 4
    device: str = "cpu"
    threads: int = 1
    repeats: int = 2
    seed: int = 0

    @classmethod
    def quick(cls, **overrides) -> MemoryConfig:
        """Seconds, not minutes: two values of T, batches of 2."""
        sizes = dict(Ts=(2, 8), batch=2, train_batch=2, checkpoint_steps=2, repeats=1)
        return cls(**{**sizes, **overrides})

    def to_dict(self) -> dict:
        return {**asdict(self), "Ts": list(self.Ts)}


# --------------------------------------------------------------------------- one point


def _converted_resnet20(device: torch.device) -> torch.nn.Module:
    from ..convert import to_snn
    from ..models import create

    ann = create("resnet20", num_classes=CLASSES, activation="qcfs", levels=4, threshold=8.0)
    return to_snn(ann.eval()).to(device)


def _trainable_resnet20(T: int, device: torch.device) -> torch.nn.Module:
    from ..convert import to_trainable_snn
    from ..models import create
    from ..speed import channels_last_convolutions

    ann = create("resnet20", num_classes=CLASSES, activation="relu")
    snn = to_trainable_snn(ann, tebn=True, T=T).to(device).train()
    if device.type == "cpu":
        channels_last_convolutions(snn)  # as the trainer runs it on the CPU
    return snn


def _pass_call(name: str, T: int, cfg: MemoryConfig, device: torch.device) -> Callable[[], None]:
    """The call whose peak memory is measured (everything it needs is allocated here)."""
    from ..evaluate import calibration_cum_logits, collect_cum_logits
    from ..losses import snn_loss
    from ..neurons import reset

    g = torch.Generator().manual_seed(cfg.seed)
    if name in ("inference", "calibration"):
        snn = _converted_resnet20(device)
        images = torch.rand(cfg.batch, 3, 32, 32, generator=g)
        labels = torch.randint(0, CLASSES, (cfg.batch,), generator=g)
        data = torch.utils.data.TensorDataset(images, labels)
        collect = collect_cum_logits if name == "inference" else calibration_cum_logits
        kwargs = dict(batch_size=cfg.batch, device=str(device), progress=False)
        return lambda: collect(snn, data, T, **kwargs)
    if name not in PASSES:
        raise ValueError(f"unknown pass {name!r}; expected one of {', '.join(PASSES)}")
    snn = _trainable_resnet20(T, device)
    if name == "training+checkpoint":
        snn.time_checkpoint, snn.checkpoint_norms = cfg.checkpoint_steps, "chunk"
    x = torch.rand(cfg.train_batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, CLASSES, (cfg.train_batch,), generator=g).to(device)
    sequence = x.unsqueeze(0).expand(T, *x.shape)

    def step() -> None:
        snn.zero_grad(set_to_none=True)
        reset(snn)
        snn_loss("tet", snn(sequence), y).backward()

    return step


def _timed(call: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _measure(call: Callable[[], None], device: torch.device, repeats: int) -> dict:
    """Peak MiB above the memory before one call (after a warm-up), and the best wall and
    CPU seconds of ``repeats`` calls."""
    call()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        from ..speed import glibc

        glibc().malloc_trim(0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset the high-water mark to the current resident set
        before = status_mb("VmRSS")
    times = [_timed(call, device)]
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    else:
        peak = max(0.0, status_mb("VmHWM") - before)
    times += [_timed(call, device) for _ in range(repeats - 1)]
    return {
        "peak_mb": round(peak, 1),
        "seconds": round(min(t[0] for t in times), 3),
        "cpu_seconds": round(min(t[1] for t in times), 3),
    }


def measure_point(name: str, T: int, cfg: MemoryConfig) -> dict:
    """One row: pass ``name`` at ``T`` measured in this process (the child's work)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    if device.type == "cpu" and not tune_glibc():
        raise RuntimeError("CPU peak memory needs glibc's mallopt (Linux); not available here")
    measured = _measure(_pass_call(name, T, cfg, device), device, cfg.repeats)
    training = name.startswith("training")
    return {
        "pass": name,
        "T": T,
        "batch": cfg.train_batch if training else cfg.batch,
        "time_checkpoint": cfg.checkpoint_steps if name == "training+checkpoint" else None,
        "device": cfg.device,
        **measured,
    }


def _point_in_child(name: str, T: int, cfg: MemoryConfig) -> dict:
    payload = json.dumps({"pass": name, "T": T, "config": cfg.to_dict()})
    command = [sys.executable, "-m", "spikecut.bench.memory", payload]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"memory point {name} at T={T} failed in its process (exit {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the section


def measure_memory(
    cfg: MemoryConfig, log: Callable[[str], None] = print, passes: Sequence[str] = PASSES
) -> list[dict]:
    """Each of ``passes`` at every T of ``cfg``, one fresh process per point."""
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ValueError(f"unknown pass(es) {unknown}; expected some of {', '.join(PASSES)}")
    rows = []
    for name in passes:
        for T in cfg.Ts:
            row = _point_in_child(name, T, cfg)
            log(
                f"memory: {name:<20} T={T:<3} {row['peak_mb']:>9.1f} MiB "
                f"{row['seconds']:>8.3f} s ({row['cpu_seconds']:.3f} CPU s)"
            )
            rows.append(row)
    return rows


def memory_ratios(rows: list[dict]) -> list[dict]:
    """The ratios issue 15 sets targets for: inference and calibration peak at the largest
    T against the smallest (≤ 1.5), checkpointed training at T = 32 (or the largest T)
    against the smallest (≤ 2), and plain against checkpointed training at the largest T."""
    peak = {(r["pass"], r["T"]): r["peak_mb"] for r in rows}
    Ts = sorted({r["T"] for r in rows})
    low, high = Ts[0], Ts[-1]
    train_high = 32 if 32 in Ts else high
    wanted = [
        ("inference", high, "inference", low, 1.5),
        ("calibration", high, "calibration", low, 1.5),
        ("training+checkpoint", train_high, "training+checkpoint", low, 2.0),
        ("training", high, "training+checkpoint", high, None),
    ]
    ratios = []
    for name, T, base_name, base_T, target in wanted:
        value, base = peak.get((name, T)), peak.get((base_name, base_T))
        if value is None or not base:
            continue
        ratios.append(
            {
                "pass": name,
                "T": T,
                "against": f"{base_name} T={base_T}",
                "ratio": round(value / base, 2),
                "target": target,
                "met": None if target is None else value / base <= target,
            }
        )
    return ratios


def memory_method(device: str) -> str:
    """How the peaks were measured (recorded with the results)."""
    if device.startswith("cuda"):
        return "torch.cuda.max_memory_allocated above the allocation before the call"
    return (
        "CPU resident-set high-water mark (VmHWM, reset via /proc/self/clear_refs) above the "
        "resident set before the call, after a warm-up call; glibc mmap threshold 64 KiB"
    )


def memory_section(
    *,
    quick: bool = False,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    passes: Sequence[str] = PASSES,
    **sizes,
) -> dict:
    """The memory section of the bench results: config, rows, ratios, method. ``sizes``
    override fields of :class:`MemoryConfig`."""
    cfg = MemoryConfig.quick(device=device) if quick else MemoryConfig(device=device)
    cfg = replace(cfg, **sizes)
    rows = measure_memory(cfg, log, passes)
    return {
        "config": cfg.to_dict(),
        "rows": rows,
        "ratios": memory_ratios(rows),
        "method": memory_method(device),
    }


def render_memory(section: dict) -> str:
    """The section as markdown: peak memory (and time) per pass against T, then the ratios."""
    from .._markdown import markdown_table

    cfg, rows = section["config"], section["rows"]
    cpu = not cfg["device"].startswith("cuda")
    clock = "process CPU seconds" if cpu else "wall-clock seconds"
    Ts = sorted({r["T"] for r in rows})
    cell = {(r["pass"], r["T"]): r for r in rows}
    lines = [
        "# Memory against T",
        "",
        f"ResNet-20 on 3×32×32, {cfg['device']}: inference and calibration (converted, QCFS) "
        f"at batch {cfg['batch']}; one training step (direct, LIF + TEBN, TET loss) at batch "
        f"{cfg['train_batch']}, with time checkpointing in chunks of {cfg['checkpoint_steps']} "
        f"steps. Peak memory of the pass in MiB ({clock} of the pass, best of "
        f"{cfg['repeats']}).",
        "",
    ]
    table = []
    for name in PASSES:
        cells = []
        for T in Ts:
            r = cell.get((name, T))
            if r is None:
                cells.append("—")
                continue
            seconds = r["cpu_seconds"] if cpu else r["seconds"]
            cells.append(f"{r['peak_mb']:,.1f} ({seconds:.2f} s)")
        table.append([name, *cells])
    lines.append(markdown_table(["pass", *[f"T = {T}" for T in Ts]], table, numeric_from=1))
    if section["ratios"]:
        lines += ["", "Peak-memory ratios (issue 15 targets):", ""]
        table = [
            [
                f"{r['pass']} T={r['T']}",
                r["against"],
                f"{r['ratio']:.2f}×",
                "—" if r["target"] is None else f"≤ {r['target']:g}×",
                "—" if r["met"] is None else ("yes" if r["met"] else "NO"),
            ]
            for r in section["ratios"]
        ]
        lines.append(
            markdown_table(["peak of", "against", "ratio", "target", "met"], table, numeric_from=2)
        )
    lines += ["", f"Peak memory: {section['method']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # one point in its own process: JSON in, one JSON row out
    _args = json.loads(sys.argv[1])
    _cfg = dict(_args["config"], Ts=tuple(_args["config"]["Ts"]))
    print(json.dumps(measure_point(_args["pass"], int(_args["T"]), MemoryConfig(**_cfg))))
