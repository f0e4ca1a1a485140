"""snnTorch networks as spikecut networks.

snnTorch runs a network one step at a time (``for t: spk = net(x[t])``) with every neuron built
with ``init_hidden=True``, so the network's forward is the per-step computation. Mapped exactly:
``snntorch.Leaky`` with its ``beta`` (clamped to [0, 1] as snnTorch does), ``threshold``,
``reset_mechanism`` (``subtract``, ``zero``, ``none``), ``reset_delay`` (snnTorch applies the reset
one step late by default), ``graded_spikes_factor`` and ``output=True`` on the last layer (the
read-out: its spikes, or its membrane with ``readout="membrane"``). Learnable ``beta`` and
``threshold`` are copied as constants. Torch layers are kept. Refused, with module and reason:
``init_hidden=False`` (the state is threaded through the user's own time loop), per-neuron
``beta``/``threshold`` that differ between neurons, lateral inhibition, state quantisation,
spike functions whose forward is not the Heaviside step, and every other snnTorch neuron
(Synaptic, Alpha, Lapicque, RLeaky, RSynaptic, SLSTM, ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..neurons import SpikingNetwork
from .adapt import (
    Decision,
    InteropError,
    Refuse,
    Replace,
    adapt_network,
    check_outputs,
    probe_heaviside,
)
from .neuron import MirroredLIF

__all__ = ["from_snntorch", "snntorch_outputs"]

_RESETS = {"subtract": "subtract", "zero": "value", "none": "none"}


def _import():
    try:
        import snntorch
        from snntorch import utils
    except ImportError as err:
        raise ImportError(
            "from_snntorch needs snnTorch: pip install --no-deps snntorch (its other "
            f"requirements are not needed here); import failed: {err}"
        ) from err
    return snntorch, utils


def _one_value(value, what: str) -> tuple[float | None, str | None]:
    """A layer-wide float from a scalar or tensor parameter, or why there is none."""
    tensor = torch.as_tensor(value).detach().float()
    if tensor.numel() == 0:
        return None, f"{what} is empty"
    first = tensor.flatten()[0]
    if tensor.numel() > 1 and not bool((tensor == first).all()):
        return None, (f"{what} differs between neurons; spikecut neurons have one {what} per layer")
    return float(first), None


def _leaky(node, readout: str | None) -> Decision:
    if not node.init_hidden:
        return Refuse(
            "init_hidden=False: its membrane is passed through the network's own time loop, "
            "which the adapter cannot follow; build it with init_hidden=True"
        )
    if node.inhibition:
        return Refuse("lateral inhibition (only the strongest neuron may fire) is not mapped")
    if node.state_quant:
        return Refuse("state quantisation (state_quant) is not mapped")
    if node.output and readout is None:
        return Refuse(
            "output=True returns (spikes, membrane); only the last module of the network may "
            "do so (it is the read-out)"
        )
    if probe_heaviside(node.spike_grad) is not False:
        return Refuse("its spike_grad does not compute 1[x > 0] in forward")
    beta, problem = _one_value(node.beta.clamp(0, 1), "beta")
    threshold, problem2 = _one_value(node.threshold, "threshold")
    amplitude, problem3 = _one_value(node.graded_spikes_factor, "graded_spikes_factor")
    reason = problem or problem2 or problem3
    if reason:
        return Refuse(reason)
    if not threshold > 0:
        return Refuse(f"threshold {threshold:g} is not positive")
    return Replace(
        MirroredLIF(
            threshold,
            style="snntorch",
            charge="leak",
            leak=beta,
            reset=_RESETS[node.reset_mechanism],
            fire_at_equal=False,
            reset_delay=bool(node.reset_delay),
            amplitude=amplitude,
            emit="membrane" if readout == "membrane" else "spikes",
        )
    )


def _last_path(net: nn.Module) -> str | None:
    """The path of the module whose output is the network's output (a Sequential's last)."""
    path = None
    while isinstance(net, nn.Sequential) and len(net):
        name = list(net._modules)[-1]
        path = name if path is None else f"{path}.{name}"
        net = net[-1]
    return path


def _mapper(snntorch, net: nn.Module, readout: str):
    readout_path = _last_path(net)

    def decide(module: nn.Module, path: str) -> Decision | None:
        kind = type(module)
        if not kind.__module__.startswith("snntorch"):
            return None
        if kind is snntorch.Leaky:
            is_readout = path == readout_path
            return _leaky(module, readout if is_readout else None)
        return Refuse(
            "an snnTorch neuron or layer with no exact spikecut equivalent (mapped: Leaky)"
        )

    return decide


def from_snntorch(
    net: nn.Module, *, readout: str = "spikes", example: Tensor | None = None
) -> SpikingNetwork:
    """A spikecut network with ``net``'s weights and dynamics; ``net`` is left unchanged.

    ``net`` is an snnTorch network run one step at a time; the result maps ``[T, B, ...]`` to
    the per-step outputs ``[T, B, ...]`` of that loop (max abs difference <= 1e-6). When the
    last module is a ``Leaky`` with ``output=True`` (snnTorch then returns spikes and
    membrane), ``readout`` picks which one is the output: ``"spikes"`` or ``"membrane"``.
    With ``example`` (a time-major input) both networks are run and compared.

    Raises:
        InteropError: naming every module that cannot be mapped exactly, and why.
    """
    if readout not in ("spikes", "membrane"):
        raise ValueError(f"readout must be 'spikes' or 'membrane', got {readout!r}")
    snntorch, _ = _import()
    snn = adapt_network(net, "snnTorch", _mapper(snntorch, net, readout))
    if example is not None:
        check_outputs(snn, snntorch_outputs(net, example, readout=readout), example, "snnTorch")
    return snn


def snntorch_outputs(net: nn.Module, x: Tensor, *, readout: str = "spikes") -> Tensor:
    """Per-step outputs ``[T, B, ...]`` of an snnTorch network on ``x`` ``[T, B, ...]``: the
    usual loop over steps, state reset before and after. A ``(spikes, membrane)`` output
    gives the one ``readout`` names."""
    _, utils = _import()
    utils.reset(net)
    outputs = []
    with torch.no_grad():
        for x_t in x:
            out = net(x_t)
            if isinstance(out, tuple):
                out = out[0] if readout == "spikes" else out[1]
            outputs.append(out)
    utils.reset(net)
    if not outputs:
        raise InteropError("snntorch_outputs: the input has no time steps")
    return torch.stack(outputs)
