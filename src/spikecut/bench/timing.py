"""The benchmark's clock: wall-clock seconds of a call, with the device's queue drained
before and after (CUDA kernels run asynchronously, so the clock must wait for them)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

__all__ = [
    "PhaseClock",
    "best_seconds",
    "best_seconds_interleaved",
    "interleaved_seconds",
    "seconds",
    "synchronize",
]


def synchronize(device: torch.device) -> None:
    """Wait for every kernel queued on ``device`` (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call of ``fn``, its device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def best_seconds(
    fn: Callable[[], object], device: torch.device, repeats: int, warmup: int
) -> float:
    """Best of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return min(seconds(fn, device) for _ in range(repeats))


def interleaved_seconds(
    calls: list[Callable[[], object]], device: torch.device, repeats: int, warmup: int
) -> list[list[float]]:
    """Every timed call's seconds, one list per call, one entry per turn: the calls take
    turns, so a load that drifts over the run (other processes on the machine) affects
    every variant alike, and the ``i``-th entries of two lists are a pair timed side by
    side."""
    for _ in range(warmup):
        for fn in calls:
            fn()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for i, fn in enumerate(calls):
            times[i].append(seconds(fn, device))
    return times


def best_seconds_interleaved(
    calls: list[Callable[[], object]], device: torch.device, repeats: int, warmup: int
) -> list[float]:
    """Best time of each call over :func:`interleaved_seconds`' turns."""
    return [min(times) for times in interleaved_seconds(calls, device, repeats, warmup)]


class PhaseClock:
    """Wall-clock seconds split by phase: each :meth:`lap` adds the time since the previous
    lap to its phase (the device drained first, so asynchronous work lands where it was
    queued). Passed to :meth:`spikecut.anytime.AnytimeClassifier.run` as ``clock``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.restart()

    def restart(self) -> None:
        """Start the next lap now (time before it is not counted)."""
        synchronize(self.device)
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        synchronize(self.device)
        current = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + current - self._last
        self._last = current
