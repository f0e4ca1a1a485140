"""From ANNs to SNNs: QCFS conversion (SPEC §3) and trainable SNNs for direct training (§4).

``to_snn(ann)`` turns a trained QCFS-ANN into an IF network; ``to_trainable_snn(ann)`` turns a
plain ReLU network into a LIF network to be trained with surrogate gradients. Both return a
new :class:`~spikecut.neurons.SpikingNetwork`; the caller's ANN is never modified. Modules
are replaced by type. What cannot be converted faithfully (max
pooling, activations other than QCFS/ReLU, activations called as functions inside
``forward``) is refused with a message that names the offending part.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from ._deprecation import renamed_parameters
from ._modules import forward_hooks, replace_children
from .layers import QCFS, TEBN
from .neurons import IF, LIF, SpikingNetwork

__all__ = ["to_snn", "to_trainable_snn", "ConversionError", "ConvertedNetwork"]


class ConversionError(ValueError):
    """The model cannot be turned into an equivalent spiking network."""


_MAX_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_OTHER_ACTIVATIONS = (
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
)
# Functions that, called inside a forward, are a nonlinearity the converter cannot see.
_FUNCTIONAL_NONLINEARITIES = {
    F.relu,
    torch.relu,
    torch.relu_,
    F.relu_,
    F.relu6,
    F.leaky_relu,
    F.gelu,
    F.silu,
    F.elu,
    F.hardtanh,
    torch.sigmoid,
    torch.tanh,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    torch.max_pool1d,
    torch.max_pool2d,
    torch.max_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
}
_METHOD_NONLINEARITIES = {"relu", "relu_", "sigmoid", "tanh", "sigmoid_", "tanh_"}


def _function_name(fn: object) -> str:
    module = getattr(fn, "__module__", None) or "torch"
    return f"{module}.{getattr(fn, '__name__', repr(fn))}"


class _ActivationLeafTracer(torch.fx.Tracer):
    """An fx tracer that keeps QCFS and neurons as single calls (their insides are fine)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, (QCFS, LIF)) or super().is_leaf_module(m, module_qualified_name)


def _inspect_forward(model: nn.Module) -> tuple[list[str], list[str]] | None:
    """What ``model``'s forward does that module inspection cannot see.

    Returns the functional activations/max-pools it calls and the activation modules it
    calls more than once (one neuron would then share its state between two places).
    Uses ``torch.fx`` tracing; returns ``None`` when the model cannot be traced (then the
    functional check happens on the first forward call instead).
    """
    try:
        graph = _ActivationLeafTracer().trace(model)
    except Exception:
        return None
    traced = torch.fx.GraphModule(model, graph)
    functional: list[str] = []
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_function" and node.target in _FUNCTIONAL_NONLINEARITIES:
            functional.append(f"{_function_name(node.target)} (node {node.name!r})")
        elif node.op == "call_method" and node.target in _METHOD_NONLINEARITIES:
            functional.append(f"Tensor.{node.target} (node {node.name!r})")
        elif node.op == "call_module":
            module = traced.get_submodule(node.target)
            if isinstance(module, (QCFS, nn.ReLU)):
                calls[node.target] = calls.get(node.target, 0) + 1
    reused = [f"{path!r} ({n} calls)" for path, n in calls.items() if n > 1]
    return functional, reused


class _FunctionalGuard(TorchFunctionMode):
    """Records functional nonlinearities called while a converted network runs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if func in _FUNCTIONAL_NONLINEARITIES or name in _METHOD_NONLINEARITIES:
            self.calls.append(_function_name(func))
        return func(*args, **(kwargs or {}))


class ConvertedNetwork(SpikingNetwork):
    """A :class:`SpikingNetwork` made by :func:`to_snn` or :func:`to_trainable_snn`.

    When the ANN could not be traced at conversion time, the first forward call runs under
    a guard that refuses functional activations the converter could not replace.
    """

    def __init__(self, body: nn.Module, verified: bool) -> None:
        super().__init__(body)
        self.verified = verified

    def forward(self, x: Tensor) -> Tensor:
        if self.verified:
            return super().forward(x)
        guard = _FunctionalGuard()
        with guard:
            y = super().forward(x)
        if guard.calls:
            raise ConversionError(_functional_message(type(self.body).__name__, guard.calls))
        self.verified = True
        return y


def _check_forward(model: nn.Module, cannot: str) -> bool:
    """Refuse functional activations and reused activation modules found by tracing.

    Returns whether the model could be traced (otherwise the first forward is guarded).
    """
    inspected = _inspect_forward(model)
    if inspected is None:
        return False
    functional, reused = inspected
    if functional:
        raise ConversionError(_functional_message(type(model).__name__, functional))
    if reused:
        raise ConversionError(
            f"{cannot}: activation module(s) {', '.join(reused)} are called more than once in "
            "forward; a spiking neuron keeps state per position, so give each position its "
            "own module"
        )
    return True


def _functional_message(model_name: str, calls: Iterable[str]) -> str:
    listed = ", ".join(sorted(set(calls)))
    return (
        f"cannot convert {model_name}: its forward calls {listed} as a function, so the "
        "converter cannot replace it by a spiking neuron; use QCFS (or nn.ReLU) modules and "
        "nn.AvgPool2d instead"
    )


def _relu_thresholds(
    model: nn.Module, relus: list[nn.ReLU], data: Tensor, percentile: float
) -> dict[nn.ReLU, float]:
    """Per-ReLU thresholds: the ``percentile`` of its positive activations on ``data``."""
    collected: dict[nn.ReLU, list[Tensor]] = {r: [] for r in relus}

    def record(module: nn.Module, _inputs: tuple, out: Tensor) -> None:
        collected[module].append(out.detach())

    with forward_hooks((r, record) for r in relus), torch.no_grad():
        model(data)
    thresholds = {}
    for relu, outs in collected.items():
        values = torch.cat([o.flatten() for o in outs])
        values = values[values > 0]
        if values.numel() == 0:
            thresholds[relu] = 1.0
            continue
        k = max(1, int(round(percentile / 100.0 * values.numel())))
        thresholds[relu] = float(values.float().kthvalue(min(k, values.numel())).values)
    return thresholds


def to_snn(
    ann: nn.Module,
    *,
    data: Tensor | None = None,
    percentile: float = 99.9,
) -> ConvertedNetwork:
    """Convert a QCFS-ANN (SPEC §3) into a spiking network; ``ann`` is left unchanged.

    Every :class:`~spikecut.layers.QCFS` becomes an :class:`~spikecut.neurons.IF` neuron with
    θ = the learned threshold, soft reset, ``v_init = θ/2`` and spike amplitude θ.
    BatchNorm stays as its eval-mode affine; all stateless layers run on the ``[T*B, ...]``
    fold of the input. The result maps ``[T, B, ...]`` to per-step logits ``[T, B, K]``.

    Plain ``nn.ReLU`` modules are converted too when ``data`` (a batch of ANN inputs) is
    given: each ReLU's θ is the ``percentile`` of its positive activations on that batch
    (the classic data-based normalisation); without ``data`` they are refused.

    Raises:
        ConversionError: max pooling, an activation other than QCFS/ReLU, a functional
            activation inside ``forward``, ReLUs without ``data``, or nothing to convert.
    """
    if not isinstance(ann, nn.Module):
        raise TypeError(f"to_snn expects a torch.nn.Module, got {type(ann).__name__}")
    name = type(ann).__name__
    model = copy.deepcopy(ann).eval()

    problems = []
    qcfs, relus = [], []
    for path, module in model.named_modules():
        if isinstance(module, _MAX_POOLS):
            problems.append(f"max pooling at {path!r} (use average pooling)")
        elif isinstance(module, _OTHER_ACTIVATIONS):
            problems.append(f"unsupported activation {type(module).__name__} at {path!r}")
        elif isinstance(module, QCFS):
            qcfs.append(module)
        elif isinstance(module, nn.ReLU):
            relus.append(module)
    if problems:
        raise ConversionError(f"cannot convert {name}: " + "; ".join(problems))

    verified = _check_forward(model, f"cannot convert {name}")
    if not qcfs and not relus:
        raise ConversionError(
            f"cannot convert {name}: it has no QCFS or nn.ReLU modules, so there is nothing to "
            "turn into spiking neurons (activations called as functions are invisible to the "
            "converter)"
        )
    if relus and data is None:
        raise ConversionError(
            f"cannot convert {name}: it has {len(relus)} nn.ReLU module(s) and no thresholds for "
            "them; train with QCFS activations, or pass data=<a batch of inputs> so their "
            "thresholds are set from activation statistics"
        )

    thresholds = {q: float(q.threshold.detach()) for q in qcfs}
    if relus:
        thresholds.update(_relu_thresholds(model, relus, data, percentile))

    def neuron_for(child: nn.Module) -> nn.Module | None:
        theta = thresholds.get(child)
        if theta is None:
            return None
        return IF(threshold=theta, reset="soft", v_init=theta / 2, amplitude=theta)

    replace_children(model, neuron_for)
    return ConvertedNetwork(model, verified=verified).eval()


def _replace_children(model: nn.Module, replacement: dict[nn.Module, nn.Module]) -> None:
    replace_children(model, replacement.get)


@renamed_parameters(steps="T")
def to_trainable_snn(
    ann: nn.Module,
    *,
    neuron: LIF | None = None,
    tebn: bool = False,
    T: int | None = None,
) -> ConvertedNetwork:
    """Turn a plain ReLU network into a spiking network for direct training (SPEC §4).

    Every ``nn.ReLU`` becomes its own copy of ``neuron`` (default: the paper's LIF, θ = 1,
    λ = 0.5, hard reset, triangle surrogate). With ``tebn=True`` every ``BatchNorm2d``
    becomes a :class:`~spikecut.layers.TEBN` with ``T`` per-step scales (its affine and
    running statistics are kept). Conv, linear, BN and pooling run on the ``[T*B, ...]`` fold,
    so BN statistics pool over time and batch. The result maps ``[T, B, ...]`` to per-step
    logits ``[T, B, K]``; ``ann`` is left unchanged. Max pooling is allowed here (spikes are
    trained through it).

    Raises:
        ConversionError: no ReLU modules, QCFS activations (convert those with
            :func:`to_snn`), other activations, a functional activation in ``forward``, or a
            ReLU module called at two places.
    """
    if not isinstance(ann, nn.Module):
        raise TypeError(f"to_trainable_snn expects a torch.nn.Module, got {type(ann).__name__}")
    if neuron is not None and not isinstance(neuron, LIF):
        raise TypeError(f"neuron must be a spikecut LIF/IF module, got {type(neuron).__name__}")
    if tebn and (T is None or T < 1):
        raise ValueError(f"tebn=True needs the number of timesteps: T >= 1, got {T}")
    name = type(ann).__name__
    model = copy.deepcopy(ann)
    template = neuron if neuron is not None else LIF()

    problems, relus, norms = [], [], []
    for path, module in model.named_modules():
        if isinstance(module, QCFS):
            problems.append(f"QCFS activation at {path!r} (convert QCFS-ANNs with to_snn)")
        elif isinstance(module, _OTHER_ACTIVATIONS):
            problems.append(f"unsupported activation {type(module).__name__} at {path!r}")
        elif isinstance(module, nn.ReLU):
            relus.append(module)
        elif tebn and type(module) is nn.BatchNorm2d:
            norms.append(module)
    if problems:
        raise ConversionError(f"cannot make a trainable SNN of {name}: " + "; ".join(problems))
    if not relus:
        raise ConversionError(
            f"cannot make a trainable SNN of {name}: it has no nn.ReLU modules to turn into "
            "spiking neurons (activations called as functions are invisible to the converter)"
        )
    verified = _check_forward(model, f"cannot make a trainable SNN of {name}")
    replacement: dict[nn.Module, nn.Module] = {r: copy.deepcopy(template) for r in relus}
    replacement.update({bn: TEBN.from_batchnorm(bn, T) for bn in norms})
    _replace_children(model, replacement)
    return ConvertedNetwork(model, verified=verified).train(ann.training)
