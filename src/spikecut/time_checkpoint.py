"""Activation checkpointing over time chunks for BPTT (training at large T).

``SpikingNetwork(body, time_checkpoint=k)`` runs a training forward in chunks of ``k``
steps, each through :func:`torch.utils.checkpoint.checkpoint` (non-reentrant). The forward
keeps only each chunk's output and the state every time-aware module carries into the chunk
(membranes, TEBN's step counter); the backward pass reruns one chunk at a time from that
state to rebuild its activations. Activation memory is then that of one chunk plus one
membrane per neuron per chunk boundary, instead of all T steps, for about one extra forward
pass of compute.

What stays exact. A chunk's recomputation restores the state declared with
:meth:`~spikecut.neurons.TemporalModule.register_state` at its start, and afterwards puts back
everything as the forward left it: declared state, BatchNorm running statistics (not updated
twice) and recorded membranes (:attr:`~spikecut.neurons.LIF.membrane_record` sees each step
once). Forward hooks do run again while a chunk is recomputed, as with any checkpoint;
:func:`is_recomputing` tells them apart (the RCS regulariser skips those calls).

What does not. BatchNorm in training mode (plain, or inside TEBN) normalises with statistics
pooled over every row of the ``[T*B, ...]`` fold, all T steps; a chunk pools over its own
steps only, so the outputs and the gradients change. ``norms="exact"`` (the default) refuses
such a network and names its layers; ``norms="chunk"`` accepts per-chunk statistics: the
gradients are then those of plain BPTT through the same chunked forward without
checkpointing. Layers that normalise each row on its own (LayerNorm, GroupNorm) and
BatchNorm in eval mode are exact.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from .neurons import LIF, TemporalModule, temporal_modules

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .neurons import SpikingNetwork

__all__ = [
    "NORM_POLICIES",
    "is_recomputing",
    "time_pooling_norms",
    "check_chunk_safe",
    "run_checkpointed",
    "time_checkpointing",
]

NORM_POLICIES = ("exact", "chunk")
"""``exact``: refuse layers whose training statistics pool over time; ``chunk``: let them
pool over each chunk."""

_RECOMPUTING: ContextVar[bool] = ContextVar("spikecut_recomputing", default=False)


def is_recomputing() -> bool:
    """True while a checkpointed chunk is being recomputed in the backward pass."""
    return _RECOMPUTING.get()


def time_pooling_norms(body: nn.Module) -> list[str]:
    """Names of the BatchNorm layers of ``body`` whose output uses statistics of the current
    fold (training mode, or no running statistics): chunking the fold changes them."""
    return [
        name or type(m).__name__
        for name, m in body.named_modules()
        if isinstance(m, _BatchNorm) and (m.training or m.running_mean is None)
    ]


def check_chunk_safe(net: SpikingNetwork, steps: int, T: int, norms: str) -> None:
    """Raise unless chunks of ``steps`` give the gradients ``norms`` promises (see module)."""
    if norms not in NORM_POLICIES:
        raise ValueError(f"norms must be one of {', '.join(NORM_POLICIES)}, got {norms!r}")
    if norms == "chunk":
        return
    pooling = time_pooling_norms(net.body)
    if pooling:
        shown = ", ".join(repr(n) for n in pooling[:3])
        more = f" (and {len(pooling) - 3} more)" if len(pooling) > 3 else ""
        raise ValueError(
            f"time_checkpoint={steps} would change the gradients: BatchNorm layer(s) {shown}"
            f"{more} pool training statistics over all T={T} steps of the [T*B] fold, while a "
            f"chunk of {steps} steps would normalise with its own statistics. Accept per-chunk "
            "statistics with checkpoint_norms='chunk' (config: "
            "train.time_checkpoint_norms: chunk), put these layers in eval mode, or use a "
            "normalisation without batch statistics"
        )


def _declared_state(modules: list[TemporalModule]) -> list[tuple[TemporalModule, dict]]:
    return [(m, {name: getattr(m, name) for name in m.state_names}) for m in modules]


def _put_back(state: list[tuple[TemporalModule, dict[str, Any]]]) -> None:
    for module, values in state:
        for name, value in values.items():
            setattr(module, name, value)


class _Chunk:
    """One chunk's function for ``checkpoint``: the first call is the forward; later calls
    are recomputations, run from the chunk's start state and leaving no trace."""

    def __init__(self, net: SpikingNetwork, modules: list[TemporalModule]) -> None:
        self.net, self.modules = net, modules
        self.start = _declared_state(modules)  # the state carried into this chunk
        self.calls = 0

    def __call__(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == 1:
            return self.net._run_folded(x)
        return self._recompute(x)

    def _recompute(self, x: Tensor) -> Tensor:
        now = _declared_state(self.modules)
        norms = [m for m in self.net.body.modules() if isinstance(m, _BatchNorm)]
        buffers = [(b, b.detach().clone()) for m in norms for b in m.buffers()]
        neurons = [m for m in self.modules if isinstance(m, LIF)]
        records = [(n, n.membrane_record) for n in neurons]
        _put_back(self.start)
        for n, record in records:
            if record is not None:
                n.membrane_record = []  # recorded once, in the forward
        token = _RECOMPUTING.set(True)
        try:
            return self.net._run_folded(x)
        finally:
            _RECOMPUTING.reset(token)
            _put_back(now)
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            for n, record in records:
                n.membrane_record = record


def run_checkpointed(net: SpikingNetwork, x: Tensor, steps: int, norms: str = "exact") -> Tensor:
    """``net(x)`` for ``x`` ``[T, B, ...]`` in checkpointed chunks of ``steps`` steps, with the
    state carried from chunk to chunk; per-step outputs ``[T, B, ...]``."""
    check_chunk_safe(net, steps, x.shape[0], norms)
    modules = temporal_modules(net.body)
    outputs = []
    for begin in range(0, x.shape[0], steps):
        chunk = _Chunk(net, modules)
        outputs.append(checkpoint(chunk, x[begin : begin + steps], use_reentrant=False))
    return torch.cat(outputs)


@contextmanager
def time_checkpointing(
    model: nn.Module, steps: int | None, norms: str = "exact"
) -> Iterator[nn.Module]:
    """Within the block, ``model`` (a :class:`~spikecut.neurons.SpikingNetwork`) trains with
    ``time_checkpoint=steps`` and ``checkpoint_norms=norms``; restored on exit. ``steps=None``
    changes nothing."""
    from .neurons import SpikingNetwork

    if steps is None:
        yield model
        return
    if not isinstance(model, SpikingNetwork):
        raise TypeError(
            f"time checkpointing needs a spikecut SpikingNetwork (it chunks the sequence the "
            f"network folds), got {type(model).__name__}"
        )
    previous = model.time_checkpoint, model.checkpoint_norms
    model.time_checkpoint, model.checkpoint_norms = steps, norms
    try:
        yield model
    finally:
        model.time_checkpoint, model.checkpoint_norms = previous
