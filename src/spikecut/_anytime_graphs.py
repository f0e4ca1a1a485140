"""CUDA graphs for the anytime engine's masked step loop (the ``"graphed"`` strategy).

On a GPU a step of a small network is a few dozen kernel launches of a few microseconds
each, so the engine's step loop is bound by launches, not by arithmetic: stopping samples
early saved nothing there (0.16–0.28× of full-T inference for MNIST-size nets on an H200).
:class:`StepGraphs` captures, for one padded batch size (:func:`bucket`), one graph per
step: the network's step on a static input buffer, ``Y(t)`` accumulated by the same
``cumsum`` as offline evaluation, the rule, and the answers of the rows it releases (all on
the device, no host sync). A run copies its input into the buffer and replays graph after
graph, reading one flag per step (does any row still run?), so that a step costs one
launch and one sync instead of one launch per operation.

Rows are masked, never compacted (a graph's shapes are fixed): the padding rows of a bucket
start as exited and every real row answers exactly as the ``mask`` strategy would. The
graphs are kept per (bucket, input shape, dtype, frames) and captured again when the
network's parameters were replaced (not when they were updated in place: the graphs read
them where they are).

A graph backend is built for a network's time-aware modules, ``backend(modules)``, and
makes one recorder per step, ``backend() -> recorder``, with ``recorder.capture(fn)``
(records ``fn``'s work) and ``recorder.replay()``. :class:`CudaGraphBackend` is the real one.
:class:`EagerReplay` is a CPU stand-in for the tests: it runs ``fn`` again on replay, after
putting back the state references ``fn`` found at capture and moving the state it leaves
into the tensors the capture left, which is what replaying a captured graph amounts to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .neurons import TemporalModule

__all__ = ["CudaGraphBackend", "EagerReplay", "StepGraphs", "bucket"]


def bucket(batch: int) -> int:
    """The padded batch size a graph is captured for: the next power of two (at most twice
    the work of the batch itself, and few graphs for a stream of varied sizes)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return 1 << (batch - 1).bit_length()


def _state_of(modules: list[TemporalModule]) -> list[tuple[TemporalModule, str, Any]]:
    return [(m, name, getattr(m, name)) for m in modules for name in m.state_names]


class CudaGraphBackend:
    """``torch.cuda.CUDAGraph`` recorders that share one memory pool (one per bucket).
    ``modules`` is taken for the stand-in's sake: a graph needs no help with the state."""

    def __init__(self, modules: list[TemporalModule]) -> None:
        self.pool = torch.cuda.graph_pool_handle()

    def __call__(self) -> _CudaRecorder:
        return _CudaRecorder(self.pool)


class _CudaRecorder:
    def __init__(self, pool: Any) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.pool = pool

    def capture(self, fn: Callable[[], None]) -> None:
        with torch.cuda.graph(self.graph, pool=self.pool):
            fn()

    def replay(self) -> None:
        self.graph.replay()


class EagerReplay:
    """A CPU stand-in for :class:`CudaGraphBackend` (tests): same buffers, same operations."""

    def __init__(self, modules: list[TemporalModule]) -> None:
        self.modules = modules

    def __call__(self) -> _EagerRecorder:
        return _EagerRecorder(self.modules)


class _EagerRecorder:
    def __init__(self, modules: list[TemporalModule]) -> None:
        self.modules = modules
        self.fn: Callable[[], None] | None = None

    def capture(self, fn: Callable[[], None]) -> None:
        self.before = _state_of(self.modules)
        fn()
        self.after = _state_of(self.modules)
        self.fn = fn

    def replay(self) -> None:
        for module, name, value in self.before:
            module.__dict__[name] = value
        self.fn()
        # a graph writes where the capture wrote: carry the new state into those tensors
        for module, name, kept in self.after:
            value = getattr(module, name)
            if isinstance(kept, Tensor) and value is not kept:
                kept.copy_(value)
            module.__dict__[name] = kept


class StepGraphs:
    """One graph per step of ``snn`` for inputs shaped like ``example`` padded to ``rows``.

    ``criterion(Y, t) -> Bool [rows]`` must run on the device without reading anything back
    (a rule's ``_criterion`` on a kept step tensor); ``backend`` makes the recorders.
    """

    def __init__(
        self,
        snn: nn.Module,
        modules: list[TemporalModule],
        criterion: Callable[[Tensor, int], Tensor],
        T: int,
        rows: int,
        example: Tensor,
        frames: bool,
        backend: Callable[[], Any],
    ) -> None:
        self.T, self.rows, self.frames = T, rows, frames
        shape = (T, rows, *example.shape[2:]) if frames else (rows, *example.shape[1:])
        self.inputs = example.new_zeros(shape)
        device = example.device
        self.running = torch.zeros(rows, dtype=torch.bool, device=device)
        self.exit_steps = torch.full((rows,), T, dtype=torch.long, device=device)
        self.any_running = torch.zeros((), dtype=torch.bool, device=device)
        self._snn, self._modules, self._criterion = snn, modules, criterion
        self.parameters: tuple = ()  # the engine's record of the parameters captured
        self._warm_up()
        self.graphs = []
        self._kept: list[Any] = []  # state tensors later graphs read: alive as long as they
        for module in modules:
            module.reset()
        for t in range(1, T + 1):
            recorder = backend()
            recorder.capture(lambda t=t: self._step(t))
            self.graphs.append(recorder)
            self._kept.append(_state_of(modules))
        for module in modules:
            module.reset()

    def _warm_up(self) -> None:
        """One eager pass of every step (kernels chosen, the output size learnt), on a side
        stream on CUDA as capturing wants."""
        stream = torch.cuda.Stream() if self.inputs.is_cuda else None
        if stream is not None:
            stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            for module in self._modules:
                module.reset()
            out = self._network(1)
            self.buffer = out.new_zeros(self.T, *out.shape)
            self.logits = out.new_zeros(out.shape)
            self.buffer[0] = out
            for t in range(2, self.T + 1):
                self._step(t)
        if stream is not None:
            torch.cuda.current_stream().wait_stream(stream)

    def _network(self, t: int) -> Tensor:
        step_input = self.inputs[t - 1] if self.frames else self.inputs
        return self._snn(step_input.unsqueeze(0))[0].float()

    def _step(self, t: int) -> None:
        """Step ``t`` on the buffers, as :meth:`AnytimeClassifier._run_mask` does it."""
        self.buffer[t - 1] = self._network(t)
        y = self.buffer[:t].cumsum(0)[t - 1]
        fire = self.running.clone() if t == self.T else self._criterion(y, t) & self.running
        self.exit_steps.masked_fill_(fire, t)
        torch.where(fire.unsqueeze(1), y, self.logits, out=self.logits)
        self.running.logical_and_(~fire)
        torch.any(self.running, out=self.any_running)

    def run(self, x: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        """Exit steps ``[batch]`` and ``Y`` at exit ``[batch, K]`` of the batch ``x``."""
        if self.frames:
            self.inputs[:, :batch].copy_(x)
        else:
            self.inputs[:batch].copy_(x)
        self.running.fill_(False)
        self.running[:batch] = True
        self.exit_steps.fill_(self.T)
        for graph in self.graphs:
            graph.replay()
            if not bool(self.any_running):  # one host sync per step
                break
        return self.exit_steps[:batch].clone(), self.logits[:batch].clone()
