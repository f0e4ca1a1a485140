"""How NIR's continuous-time neurons become discrete steps, and which convention a graph uses.

NIR writes a LIF neuron as ``τ·dv/dt = (v_leak − v) + r·I`` and an IF neuron as
``dv/dt = r·I``. One forward-Euler step of length ``dt`` gives, with ``λ = 1 − dt/τ``::

    v ← λ·v + (dt/τ)·v_leak + (r·dt/τ)·I          (LIF)
    v ← v + r·dt·I                               (IF)

spikecut writes what snnTorch and SpikingJelly write, with ``dt = 1e-4`` (:data:`DT`): a LIF
with leak λ as ``τ = dt/(1 − λ)``, ``r = τ/dt`` (so the input gain ``r·dt/τ`` is 1), ``v_leak =
v_reset = 0``; an IF as ``r = 1/dt``. On import the conventions of the other writers are
recognised: gain 1 (``r = τ/dt``: snnTorch, SpikingJelly without ``decay_input``, spikecut),
``r = 1`` with ``v_leak = v_reset`` (SpikingJelly's ``decay_input``: gain ``dt/τ``), and for IF
``r = 1`` (Sinabs, Norse, snnTorch) as well as ``r = 1/dt`` (SpikingJelly, spikecut). Norse
reads graphs with ``dt = 1e-3``; pass ``dt`` to :func:`spikecut.nir.load` for a graph written
with another step.
"""

from __future__ import annotations

import math

__all__ = [
    "DT",
    "RTOL",
    "leak_to_tau",
    "tau_to_leak",
    "input_gain",
    "close",
    "describe",
]

DT = 1e-4
"""The time step spikecut writes and, by default, reads (snnTorch's and SpikingJelly's)."""

RTOL = 1e-5
"""Relative tolerance when recognising a convention (the writers store float32)."""


def leak_to_tau(leak: float, dt: float = DT) -> float:
    """τ of a discrete leak λ < 1: ``dt / (1 − λ)``."""
    if not 0.0 <= leak < 1.0:
        raise ValueError(f"a leaky neuron needs 0 <= leak < 1, got {leak}")
    return dt / (1.0 - leak)


def tau_to_leak(tau: float, dt: float = DT) -> float:
    """The discrete leak ``λ = 1 − dt/τ`` (must lie in [0, 1))."""
    if not tau > 0:
        raise ValueError(f"τ must be > 0, got {tau}")
    return 1.0 - dt / tau


def input_gain(tau: float, r: float, dt: float = DT) -> float:
    """The factor of the input in one Euler step of a LIF: ``r·dt/τ``."""
    return r * dt / tau


def close(a: float, b: float) -> bool:
    """Equal up to :data:`RTOL` (both finite)."""
    return math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0)


def describe(dt: float = DT) -> str:
    """The convention spikecut writes, as recorded in a graph's metadata."""
    return (
        f"discrete steps of dt={dt:g}: LIF leak l as tau=dt/(1-l), r=tau/dt, v_leak=0 "
        "(v <- l*v + I); IF as r=1/dt (v <- v + I); spikes at v > v_threshold, then v <- v_reset"
    )
