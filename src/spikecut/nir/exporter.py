"""spikecut network → NIR graph.

The network's body is traced with ``torch.fx`` (neurons kept as single calls) and its shapes
found on one step of the sample. BatchNorm is folded into the conv/linear before it first. A
spike amplitude other than 1 is moved into the weights of the next conv/linear (exact:
``W·(a·s) = (a·W)·s``), or written as a ``Scale`` node where no such layer follows. Residual
additions become several edges into one node (NIR sums a node's inputs).

NIR has no subtractive reset and no initial membrane potential. A neuron that needs either is
refused unless ``approximate=True``; then it is written with reset to 0 and start at 0, and
the graph's metadata says so (``spikecut_approximations``).
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .. import __version__
from ..fusion import fold_batchnorm
from ..layers import TEBN, CalibrationDropout
from ..neurons import IF, LIF
from .conventions import DT, describe, leak_to_tau

__all__ = ["export", "NIRExportError"]


class NIRExportError(ValueError):
    """The network cannot be written as NIR (exactly, or at all)."""


_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, CalibrationDropout)


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, (LIF, TEBN)) or super().is_leaf_module(m, qualified_name)


@dataclass
class _Value:
    """What an fx value is in the NIR graph: the nodes whose (summed) outputs it is, times
    ``scale`` (a spike amplitude not yet moved into weights)."""

    sources: list[str]
    scale: float = 1.0


@dataclass
class _Builder:
    nir: object
    approximate: bool
    dt: float
    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    approximations: list = field(default_factory=list)

    def add(self, name: str, node, inputs: list[str]) -> str:
        self.nodes[name] = node
        self.edges += [(src, name) for src in inputs]
        return name

    def unscaled(self, value: _Value, name: str, shape: tuple[int, ...]) -> list[str]:
        """The sources of ``value`` (of per-sample ``shape``) with any pending amplitude
        applied, as a Scale node."""
        if value.scale == 1.0:
            return value.sources
        scale = np.full(shape, value.scale, dtype=np.float32)
        return [self.add(f"{name}_amplitude", self.nir.Scale(scale=scale), value.sources)]


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None:
        raise NIRExportError(f"no shape was recorded for {node.name!r}")
    return tuple(int(s) for s in meta.shape[1:])  # without the batch


def _numpy(t: Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().float().numpy().copy()


def _neuron_node(b: _Builder, module: LIF, path: str, shape: tuple[int, ...]):
    if type(module) not in (LIF, IF):
        b.problems.append(
            f"module {path!r} ({type(module).__name__}): only spikecut's own LIF/IF neurons are "
            "exported; export a network adapted from another framework with that framework's "
            "exporter"
        )
        return None
    lost = []
    if module.reset_mode == "soft":
        lost.append("subtractive (soft) reset (NIR resets to v_reset; approximated by reset to 0)")
    if module.v_init != 0.0:
        lost.append(
            f"initial membrane v_init={module.v_init:g} (NIR neurons start at 0; approximated by 0)"
        )
    if lost:
        if not b.approximate:
            b.problems += [f"module {path!r} ({type(module).__name__}): {text}" for text in lost]
        else:
            b.approximations += [f"{path}: {text}" for text in lost]
    full = lambda value: np.full(shape, value, dtype=np.float64)  # noqa: E731
    meta = {"spikecut_approximation": "; ".join(lost)} if lost and b.approximate else {}
    if module.leak == 1.0:
        return b.nir.IF(
            r=full(1.0 / b.dt),
            v_threshold=full(module.threshold),
            v_reset=full(0.0),
            metadata=meta,
        )
    tau = leak_to_tau(module.leak, b.dt)
    return b.nir.LIF(
        tau=full(tau),
        r=full(tau / b.dt),
        v_leak=full(0.0),
        v_threshold=full(module.threshold),
        v_reset=full(0.0),
        metadata=meta,
    )


def _weighted_node(b: _Builder, module: nn.Module, path: str, x: fx.Node, scale: float):
    weight = _numpy(module.weight) * np.float32(scale)
    bias = _numpy(module.bias)
    if isinstance(module, nn.Linear):
        return b.nir.Affine(weight=weight, bias=bias) if bias is not None else b.nir.Linear(weight)
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        b.problems.append(
            f"module {path!r}: padding {module.padding!r}/{module.padding_mode} "
            "is not written (NIR convolutions take numeric zero padding)"
        )
        return None
    if bias is None:
        bias = np.zeros(weight.shape[0], dtype=np.float32)
    conv = b.nir.Conv2d if isinstance(module, nn.Conv2d) else b.nir.Conv1d
    spatial = _shape(x)[1:]
    squeeze = (lambda t: t[0]) if conv is b.nir.Conv1d else tuple  # noqa: E731
    return conv(
        input_shape=squeeze(spatial),
        weight=weight,
        stride=squeeze(module.stride),
        padding=squeeze(module.padding),
        dilation=squeeze(module.dilation),
        groups=module.groups,
        bias=bias,
    )


def _pool_node(b: _Builder, module: nn.Module, path: str, x: fx.Node):
    if isinstance(module, nn.AdaptiveAvgPool2d):
        h, w = _shape(x)[-2:]
        out = (
            module.output_size
            if isinstance(module.output_size, tuple)
            else (module.output_size, module.output_size)
        )
        out = (h if out[0] is None else out[0], w if out[1] is None else out[1])
        if h % out[0] or w % out[1]:
            b.problems.append(
                f"module {path!r}: adaptive pooling of {h}x{w} to {out} has "
                "uneven windows, which NIR's AvgPool2d cannot express"
            )
            return None
        kernel = np.array([h // out[0], w // out[1]])
        return b.nir.AvgPool2d(kernel_size=kernel, stride=kernel, padding=np.array([0, 0]))
    pair = lambda v: np.array(v if isinstance(v, (tuple, list)) else (v, v))  # noqa: E731
    padded = np.any(pair(module.padding))
    if (
        module.ceil_mode
        or module.divisor_override is not None
        or (padded and not module.count_include_pad)
    ):
        b.problems.append(f"module {path!r}: this AvgPool2d configuration has no NIR form")
        return None
    stride = module.stride if module.stride is not None else module.kernel_size
    return b.nir.AvgPool2d(
        kernel_size=pair(module.kernel_size), stride=pair(stride), padding=pair(module.padding)
    )


def _flatten_node(b: _Builder, x: fx.Node, start: int, end: int):
    in_shape = np.array(_shape(x))
    if start == 0:
        raise NIRExportError("flattening the batch dimension cannot be written as NIR")
    return b.nir.Flatten(
        input_type={"input": in_shape},
        start_dim=start - 1 if start > 0 else start,
        end_dim=end - 1 if end > 0 else end,
    )


def _call_module(b: _Builder, gm: fx.GraphModule, node: fx.Node, values: dict) -> _Value:
    module = gm.get_submodule(node.target)
    path = str(node.target)
    name = path.replace(".", "_")
    x_node = node.args[0]
    x = values[x_node]
    if isinstance(module, _PASS_THROUGH):
        return x
    if isinstance(module, LIF):
        made = _neuron_node(b, module, path, _shape(node))
        if made is None:
            return _Value([name])
        b.add(name, made, b.unscaled(x, name, _shape(x_node)))
        return _Value([name], scale=module.amplitude)
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and type(module) in (
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
    ):
        made = _weighted_node(b, module, path, x_node, x.scale)
    elif type(module) in (nn.AvgPool2d, nn.AdaptiveAvgPool2d):
        made = _pool_node(b, module, path, x_node)
        if made is not None:
            b.add(name, made, x.sources)
        return _Value([name], scale=x.scale)
    elif type(module) is nn.Flatten:
        b.add(name, _flatten_node(b, x_node, module.start_dim, module.end_dim), x.sources)
        return _Value([name], scale=x.scale)
    else:
        reason = {
            nn.MaxPool2d: "max pooling has no NIR node",
            TEBN: "TEBN's per-step scales have no NIR node",
        }.get(type(module))
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            reason = "BatchNorm not directly after a conv/linear cannot be folded into it"
        b.problems.append(
            f"module {path!r} ({type(module).__name__}): "
            f"{reason or 'no NIR equivalent is written for this layer'}"
        )
        return _Value([name])
    if made is not None:
        b.add(name, made, x.sources)
    return _Value([name])


def _call_function(b: _Builder, node: fx.Node, values: dict) -> _Value:
    if node.target in (operator.add, torch.add) and len(node.args) == 2 and not node.kwargs:
        left, right = (values.get(a) for a in node.args)
        if left is not None and right is not None:
            if left.scale == right.scale:
                return _Value(left.sources + right.sources, scale=left.scale)
            shape = _shape(node)
            return _Value(
                b.unscaled(left, f"{node.name}_l", shape)
                + b.unscaled(right, f"{node.name}_r", shape)
            )
    if node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        x = values[node.args[0]]
        b.add(node.name, _flatten_node(b, node.args[0], start, end), x.sources)
        return _Value([node.name], scale=x.scale)
    b.problems.append(
        f"function {getattr(node.target, '__name__', node.target)} "
        f"(node {node.name!r}) has no NIR equivalent"
    )
    return _Value([node.name])


def _stateless_copy(body: nn.Module) -> nn.Module:
    """A copy of ``body`` without the neurons' carried state (which may hold a graph)."""
    neurons = [m for m in body.modules() if isinstance(m, LIF)]
    carried = [m.v for m in neurons]
    for m in neurons:
        m.v = None
    try:
        return copy.deepcopy(body)
    finally:
        for m, v in zip(neurons, carried, strict=True):
            m.v = v


def export(snn: nn.Module, sample: Tensor, *, approximate: bool = False, dt: float = DT):
    """The NIR graph of spiking network ``snn``; ``snn`` is left unchanged.

    ``sample`` is a time-major input ``[T, B, ...]`` (its first step fixes the shapes). Written:
    Conv1d/Conv2d, Linear (as ``Affine`` or ``Linear``), AvgPool2d (and evenly dividing
    adaptive average pooling), Flatten, spikecut's IF and LIF neurons (``dt`` convention in
    :mod:`spikecut.nir.conventions`), BatchNorm folded into the layer before it, spike
    amplitudes folded into the next layer's weights. Save it with ``nir.write(path, graph)``.

    Raises:
        NIRExportError: naming every module NIR cannot express; a soft reset or a non-zero
            initial membrane only without ``approximate=True`` (then recorded in
            ``graph.metadata["spikecut_approximations"]``).
    """
    from . import require_nir

    nir = require_nir()
    if not isinstance(sample, Tensor) or sample.dim() < 2:
        raise NIRExportError("sample: expected a time-major tensor [T, B, ...]")
    body = getattr(snn, "body", snn)
    body = fold_batchnorm(_stateless_copy(body).eval())
    try:
        graph = _LeafTracer().trace(body)
    except Exception as err:
        raise NIRExportError(f"cannot trace {type(body).__name__} with torch.fx: {err}") from err
    gm = fx.GraphModule(body, graph)
    with torch.no_grad():
        ShapeProp(gm).propagate(sample[0].to(next(body.parameters()).device))

    b = _Builder(nir=nir, approximate=approximate, dt=dt)
    values: dict = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            shape = np.array(_shape(node))
            b.add("input", nir.Input(input_type={"input": shape}), [])
            values[node] = _Value(["input"])
        elif node.op == "call_module":
            values[node] = _call_module(b, gm, node, values)
        elif node.op == "call_function":
            values[node] = _call_function(b, node, values)
        elif node.op == "output":
            out = node.args[0]
            b.add(
                "output",
                nir.Output(output_type={"output": np.array(_shape(out))}),
                b.unscaled(values[out], "output", _shape(out)),
            )
        else:
            b.problems.append(f"{node.op} {node.target!r} (node {node.name!r}) is not written")
    if b.problems:
        hint = (
            "; pass approximate=True to export anyway (the graph's metadata records what "
            "changed, and the network's outputs change with it)"
            if not approximate and any("approximated by" in p for p in b.problems)
            else ""
        )
        raise NIRExportError("cannot export to NIR exactly: " + "; ".join(b.problems) + hint)
    metadata = {
        "spikecut_version": __version__,
        "spikecut_dt": dt,
        "spikecut_convention": describe(dt),
        "spikecut_approximate": int(bool(b.approximations)),
    }
    if b.approximations:
        metadata["spikecut_approximations"] = "; ".join(b.approximations)
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=metadata)
