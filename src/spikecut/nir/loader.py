"""NIR graph → spikecut network.

Stateless nodes become torch layers (``Affine``/``Linear`` → ``nn.Linear``, ``Conv1d/2d``,
``AvgPool2d``, ``SumPool2d`` (an average pool without the division), ``Flatten``, ``Scale``);
``IF`` and ``LIF`` become spikecut neurons, ``LI`` a leaky read-out emitting its membrane. The
time-step convention is recognised per node (:mod:`spikecut.nir.conventions`). A chain of nodes
becomes an ``nn.Sequential``; any other acyclic graph a :class:`GraphBody` that sums the
inputs of each node, as NIR does. Refused, naming the node: recurrent edges, per-neuron
parameters that differ, conventions that match no writer, and node types without a spikecut
equivalent (CubaLIF, Threshold, Delay, ...).
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

import numpy as np
import torch
from torch import Tensor, nn

from ..interop.neuron import MirroredLIF
from ..neurons import IF, LIF, SpikingNetwork
from .conventions import DT, close, input_gain, tau_to_leak

__all__ = ["load", "NIRImportError", "GraphBody", "Scale"]


class NIRImportError(ValueError):
    """The graph cannot be turned into an equivalent spikecut network."""


class Scale(nn.Module):
    """NIR's ``Scale`` node: multiplies every sample by a fixed array."""

    def __init__(self, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class GraphBody(nn.Module):
    """Runs NIR nodes in topological order; a node's input is the sum of its sources."""

    def __init__(
        self,
        layers: dict[str, nn.Module],
        sources: dict[str, list[str]],
        order: list[str],
        outputs: list[str],
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.sources = sources
        self.order = order
        self.outputs = outputs

    def forward(self, x: Tensor) -> Tensor:
        values = {"": x}
        for name in self.order:
            inputs = [values[s] for s in self.sources[name]]
            total = inputs[0]
            for other in inputs[1:]:
                total = total + other
            values[name] = self.layers[name](total)
        result = values[self.outputs[0]]
        for other in self.outputs[1:]:
            result = result + values[other]
        return result


def _array(value) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _tensor(value) -> Tensor:
    return torch.from_numpy(np.array(_array(value), dtype=np.float32))


def _uniform(node, field: str, name: str) -> float:
    values = _array(getattr(node, field)).astype(np.float64).ravel()
    if values.size == 0:
        raise NIRImportError(f"node {name!r} ({type(node).__name__}): {field} is empty")
    if not np.all(values == values[0]):
        raise NIRImportError(
            f"node {name!r} ({type(node).__name__}): {field} differs between neurons; spikecut "
            "neurons have one value per layer"
        )
    return float(values[0])


def _ints(value) -> tuple[int, ...] | int:
    arr = _array(value)
    return int(arr) if arr.ndim == 0 else tuple(int(v) for v in arr.ravel())


def _leaky(node, name: str, dt: float, *, spiking: bool) -> nn.Module:
    kind = type(node).__name__
    tau, r = _uniform(node, "tau", name), _uniform(node, "r", name)
    v_leak = _uniform(node, "v_leak", name)
    threshold = _uniform(node, "v_threshold", name) if spiking else float("inf")
    v_reset = _uniform(node, "v_reset", name) if spiking else 0.0
    if not tau >= dt:
        raise NIRImportError(
            f"node {name!r} ({kind}): tau={tau:g} is shorter than the time step dt={dt:g}; pass "
            "the dt the graph was written with"
        )
    leak = tau_to_leak(tau, dt)
    emit = {} if spiking else {"emit": "membrane", "reset": "none"}
    if close(input_gain(tau, r, dt), 1.0) and v_leak == 0.0:
        if spiking and v_reset == 0.0:
            return LIF(threshold=threshold, leak=leak, reset="hard", v_init=0.0)
        return MirroredLIF(
            threshold, charge="leak", leak=leak, v_reset=v_reset, fire_at_equal=False, **emit
        )
    if v_leak == v_reset and (close(r, 1.0) or close(input_gain(tau, r, dt), 1.0)):
        decay_input = close(r, 1.0)  # SpikingJelly: r = 1 with decay_input, r = tau/dt without
        return MirroredLIF(
            threshold,
            charge="tau_decay_input" if decay_input else "tau",
            tau=tau / dt,
            v_reset=v_reset,
            v_init=v_reset,
            fire_at_equal=False,
            **emit,
        )
    raise NIRImportError(
        f"node {name!r} ({kind}): tau={tau:g}, r={r:g}, v_leak={v_leak:g} with dt={dt:g} match "
        "no known convention (input gain r*dt/tau = 1 with v_leak = 0: snnTorch, SpikingJelly, "
        "spikecut; r = 1 with v_leak = v_reset: SpikingJelly's decay_input); pass the dt the "
        "graph was written with"
    )


def _integrate_and_fire(node, name: str, dt: float) -> nn.Module:
    r = _uniform(node, "r", name)
    if not (close(r, 1.0) or close(r * dt, 1.0)):
        raise NIRImportError(
            f"node {name!r} (IF): r={r:g} with dt={dt:g} is neither 1 (Sinabs, Norse, snnTorch) "
            "nor 1/dt (SpikingJelly, spikecut); pass the dt the graph was written with"
        )
    threshold, v_reset = _uniform(node, "v_threshold", name), _uniform(node, "v_reset", name)
    if v_reset == 0.0:
        return IF(threshold=threshold, reset="hard", v_init=0.0)
    return MirroredLIF(
        threshold, charge="integrate", v_reset=v_reset, v_init=v_reset, fire_at_equal=False
    )


def _conv(node, dims: int) -> nn.Module:
    weight = _tensor(node.weight)
    groups = int(_array(node.groups))
    padding = node.padding if isinstance(node.padding, str) else _ints(node.padding)
    conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=_ints(node.stride),
        padding=padding,
        dilation=_ints(node.dilation),
        groups=groups,
        bias=True,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(_tensor(node.bias).reshape(-1))
    return conv


def _linear(node, bias: bool) -> nn.Module:
    weight = _tensor(node.weight)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias:
            layer.bias.copy_(_tensor(node.bias).reshape(-1))
    return layer


def _pool(node, summed: bool) -> nn.Module:
    kernel, stride = _ints(node.kernel_size), _ints(node.stride)
    return nn.AvgPool2d(
        kernel, stride=stride, padding=_ints(node.padding), divisor_override=1 if summed else None
    )


def _flatten(node) -> nn.Module:
    start, end = int(node.start_dim), int(node.end_dim)
    return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)


def _layer(nir, node, name: str, dt: float) -> nn.Module:
    builders = {
        nir.Affine: lambda: _linear(node, bias=True),
        nir.Linear: lambda: _linear(node, bias=False),
        nir.Conv1d: lambda: _conv(node, 1),
        nir.Conv2d: lambda: _conv(node, 2),
        nir.AvgPool2d: lambda: _pool(node, summed=False),
        nir.SumPool2d: lambda: _pool(node, summed=True),
        nir.Flatten: lambda: _flatten(node),
        nir.Scale: lambda: Scale(_tensor(node.scale)),
        nir.IF: lambda: _integrate_and_fire(node, name, dt),
        nir.LIF: lambda: _leaky(node, name, dt, spiking=True),
        nir.LI: lambda: _leaky(node, name, dt, spiking=False),
    }
    if getattr(nir, "Identity", None) is not None:
        builders[nir.Identity] = nn.Identity
    build = builders.get(type(node))
    if build is None:
        raise NIRImportError(
            f"node {name!r} ({type(node).__name__}) has no spikecut equivalent (loaded: "
            "Affine, Linear, Conv1d, Conv2d, AvgPool2d, SumPool2d, Flatten, Scale, IF, LIF, LI)"
        )
    return build()


def _graph_dt(graph, dt: float | None) -> float:
    if dt is not None:
        return float(dt)
    written = (getattr(graph, "metadata", None) or {}).get("spikecut_dt")
    return float(written) if written is not None else DT


def load(graph_or_path, *, dt: float | None = None) -> SpikingNetwork:
    """A spikecut network computing the NIR graph (a ``nir.NIRGraph`` or a file path).

    ``dt`` is the time step the graph's τ and r were written with: by default the one spikecut
    recorded in the graph, else 1e-4 (snnTorch, SpikingJelly). The result maps ``[T, B, ...]``
    to per-step outputs ``[T, B, ...]``; ``load(export(snn, x))`` computes what ``snn`` does.

    Raises:
        NIRImportError: naming every node that cannot be loaded, and why.
    """
    from . import require_nir

    nir = require_nir()
    graph = (
        nir.read(str(graph_or_path))
        if not isinstance(graph_or_path, nir.NIRNode)
        else (graph_or_path)
    )
    if not isinstance(graph, nir.NIRGraph):
        graph = nir.NIRGraph.from_list(graph)
    dt = _graph_dt(graph, dt)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRImportError(
            f"expected one Input and one Output node, found {len(inputs)} and {len(outputs)}"
        )
    sources: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for src, dst in graph.edges:
        if src not in graph.nodes or dst not in graph.nodes:
            raise NIRImportError(f"edge {src!r} -> {dst!r} names a node the graph lacks")
        sources[dst].append(src)
    try:
        order = list(TopologicalSorter(sources).static_order())
    except CycleError as err:
        raise NIRImportError(
            f"the graph has recurrent edges ({' -> '.join(err.args[1])}); spikecut networks "
            "are feed-forward"
        ) from None

    layers, problems = {}, []
    for name in order:
        node = graph.nodes[name]
        if isinstance(node, (nir.Input, nir.Output)):
            continue
        try:
            layers[name] = _layer(nir, node, name, dt)
        except NIRImportError as err:
            problems.append(str(err))
    if problems:
        raise NIRImportError("cannot load the NIR graph: " + "; ".join(problems))
    return SpikingNetwork(_body(layers, sources, order, inputs[0], outputs[0])).eval()


def _body(layers, sources, order, input_name, output_name) -> nn.Module:
    """An ``nn.Sequential`` for a chain input → ... → output, a :class:`GraphBody` otherwise."""
    chain, current = [], input_name
    consumers = {name: [d for d, srcs in sources.items() if name in srcs] for name in sources}
    while current != output_name:
        nxt = consumers.get(current, [])
        if len(nxt) != 1 or len(sources[nxt[0]]) != 1:
            break
        current = nxt[0]
        if current != output_name:
            chain.append(current)
    else:
        if len(chain) == len(layers):
            return nn.Sequential(*(layers[n] for n in chain))

    def key(name: str) -> str:
        return name.replace(".", "_") or "node"

    mapped = {key(n): m for n, m in layers.items()}
    renamed = {key(n): ["" if s == input_name else key(s) for s in sources[n]] for n in layers}
    return GraphBody(
        mapped,
        renamed,
        [key(n) for n in order if n in layers],
        ["" if s == input_name else key(s) for s in sources[output_name]],
    )
