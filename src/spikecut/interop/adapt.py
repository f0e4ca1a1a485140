"""The walk shared by the framework adapters: copy a network, replacing modules by type.

A framework adapter says, per module, what to put in its place (a spikecut neuron, a plain
torch layer, a container to descend into) or why it cannot be mapped. The walk copies the
caller's network (it is never modified), applies those answers from the root down and wraps
the result in a :class:`~spikecut.neurons.SpikingNetwork`, whose stateless layers then run on
the ``[T*B, ...]`` fold of the sequence while the neurons unfold time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..neurons import SpikingNetwork

__all__ = [
    "InteropError",
    "Keep",
    "Replace",
    "Descend",
    "Refuse",
    "adapt_network",
    "check_outputs",
    "probe_heaviside",
    "torch_base_copy",
    "TOLERANCE",
]

TOLERANCE = 1e-6
"""Largest per-step output difference :func:`check_outputs` accepts."""

# Torch layers that mix information across time steps (their state is not a spikecut neuron).
_RECURRENT = (nn.RNNBase, nn.RNNCellBase)


class InteropError(ValueError):
    """A network (or one of its modules) cannot be mapped to spikecut exactly."""


@dataclass(frozen=True)
class Keep:
    """Keep the (copied) module as it is: a stateless layer that works on the fold."""


@dataclass(frozen=True)
class Replace:
    """Put ``module`` in the place of the original."""

    module: nn.Module


@dataclass(frozen=True)
class Descend:
    """Map the children; ``as_sequential`` turns a framework container into nn.Sequential."""

    as_sequential: bool = False


@dataclass(frozen=True)
class Refuse:
    """The module has no exact spikecut equivalent, for ``reason``."""

    reason: str


Decision = Keep | Replace | Descend | Refuse
Mapper = Callable[[nn.Module, str], Decision | None]


def _plain_torch_decision(module: nn.Module) -> Decision:
    """What to do with a module that no framework mapper claimed."""
    if isinstance(module, _RECURRENT):
        return Refuse("recurrent torch layer: its state crosses time steps outside a neuron")
    if type(module).__module__.startswith("torch.nn"):
        return Descend(as_sequential=False) if len(module._modules) else Keep()
    if len(module._modules):  # the user's own module: its forward stays, its children map
        return Descend(as_sequential=False)
    return Keep()


def adapt_network(net: nn.Module, framework: str, mapper: Mapper) -> SpikingNetwork:
    """A copy of ``net`` with every module mapped by ``mapper``, as a spiking network.

    ``mapper(module, path)`` returns a decision or ``None`` (not a framework module: plain
    torch layers are kept, containers descended into). Every refusal is collected and raised
    together as one :class:`InteropError` naming each module path and its reason.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(net).__name__}")
    body = _copy_detached(net)
    problems: list[str] = []
    mapped = _map(body, "", framework, mapper, problems)
    if problems:
        raise InteropError(
            f"cannot map {type(net).__name__} from {framework} to spikecut exactly: "
            + "; ".join(problems)
        )
    return SpikingNetwork(mapped).train(net.training)


def _copy_detached(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` in which state tensors that are part of a graph (a membrane
    left over from training) are copied detached; deepcopy refuses such tensors."""
    memo: dict[int, object] = {}
    for module in net.modules():
        for value in [*module.__dict__.values(), *module._buffers.values()]:
            items = value.values() if isinstance(value, dict) else [value]
            for item in items:
                if isinstance(item, Tensor) and not item.is_leaf:
                    memo[id(item)] = item.detach().clone()
    return copy.deepcopy(net, memo)


def _map(
    module: nn.Module, path: str, framework: str, mapper: Mapper, problems: list[str]
) -> nn.Module:
    decision = mapper(module, path)
    if decision is None:
        decision = _plain_torch_decision(module)
    name = path or "<root>"
    if isinstance(decision, Refuse):
        problems.append(f"module {name!r} ({type(module).__name__}): {decision.reason}")
        return module
    if isinstance(decision, Replace):
        return decision.module
    if isinstance(decision, Keep):
        return module
    children = {
        child_name: _map(
            child, f"{path}.{child_name}" if path else child_name, framework, mapper, problems
        )
        for child_name, child in module.named_children()
    }
    if decision.as_sequential:
        return nn.Sequential(*children.values())
    for child_name, child in children.items():
        setattr(module, child_name, child)
    return module


def torch_base_copy(module: nn.Module, base: type[nn.Module]) -> nn.Module:
    """``module`` as an instance of its torch base class ``base`` (same parameters, buffers
    and hyper-parameters), without the framework's extra attributes such as ``step_mode``.

    For thin framework wrappers whose only addition is how they treat a time dimension,
    which the spikecut fold makes unnecessary.
    """
    clone = copy.deepcopy(module)
    clone.__class__ = base
    for extra in ("step_mode",):
        clone.__dict__.pop(extra, None)
    return clone


def probe_heaviside(spike_fn: Callable[[Tensor], Tensor]) -> bool | None:
    """Whether ``spike_fn`` computes ``1[x >= 0]`` (True), ``1[x > 0]`` (False) or neither
    (None), tested on values around 0 without building a graph."""
    x = torch.tensor([-2.0, -1e-3, -1e-30, 0.0, 1e-30, 1e-3, 2.0])
    with torch.no_grad():
        try:
            y = spike_fn(x)
        except Exception:
            return None
    if not isinstance(y, Tensor) or y.shape != x.shape:
        return None
    y = y.float()
    if torch.equal(y, (x >= 0).float()):
        return True
    if torch.equal(y, (x > 0).float()):
        return False
    return None


def check_outputs(adapted: nn.Module, reference: Tensor, x: Tensor, source: str) -> float:
    """Max abs difference between ``adapted(x)`` and the original's ``reference`` outputs;
    :class:`InteropError` above :data:`TOLERANCE`."""
    from ..neurons import reset

    reset(adapted)
    try:
        with torch.no_grad():
            ours = adapted(x)
    except Exception as err:
        raise InteropError(
            f"the adapted network fails on the example where the {source} network runs "
            f"({type(err).__name__}: {err}); its forward may treat time in a way the adapter "
            "cannot see (e.g. reshaping [T, B] itself)"
        ) from err
    finally:
        reset(adapted)
    if ours.shape != reference.shape:
        raise InteropError(
            f"the adapted network's outputs have shape {tuple(ours.shape)}, the {source} "
            f"network's {tuple(reference.shape)}"
        )
    diff = float((ours.double() - reference.double()).abs().max()) if ours.numel() else 0.0
    if not diff <= TOLERANCE:
        raise InteropError(
            f"the adapted network's outputs differ from the {source} network's by {diff:.3g} "
            f"(tolerance {TOLERANCE:g}); its forward may treat time in a way the adapter "
            "cannot see (e.g. reshaping [T, B] itself)"
        )
    return diff
