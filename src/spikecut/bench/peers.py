"""The benchmark's simulators: one SNN per library, built from a copy of the same ANN.

Every library gets the same neuron: LIF with λ = 0.5, θ = 1, hard reset to 0, arctan
surrogate (α = 2). ``spikecut`` (and its one-step-per-call variant ``spikecut-stepwise``),
``spikingjelly`` (multi-step ``LIFNode`` with ``SeqToANNContainer``), ``snntorch``
(``snn.Leaky`` in a per-step loop) and ``pytorch-loop`` (a hand-written per-step loop). The
peers are optional: :func:`build_simulator` raises :class:`PeerMissing` when one is not
installed. Each simulator maps ``x[T, B, ...]`` to logits ``[T, B, K]`` from a fresh state.
"""

from __future__ import annotations

import copy
import importlib

import torch
from torch import Tensor, nn

from ..neurons import LIF, ArcTan, SpikingNetwork, reset

__all__ = [
    "DENSE",
    "LIBRARIES",
    "INFERENCE_ONLY",
    "DenseSimulator",
    "PEERS",
    "PeerMissing",
    "SpikecutSimulator",
    "SpikecutStepwiseSimulator",
    "build_simulator",
    "peer_versions",
]

DENSE = "dense-ann"
LIBRARIES = ("spikecut", "spikecut-stepwise", "spikingjelly", "snntorch", "pytorch-loop", DENSE)
INFERENCE_ONLY = ("spikecut-stepwise",)
PEERS = ("spikingjelly", "snntorch")
LEAK, THRESHOLD, ATAN_ALPHA = 0.5, 1.0, 2.0


class PeerMissing(RuntimeError):
    """A peer library is not installed (it is an optional extra)."""


def _layers(ann: nn.Sequential) -> list[nn.Module]:
    return [copy.deepcopy(m) for m in ann]


def _stateless_groups(ann: nn.Sequential) -> list[list[nn.Module] | None]:
    """The ANN's layers as runs of stateless layers, with ``None`` where a ReLU stood."""
    groups: list[list[nn.Module] | None] = []
    current: list[nn.Module] = []
    for layer in _layers(ann):
        if isinstance(layer, nn.ReLU):
            groups += [current, None]
            current = []
        else:
            current.append(layer)
    groups.append(current)
    return [g for g in groups if g is None or g]


class _Simulator(nn.Module):
    """``forward(x[T, B, ...]) -> logits [T, B, K]`` from a fresh state every call."""


class SpikecutSimulator(_Simulator):
    def __init__(self, ann: nn.Sequential) -> None:
        super().__init__()
        body = [
            LIF(threshold=THRESHOLD, leak=LEAK, reset="hard", surrogate=ArcTan(ATAN_ALPHA))
            if isinstance(layer, nn.ReLU)
            else layer
            for layer in _layers(ann)
        ]
        self.net = SpikingNetwork(nn.Sequential(*body))

    def forward(self, x: Tensor) -> Tensor:
        reset(self.net)
        return self.net(x)


class SpikecutStepwiseSimulator(SpikecutSimulator):
    """spikecut fed one step per call, as the anytime engine runs it: the activations of one
    step are alive at a time, so memory is that of a per-step loop."""

    def forward(self, x: Tensor) -> Tensor:
        reset(self.net)
        return torch.cat([self.net(x[t : t + 1]) for t in range(x.shape[0])])


class SpikingJellySimulator(_Simulator):
    def __init__(self, ann: nn.Sequential) -> None:
        super().__init__()
        _, layer, neuron, surrogate = _import_spikingjelly()
        modules: list[nn.Module] = []
        for group in _stateless_groups(ann):
            if group is None:
                modules.append(
                    neuron.LIFNode(
                        tau=1.0 / (1.0 - LEAK),
                        decay_input=False,
                        v_threshold=THRESHOLD,
                        v_reset=0.0,
                        surrogate_function=surrogate.ATan(alpha=ATAN_ALPHA),
                        detach_reset=False,
                        step_mode="m",
                    )
                )
            else:
                modules.append(layer.SeqToANNContainer(*group))
        self.net = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        functional = _import_spikingjelly()[0]
        functional.reset_net(self.net)
        return self.net(x)


class SnnTorchSimulator(_Simulator):
    def __init__(self, ann: nn.Sequential) -> None:
        super().__init__()
        snn, surrogate = _import_snntorch()
        self.layers = nn.ModuleList(
            snn.Leaky(
                beta=LEAK,
                threshold=THRESHOLD,
                reset_mechanism="zero",
                spike_grad=surrogate.atan(alpha=ATAN_ALPHA),
            )
            if isinstance(layer, nn.ReLU)
            else layer
            for layer in _layers(ann)
        )
        self._leaky = snn.Leaky

    def forward(self, x: Tensor) -> Tensor:
        neurons = [m for m in self.layers if isinstance(m, self._leaky)]
        for m in neurons:
            m.reset_mem()
        outputs = []
        for x_t in x:
            for m in self.layers:
                x_t = m(x_t)[0] if isinstance(m, self._leaky) else m(x_t)
            outputs.append(x_t)
        return torch.stack(outputs)


class PyTorchLoopSimulator(_Simulator):
    """What one would write by hand: a per-step loop over the network, the LIF inline."""

    def __init__(self, ann: nn.Sequential) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_layers(ann))
        self.spike = ArcTan(ATAN_ALPHA)

    def forward(self, x: Tensor) -> Tensor:
        membranes: dict[int, Tensor] = {}
        outputs = []
        for x_t in x:
            for i, m in enumerate(self.layers):
                if isinstance(m, nn.ReLU):
                    u = LEAK * membranes[i] + x_t if i in membranes else x_t
                    x_t = self.spike(u - THRESHOLD)
                    membranes[i] = u * (1.0 - x_t)
                else:
                    x_t = m(x_t)
            outputs.append(x_t)
        return torch.stack(outputs)


class DenseSimulator(_Simulator):
    """The dense limit: the same net as a plain ReLU ANN on all ``T·B`` inputs in one call
    (no neuron recurrence, no state). Not an SNN: its logits differ; it bounds what any
    simulator of the same layers can reach on the machine."""

    def __init__(self, ann: nn.Sequential) -> None:
        super().__init__()
        self.net = nn.Sequential(*_layers(ann))

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


_SIMULATORS: dict[str, type[_Simulator]] = {
    "spikecut": SpikecutSimulator,
    "spikecut-stepwise": SpikecutStepwiseSimulator,
    "spikingjelly": SpikingJellySimulator,
    "snntorch": SnnTorchSimulator,
    "pytorch-loop": PyTorchLoopSimulator,
    DENSE: DenseSimulator,
}


def _import_spikingjelly():
    try:
        base = "spikingjelly.activation_based"
        return tuple(
            importlib.import_module(f"{base}.{name}")
            for name in ("functional", "layer", "neuron", "surrogate")
        )
    except ImportError as err:
        raise PeerMissing(
            f"spikingjelly is not installed ({err}); install the peers with "
            "`pip install --no-deps spikingjelly snntorch loguru`"
        ) from err


def _import_snntorch():
    try:
        return importlib.import_module("snntorch"), importlib.import_module("snntorch.surrogate")
    except ImportError as err:
        raise PeerMissing(
            f"snntorch is not installed ({err}); install the peers with "
            "`pip install --no-deps spikingjelly snntorch loguru`"
        ) from err


def build_simulator(library: str, ann: nn.Sequential) -> nn.Module:
    """``library``'s SNN built from a copy of ``ann``'s weights (ReLU → that library's LIF).

    Raises:
        ValueError: unknown library.
        PeerMissing: the peer library is not installed.
    """
    if library not in _SIMULATORS:
        raise ValueError(f"unknown library {library!r}; expected one of {list(LIBRARIES)}")
    return _SIMULATORS[library](ann)


def peer_versions() -> dict[str, str | None]:
    """Installed version of each peer library, ``None`` where it is missing."""
    versions: dict[str, str | None] = {}
    for name in PEERS:
        try:
            versions[name] = str(getattr(importlib.import_module(name), "__version__", "unknown"))
        except ImportError:
            versions[name] = None
    return versions
