"""Where spikecut's simulation time goes, against the dense limit.

The dense limit (:data:`~spikecut.bench.peers.DENSE`) is the same network as a ReLU ANN on
all ``T·B`` inputs in one call. spikecut runs the same layers on the same ``[T·B, ...]``
fold; what it adds is the neurons: the LIF recurrence over T steps in the forward pass and,
in training, its BPTT backward over the saved membranes. :func:`measure_breakdown` profiles
one call of spikecut per (net, mode) and splits its time into

* ``neuron`` — every LIF forward (a ``record_function`` range around each neuron) and, in
  training, every ``_LIFSequence`` backward node: the part with no counterpart in an ANN;
* ``rest`` — the layers, the loss and their backward,

as shares of the profiled call, applied to the unprofiled best time. ``rest / dense`` near 1
says the layers run as fast as in the dense limit, so the remaining gap to it is the neuron
recurrence itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ..neurons import spiking_layers
from . import timing
from .networks import build_ann
from .peers import DENSE
from .simulation import _inference_call, _inputs, _prepared, _training_call

__all__ = ["NEURON_RANGE", "measure_breakdown", "neuron_share"]

NEURON_RANGE = "spikecut.neuron"
BACKWARD_NODE = "_LIFSequenceBackward"


def neuron_share(model: torch.nn.Module, call: Callable[[], object], device: torch.device) -> float:
    """The fraction of one profiled ``call()`` spent in ``model``'s neurons (forward and
    BPTT backward)."""
    neurons = spiking_layers(model)
    if not neurons:
        raise ValueError("neuron_share: the model has no spikecut neurons to attribute time to")
    for neuron in neurons:  # an instance attribute shadows the class's forward
        neuron.forward = _labelled(type(neuron).forward.__get__(neuron))
    try:
        call()  # untimed: first calls pay one-off costs
        activities = [ProfilerActivity.CPU]
        with profile(activities=activities) as prof:
            total = timing.seconds(call, device)
    finally:
        for neuron in neurons:
            del neuron.forward
    spent = 0.0
    for event in prof.key_averages():
        # the node's own event; "autograd::engine::evaluate_function: ..." wraps the same time
        if event.key in (NEURON_RANGE, BACKWARD_NODE):
            spent += event.cpu_time_total / 1e6
    return min(1.0, spent / total) if total > 0 else 0.0


def _labelled(forward: Callable) -> Callable:
    def run(x):
        with record_function(NEURON_RANGE):
            return forward(x)

    return run


def measure_breakdown(
    rows: list[dict], cfg, log: Callable[[str], None] = lambda _: None
) -> list[dict]:
    """Per (net, mode) of ``cfg`` with both spikecut and the dense limit among ``rows``
    (:func:`~spikecut.bench.simulation.measure_simulation`'s): spikecut's seconds per call,
    its neuron share, the rest, the dense limit's seconds, and ``rest_over_dense``."""
    speed = {(r["net"], r["mode"], r["library"]): r["samples_steps_per_s"] for r in rows}
    device = torch.device(cfg.device)
    out = []
    for net in cfg.nets:
        ann = build_ann(net, cfg.scale, cfg.seed)
        x, labels = _inputs(cfg, net, device)
        for mode in cfg.modes:
            ours, dense = speed.get((net, mode, "spikecut")), speed.get((net, mode, DENSE))
            if ours is None or dense is None:
                continue
            model = _prepared("spikecut", ann, mode, device)
            call = (
                _inference_call(model, x)
                if mode == "inference"
                else _training_call(model, x, labels)
            )
            share = neuron_share(model, call, device)
            seconds = cfg.batch * cfg.T / ours
            dense_seconds = cfg.batch * cfg.T / dense
            rest = seconds * (1.0 - share)
            row = {
                "net": net,
                "mode": mode,
                "seconds": seconds,
                "neuron_share": share,
                "neuron_seconds": seconds * share,
                "rest_seconds": rest,
                "dense_seconds": dense_seconds,
                "rest_over_dense": rest / dense_seconds,
                "dense_ratio": dense_seconds / seconds,
            }
            log(
                f"{net} {mode}: neurons {100 * share:.0f}% of spikecut's time; the rest "
                f"{rest * 1e3:.1f} ms against the dense limit's {dense_seconds * 1e3:.1f} ms"
            )
            out.append(row)
    return out
