"""SpikingJelly (``spikingjelly.activation_based``) networks as spikecut networks.

Mapped exactly: ``neuron.IFNode``, ``LIFNode`` (``tau``, ``decay_input``), ``ParametricLIFNode``
(its current ``w``, as a constant), ``HalfThresholdIFNode``, ``SimpleIFNode``, ``SimpleLIFNode``,
with hard reset to ``v_reset`` or soft reset (``v_reset=None``), firing at ``h >= v_threshold``
as SpikingJelly does; the stateless wrappers of ``layer`` (Conv, Linear, pooling, Flatten,
BatchNorm, ...) become their torch layers; ``SeqToANNContainer``, ``MultiStepContainer`` and
``StepModeContainer`` become ``nn.Sequential``; ``layer.Dropout`` becomes ``nn.Dropout``
(identical in eval mode; in training spikecut draws a mask per step, SpikingJelly one per
sequence). Single-step and multi-step models map alike. Refused, with the module and reason:
other neurons (adaptive, nonlinear, multi-compartment, parallel), surrogates whose forward is
not the Heaviside step, reduced-precision neuron state, recurrent and time-last containers and
any other SpikingJelly module with memory.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..neurons import SpikingNetwork
from .adapt import (
    Decision,
    Descend,
    Refuse,
    Replace,
    adapt_network,
    check_outputs,
    probe_heaviside,
    torch_base_copy,
)
from .neuron import MirroredLIF

__all__ = ["from_spikingjelly", "spikingjelly_outputs"]

# Thin wrappers in spikingjelly.activation_based.layer: a torch layer plus `step_mode`.
_THIN_WRAPPERS = {
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Upsample",
    "GroupNorm",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "Linear",
    "Flatten",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
}
_SEQUENTIAL_CONTAINERS = {"SeqToANNContainer", "MultiStepContainer", "StepModeContainer"}
_DROPOUTS = {"Dropout": nn.Dropout, "Dropout2d": nn.Dropout2d}


def _import():
    try:
        from spikingjelly.activation_based import base, functional, layer, neuron
    except ImportError as err:
        raise ImportError(
            "from_spikingjelly needs SpikingJelly: pip install --no-deps spikingjelly loguru "
            f"(its other requirements are not needed here); import failed: {err}"
        ) from err
    return base, functional, layer, neuron


def _torch_base(cls: type) -> type[nn.Module] | None:
    for parent in cls.__mro__[1:]:
        if parent.__module__.startswith("torch.nn.modules"):
            return parent
    return None


def _neuron_common(node) -> tuple[dict, str | None]:
    """Threshold, reset and firing of any SpikingJelly BaseNode; or the reason it won't map."""
    fires_at_equal = probe_heaviside(node.surrogate_function)
    if fires_at_equal is None:
        return {}, (
            "its surrogate_function does not compute the Heaviside step in forward (spiking "
            "mode off, or a custom function), so its outputs are not spikes"
        )
    if getattr(node, "_neuron_precision", None) is not None:
        return {}, "it keeps its state in reduced precision (set_neuron_precision)"
    soft = node.v_reset is None
    return {
        "threshold": float(node.v_threshold),
        "style": "spikingjelly",
        "reset": "subtract" if soft else "value",
        "v_reset": 0.0 if soft else float(node.v_reset),
        "v_init": 0.0 if soft else float(node.v_reset),
        "fire_at_equal": fires_at_equal,
    }, None


def _neuron(node, neuron) -> Decision | None:
    kind = type(node)
    exact = {
        getattr(neuron, name, None): name
        for name in (
            "IFNode",
            "LIFNode",
            "ParametricLIFNode",
            "HalfThresholdIFNode",
            "SimpleIFNode",
            "SimpleLIFNode",
        )
    }
    name = exact.get(kind)
    if name is None:
        return None
    params, problem = _neuron_common(node)
    if problem:
        return Refuse(problem)
    if name in ("IFNode", "SimpleIFNode"):
        params["charge"] = "integrate"
    elif name == "HalfThresholdIFNode":
        params.update(charge="integrate", v_init=float(node.v_threshold) / 2.0)
    elif name == "LIFNode":
        params.update(charge="tau_decay_input" if node.decay_input else "tau", tau=float(node.tau))
    elif name == "SimpleLIFNode":
        params.update(
            charge="simple_tau_decay_input" if node.decay_input else "simple_tau",
            tau=float(node.tau),
        )
    else:  # ParametricLIFNode: the learned w, as a constant
        if node.w.numel() != 1:
            return Refuse("its learnable w has one value per neuron; spikecut neurons have one")
        params.update(
            charge="rate_decay_input" if node.decay_input else "rate",
            rate=float(node.w.detach().float().sigmoid()),
        )
    return Replace(MirroredLIF(**params))


def _mapper(base, layer, neuron):
    def decide(module: nn.Module, path: str) -> Decision | None:
        kind = type(module)
        if not kind.__module__.startswith("spikingjelly"):
            return None
        mapped = _neuron(module, neuron)
        if mapped is not None:
            return mapped
        name = kind.__name__
        from_layer = kind.__module__.startswith("spikingjelly.activation_based.layer")
        if from_layer and name in _THIN_WRAPPERS and getattr(layer, name, None) is kind:
            return Replace(torch_base_copy(module, _torch_base(kind)))
        if from_layer and name in _SEQUENTIAL_CONTAINERS and getattr(layer, name, None) is kind:
            return Descend(as_sequential=True)
        if from_layer and name in _DROPOUTS and getattr(layer, name, None) is kind:
            return Replace(_DROPOUTS[name](module.p))
        if name.startswith("TLast"):
            return Refuse("time-last layout [B, ..., T]; spikecut networks are time-major")
        if "Recurrent" in name:
            return Refuse("recurrent container: its output feeds back into its input")
        if isinstance(module, getattr(neuron, "BaseNode", ())) or "Node" in name:
            return Refuse(
                "a neuron model with no exact spikecut equivalent (mapped: IFNode, LIFNode, "
                "ParametricLIFNode, HalfThresholdIFNode, SimpleIFNode, SimpleLIFNode)"
            )
        if isinstance(module, base.MemoryModule):
            return Refuse("a SpikingJelly module with memory across steps that is not mapped")
        return Refuse("a SpikingJelly module the adapter does not know")

    return decide


def from_spikingjelly(net: nn.Module, *, example: Tensor | None = None) -> SpikingNetwork:
    """A spikecut network with ``net``'s weights and dynamics; ``net`` is left unchanged.

    The result maps ``[T, B, ...]`` to per-step outputs ``[T, B, ...]`` whether ``net`` is a
    single-step or a multi-step model, and gives its outputs (max abs difference <= 1e-6).
    With ``example`` (a time-major input) both networks are run and compared; a difference
    raises :class:`~spikecut.interop.InteropError` (a forward that reshapes time itself, say).

    Raises:
        InteropError: naming every module that cannot be mapped exactly, and why.
    """
    base, _, layer, neuron = _import()
    snn = adapt_network(net, "SpikingJelly", _mapper(base, layer, neuron))
    if example is not None:
        check_outputs(snn, spikingjelly_outputs(net, example), example, "SpikingJelly")
    return snn


def spikingjelly_outputs(net: nn.Module, x: Tensor) -> Tensor:
    """Per-step outputs ``[T, B, ...]`` of a SpikingJelly network on ``x`` ``[T, B, ...]``:
    one call for a multi-step model, a loop over steps otherwise; state reset before and
    after."""
    import torch

    base, functional, _, _ = _import()
    multi_step = any(
        getattr(m, "step_mode", "s") == "m" or isinstance(m, base.MultiStepModule)
        for m in net.modules()
    )
    functional.reset_net(net)
    with torch.no_grad():
        out = net(x) if multi_step else torch.stack([net(x_t) for x_t in x])
    functional.reset_net(net)
    return out
