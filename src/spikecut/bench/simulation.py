"""Simulation speed and memory of one spiking network in spikecut and in peer libraries.

The networks are in :mod:`spikecut.bench.networks`, the libraries' simulators in
:mod:`spikecut.bench.peers`; this module measures them. The same ANN (plain PyTorch with
ReLU) is defined once; each library builds its SNN from a copy of the same weights, with
the same neuron: LIF with λ = 0.5, θ = 1, hard reset to 0, arctan surrogate (α = 2). The
libraries:

* ``spikecut`` — :class:`~spikecut.neurons.SpikingNetwork`: layers on the ``[T·B, ...]``
  fold, the neuron's recurrence in one call per layer;
* ``spikecut-stepwise`` (inference only) — the same network fed one step per call, as the
  anytime engine runs it: slower, but only one step's activations are alive at a time;
* ``spikingjelly`` — multi-step ``LIFNode(tau=2, decay_input=False, v_reset=0)`` with the
  stateless layers in ``SeqToANNContainer`` (also the ``[T·B, ...]`` fold);
* ``snntorch`` — ``snn.Leaky(beta=0.5, reset_mechanism="zero")`` in a per-step loop, as in
  its tutorials (it applies the reset one step late, which gives the same spikes, and it
  detaches the reset from the gradient);
* ``pytorch-loop`` — a hand-written per-step loop in plain PyTorch.

Throughput is samples·steps per second (``B·T`` / seconds per batch), best of ``repeats``
after ``warmup`` calls, all libraries in one process on the same input. Training is
forward + backward of the cross-entropy of the mean logits, every library as it comes.
Inference runs under ``torch.inference_mode()`` on the BatchNorm-folded network, for every
library alike; spikecut's network also goes through its own
:func:`~spikecut.fusion.prepare_for_inference` (channels-last convolution weights). In
training spikecut's network has channels-last convolution weights, as spikecut's trainers set
on the CPU. The timing process keeps freed large blocks for reuse
(:func:`spikecut.speed.keep_large_allocations`, which spikecut's trainers apply on the CPU);
the setting is process-wide, so every library is timed under it.

Peak memory is the growth of memory during one call (the larger of two calls), measured in a
child process (``python -m spikecut.bench.simulation``) so that the allocator settings it needs
never slow down the timings of the calling process. On CUDA:
``max_memory_allocated`` above what was allocated before the call. On Linux CPUs: the
resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) above the
resident set before the call, with glibc told to serve every block of 64 KiB or more by
``mmap`` so that freed tensors leave the resident set at once (otherwise earlier calls would
hide later peaks). Elsewhere the figure is not available and is reported as ``None``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._deprecation import renamed_parameters, warn_deprecated
from ..fusion import fold_batchnorm, prepare_for_inference
from ..neurons import SpikingNetwork
from ..speed import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    channels_last_convolutions,
    glibc,
    keep_large_allocations,
)
from . import timing
from .networks import NETS, build_ann
from .peers import (
    DENSE,
    INFERENCE_ONLY,
    LIBRARIES,
    PEERS,
    PeerMissing,
    SpikecutSimulator,
    build_simulator,
    peer_versions,
)

__all__ = [
    "LIBRARIES",
    "PEERS",
    "NETS",
    "SimulationConfig",
    "PeerMissing",
    "build_ann",
    "build_simulator",
    "peer_versions",
    "measure_simulation",
    "check_agreement",
    "measure_memory",
    "speed_ratios",
    "machine_info",
]


# --------------------------------------------------------------------------- measurement


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class SimulationConfig:
    """What the simulation benchmark runs; ``quick()`` is the CI/laptop-sized version.

    ``T`` is the number of timesteps (``steps`` is its deprecated keyword and attribute).
    """

    nets: tuple[str, ...] = ("conv28", "vgg32")
    libraries: tuple[str, ...] = LIBRARIES
    modes: tuple[str, ...] = ("inference", "training")
    batch: int = 64
    T: int = 8
    scale: float = 1.0
    warmup: int = 2
    repeats: int = 5
    device: str = "cpu"
    threads: int = field(default_factory=lambda: available_cpus())
    seed: int = 0

    @classmethod
    def quick(cls, **overrides) -> SimulationConfig:
        """Batch 16 and half-width nets, one warm-up and three timed calls."""
        return cls(**{"batch": 16, "scale": 0.5, "warmup": 1, "repeats": 3, **overrides})

    @property
    def steps(self) -> int:
        """Deprecated name of :attr:`T`."""
        warn_deprecated("SimulationConfig.steps", "SimulationConfig.T")
        return self.T

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, settings: dict) -> SimulationConfig:
        """The config :meth:`to_dict` wrote (an old ``"steps"`` key is read as ``T``)."""
        settings = dict(settings)
        if "steps" in settings and "T" not in settings:
            settings["T"] = settings.pop("steps")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})


# The old keyword keeps working for one release (a dataclass __init__ is generated, so the
# rename is wrapped around it here).
SimulationConfig.__init__ = renamed_parameters(steps="T")(SimulationConfig.__init__)  # type: ignore[method-assign]


_tuned = False


def tune_glibc() -> bool:
    """Make glibc hand every block of 64 KiB or more back to the OS when it is freed (see the
    module doc). Process-wide, so it is done only in the memory-measurement process."""
    global _tuned
    libc = glibc()
    if not _tuned and libc is not None:
        _tuned = (
            libc.mallopt(M_MMAP_THRESHOLD, 65536) == 1
            and libc.mallopt(M_TRIM_THRESHOLD, 65536) == 1
        )
    return _tuned


def status_mb(key: str) -> float:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise OSError(f"/proc/self/status has no {key}")


def memory_method(device: torch.device) -> str:
    """How :func:`peak_memory_mb` measures on ``device`` (recorded in the results)."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated above the allocation before the call"
    if glibc() is not None and os.path.exists("/proc/self/clear_refs"):  # tuned in the child
        return (
            "CPU resident-set high-water mark (VmHWM, reset via /proc/self/clear_refs) above "
            "the resident set before the call; glibc mmap threshold 64 KiB"
        )
    return "unavailable on this platform"


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory growth (MiB) while ``fn()`` runs; ``None`` where it cannot be measured."""
    if device.type == "cuda":
        timing.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        timing.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not tune_glibc():
        return None
    glibc().malloc_trim(0)  # return freed heap pages, so that reusing them counts as growth
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        before = status_mb("VmRSS")
        fn()
        return max(0.0, status_mb("VmHWM") - before)
    except OSError:
        return None


def _inference_call(model: nn.Module, x: Tensor) -> Callable[[], object]:
    def call() -> None:
        with torch.inference_mode():
            model(x)

    return call


def _training_call(model: nn.Module, x: Tensor, labels: Tensor) -> Callable[[], object]:
    params = [p for p in model.parameters() if p.requires_grad]

    def call() -> None:
        for p in params:
            p.grad = None
        loss = F.cross_entropy(model(x).mean(0), labels)
        loss.backward()

    return call


def _prepared(library: str, ann: nn.Sequential, mode: str, device: torch.device) -> nn.Module:
    if mode == "inference":
        model = build_simulator(library, fold_batchnorm(ann.eval())).eval()
        model.requires_grad_(False)
        if isinstance(model, SpikecutSimulator):  # spikecut's own inference preparation
            model.net = prepare_for_inference(model.net)
        elif library == DENSE and device.type == "cpu":
            channels_last_convolutions(model.net)  # the dense limit in its fastest layout
    else:
        model = build_simulator(library, ann).train()
        if library in ("spikecut", DENSE) and device.type == "cpu":
            channels_last_convolutions(model.net)  # what spikecut's trainers do on the CPU
    return model.to(device)


def _inputs(cfg: SimulationConfig, net: str, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(cfg.seed)
    shape = NETS[net][1]
    image = torch.rand(cfg.batch, *shape, generator=generator) * 2.0
    labels = torch.randint(0, 10, (cfg.batch,), generator=generator)
    x = image.unsqueeze(0).expand(cfg.T, *image.shape).contiguous()  # direct encoding
    return x.to(device), labels.to(device)


def measure_simulation(
    cfg: SimulationConfig, log: Callable[[str], None] = lambda _: None
) -> tuple[list[dict], dict[str, str]]:
    """Time, then measure the memory of, every (net, library, mode) of ``cfg`` in this process.

    Per (net, mode) the libraries take turns call by call. Memory is measured afterwards in
    a child process: the measurement changes how glibc allocates, which would slow down
    whatever this process runs next.
    Returns the result rows ``{"net", "library", "mode", "samples_steps_per_s",
    "peak_mem_mb"}`` and ``{library: reason}`` for the peers that are missing.
    """
    if cfg.threads < 1:
        raise ValueError(f"threads must be >= 1, got {cfg.threads}")
    for mode in cfg.modes:
        if mode not in ("inference", "training"):
            raise ValueError(f"mode must be 'inference' or 'training', got {mode!r}")
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if device.type == "cpu":
        # spikecut's trainers keep freed large blocks for reuse (spikecut.speed); the setting
        # is process-wide, so every library below is timed under it alike.
        keep_large_allocations()
    rows: list[dict] = []
    missing: dict[str, str] = {}
    chunked: dict[str, SpikingNetwork] = {}
    for net, mode, group in _groups(cfg, device, missing, log, chunked=chunked):
        for _, call in group:
            call()  # first call: lazy initialisation (and "auto" time chunks resolved)
        seconds = timing.best_seconds_interleaved(
            [call for _, call in group], device, cfg.repeats, cfg.warmup
        )
        for (library, _), sec in zip(group, seconds, strict=True):
            rows.append(
                {
                    "net": net,
                    "library": library,
                    "mode": mode,
                    "samples_steps_per_s": cfg.batch * cfg.T / sec,
                    "peak_mem_mb": None,
                }
            )
    measured = {(r["net"], r["mode"], r["library"]) for r in rows}
    present = tuple(lib for lib in cfg.libraries if any(k[2] == lib for k in measured))
    # the child runs spikecut's inference in the chunks timed here: their size depends on
    # the allocator setting, which the child's memory measurement cannot share
    chunks = {net: network.resolved_time_chunk for net, network in chunked.items()}
    memory = _memory_in_child(replace(cfg, libraries=present), chunks)
    for row in rows:
        row["peak_mem_mb"] = memory.get((row["net"], row["mode"], row["library"]))
        mem = "n/a" if row["peak_mem_mb"] is None else f"{row['peak_mem_mb']:.1f} MiB"
        speed = row["samples_steps_per_s"]
        log(f"{row['net']:7s} {row['mode']:9s} {row['library']:17s} {speed:10.1f}/s {mem}")
    return rows, missing


def measure_memory(cfg: SimulationConfig, chunks: dict[str, int] | None = None) -> list[dict]:
    """Peak memory of every (net, mode, library) of ``cfg``, measured in *this* process;
    spikecut's inference runs in ``chunks[net]`` steps a call where given (else "auto").

    It changes glibc's allocation settings for the rest of the process; call it through
    :func:`_memory_in_child` (``python -m spikecut.bench.simulation CONFIG_JSON CHUNKS``).
    """
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    rows = []
    for net, mode, group in _groups(cfg, device, {}, lambda _: None, chunks=chunks):
        for library, call in group:
            call()
            measured = [peak_memory_mb(call, device) for _ in range(2)]
            peak = None if None in measured else max(measured)
            rows.append({"net": net, "mode": mode, "library": library, "peak_mem_mb": peak})
    return rows


def _memory_in_child(
    cfg: SimulationConfig, chunks: dict[str, int] | None = None
) -> dict[tuple[str, str, str], float | None]:
    """:func:`measure_memory` run in a fresh Python process; keyed by (net, mode, library)."""
    command = [
        sys.executable,
        "-m",
        "spikecut.bench.simulation",
        json.dumps(cfg.to_dict()),
        json.dumps(chunks or {}),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"the memory measurement process failed (exit {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}"
        )
    return {(r["net"], r["mode"], r["library"]): r["peak_mem_mb"] for r in json.loads(done.stdout)}


def _groups(
    cfg: SimulationConfig,
    device: torch.device,
    missing: dict[str, str],
    log,
    *,
    chunks: dict[str, int] | None = None,
    chunked: dict[str, SpikingNetwork] | None = None,
):
    """``(net, mode, [(library, call), ...])`` for every (net, mode), in a fixed order.
    spikecut's inference network runs in ``chunks[net]`` steps a call where given, and is
    put into ``chunked[net]`` (to read the chunks its "auto" came to)."""
    for net in cfg.nets:
        ann = build_ann(net, cfg.scale, cfg.seed)
        x, labels = _inputs(cfg, net, device)
        for mode in cfg.modes:
            group = []
            for library in cfg.libraries:
                if library in missing or (mode == "training" and library in INFERENCE_ONLY):
                    continue
                try:
                    model = _prepared(library, ann, mode, device)
                except PeerMissing as err:
                    missing[library] = str(err)
                    log(f"{library}: MISSING ({err})")
                    continue
                if mode == "inference":
                    if library == "spikecut":  # not the stepwise one: it calls one step
                        if chunks and chunks.get(net) is not None:
                            model.net.time_chunk = chunks[net]
                        if chunked is not None:
                            chunked[net] = model.net
                    group.append((library, _inference_call(model, x)))
                else:
                    group.append((library, _training_call(model, x, labels)))
            yield net, mode, group
            del group


def speed_ratios(rows: list[dict]) -> list[dict]:
    """Per (net, mode): spikecut's throughput and memory against the fastest peer's."""
    ratios = []
    keys = sorted({(r["net"], r["mode"]) for r in rows})
    for net, mode in keys:
        group = {r["library"]: r for r in rows if r["net"] == net and r["mode"] == mode}
        ours = group.get("spikecut")
        peers = [group[p] for p in PEERS if p in group]
        if ours is None or not peers:
            continue
        fastest = max(peers, key=lambda r: r["samples_steps_per_s"])
        entry = {
            "net": net,
            "mode": mode,
            "fastest_peer": fastest["library"],
            "speed_ratio": ours["samples_steps_per_s"] / fastest["samples_steps_per_s"],
            "memory_ratio": None,
        }
        peer_memory = [r["peak_mem_mb"] for r in peers if r["peak_mem_mb"]]
        if ours["peak_mem_mb"] is not None and peer_memory:
            entry["memory_ratio"] = ours["peak_mem_mb"] / min(peer_memory)
        if "pytorch-loop" in group:
            loop = group["pytorch-loop"]["samples_steps_per_s"]
            entry["speed_ratio_vs_loop"] = ours["samples_steps_per_s"] / loop
        if DENSE in group:  # the share of the dense limit that spikecut reaches
            entry["dense_ratio"] = ours["samples_steps_per_s"] / group[DENSE]["samples_steps_per_s"]
        stepwise = group.get("spikecut-stepwise")
        if stepwise is not None:
            entry["stepwise_speed_ratio"] = (
                stepwise["samples_steps_per_s"] / fastest["samples_steps_per_s"]
            )
            entry["stepwise_memory_ratio"] = None
            if stepwise["peak_mem_mb"] is not None and peer_memory:
                entry["stepwise_memory_ratio"] = stepwise["peak_mem_mb"] / min(peer_memory)
        ratios.append(entry)
    return ratios


# --------------------------------------------------------------------------- agreement


@renamed_parameters(steps="T")
def check_agreement(
    net: str,
    libraries: tuple[str, ...] = LIBRARIES,
    *,
    batch: int = 4,
    T: int = 6,
    scale: float = 0.25,
    device: str = "cpu",
) -> list[dict]:
    """Do the libraries compute the same network? One row per library against spikecut.

    Inference: the per-step logits of every library on the same weights and input
    (``max_abs_diff``; a spike that flips on a rounding difference at the threshold shows
    up here). Training: the input gradient of the same loss relative to spikecut's largest
    (``grad_rel_diff``), for the libraries that let the gradient flow through the reset as
    spikecut does (snnTorch detaches it, so its gradients differ by design and are not
    compared).
    """
    cfg = SimulationConfig(batch=batch, T=T, scale=scale, device=device)
    ann = build_ann(net, scale)
    dev = torch.device(device)
    x, labels = _inputs(cfg, net, dev)
    outputs: dict[str, Tensor] = {}
    grads: dict[str, Tensor] = {}
    for library in libraries:
        if library == DENSE:  # a ReLU ANN: not the same network, nothing to agree on
            continue
        try:
            model = _prepared(library, ann, "inference", dev)
            with torch.inference_mode():
                outputs[library] = model(x).clone()
            model = _prepared(library, ann.eval(), "training", dev).eval()
        except PeerMissing:
            continue
        xg = x.clone().requires_grad_()
        F.cross_entropy(model(xg).mean(0), labels).backward()
        grads[library] = xg.grad
    if "spikecut" not in outputs:
        return []
    reference, reference_grad = outputs["spikecut"], grads["spikecut"]
    rows = []
    for library, out in outputs.items():
        row = {
            "net": net,
            "library": library,
            "max_abs_diff": float((out - reference).abs().max()),
            "grad_rel_diff": None,
        }
        if library != "snntorch":
            scale = float(reference_grad.abs().max())
            diff = float((grads[library] - reference_grad).abs().max())
            row["grad_rel_diff"] = diff / scale if scale > 0 else float(diff > 0)
        rows.append(row)
    return rows


def machine_info(device: str = "cpu") -> dict:
    """Where the numbers were taken."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus_available": available_cpus(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


if __name__ == "__main__":  # the memory measurement's child process: config JSON in, rows out
    _config = SimulationConfig.from_dict(json.loads(sys.argv[1]))
    _chunks = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
    print(json.dumps(measure_memory(_config, _chunks)))
