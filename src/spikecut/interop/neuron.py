"""A spiking neuron that repeats another framework's arithmetic, operation for operation.

SpikingJelly and snnTorch write the same leaky integrate-and-fire idea with different
floating-point expressions (``v + (x - v) / tau`` against ``beta * v + x``), different
comparisons (``>=`` against ``>``), reset values and reset timing (snnTorch subtracts the
previous step's spike). :class:`MirroredLIF` evaluates exactly the expressions of the named
``style``, so a network adapted from those frameworks gives their outputs to the last bit.

It is a :class:`~spikecut.neurons.LIF`: its membrane lives in ``v``, :meth:`reset` forgets it,
and everything in spikecut that finds neurons by type (reset, state compaction, streaming,
operation counts, calibration dropout, RCS membrane records) treats it like its own neurons.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..neurons import LIF, Surrogate

__all__ = ["MirroredLIF", "STYLES", "CHARGES", "RESETS"]

STYLES = ("spikingjelly", "snntorch")
"""Whose update order the neuron follows (see :class:`MirroredLIF`)."""

CHARGES = (
    "leak",
    "integrate",
    "tau",
    "tau_decay_input",
    "rate",
    "rate_decay_input",
    "simple_tau",
    "simple_tau_decay_input",
)
"""Charge equations ``u = f(v, x)``; see :func:`charge`."""

RESETS = ("value", "subtract", "none")
"""After a spike: set the membrane to ``v_reset``, subtract the threshold, or do nothing."""


def charge(
    kind: str, v: Tensor, x: Tensor, *, leak: float, tau: float, rate: float, v_reset: float
):
    """The membrane before firing, written as the framework writes it (float order matters).

    ``leak``: ``v·λ + x`` (snnTorch's ``beta * mem + x``, spikecut's LIF); ``integrate``:
    ``v + x``; ``tau[_decay_input]``: SpikingJelly's LIFNode; ``rate[_decay_input]``: its
    ParametricLIFNode (``rate = sigmoid(w)``); ``simple_tau[_decay_input]``: its
    SimpleLIFNode.
    """
    if kind == "leak":
        return leak * v + x
    if kind == "integrate":
        return v + x
    if kind == "tau_decay_input":
        return v + (x - (v - v_reset)) / tau
    if kind == "tau":
        return v - (v - v_reset) / tau + x
    if kind == "rate_decay_input":
        return v + (x - (v - v_reset)) * rate
    if kind == "rate":
        return v - (v - v_reset) * rate + x
    if kind == "simple_tau_decay_input":
        return v + (v_reset - v + x) / tau
    if kind == "simple_tau":
        return v + (v_reset - v) / tau + x
    raise ValueError(f"unknown charge {kind!r}; expected one of {', '.join(CHARGES)}")


class MirroredLIF(LIF):
    """An integrate-and-fire neuron that follows SpikingJelly's or snnTorch's update exactly.

    ``style="spikingjelly"`` (per step)::

        h = charge(v, x)
        s = 1[h >= θ]                    (1[h > θ] with fire_at_equal=False)
        v = s·v_reset + (1 − s)·h        (reset="value")
          = h − s·θ                      (reset="subtract");  h  (reset="none")

    ``style="snntorch"`` (``snntorch.Leaky``; ``v`` is its ``mem``)::

        r = 1[v > θ]                     (the previous step's spike, reset one step late)
        v = λ·v + x − r·θ                (subtract)  or  λ·((1 − r)·v) + x  (zero)
        s = 1[v > θ]
        with reset_delay=False the reset of this step's spike is applied at once.

    The output is ``amplitude·s`` (``emit="spikes"``) or the membrane after the step
    (``emit="membrane"``, a leaky read-out). Gradients (training) flow through spikecut's
    ``surrogate``; the forward values are the exact ones either way.

    Args:
        threshold: θ (``inf`` for a non-spiking read-out).
        style: ``"spikingjelly"`` or ``"snntorch"``.
        charge: the charge equation (:data:`CHARGES`); snnTorch style uses ``"leak"``.
        leak: λ of the ``leak`` charge (snnTorch's clamped beta).
        tau: τ of the ``tau*`` charges; ``rate``: the factor of the ``rate*`` charges.
        v_reset: the value a spike resets to and the leak's resting value (SpikingJelly).
        reset: ``"value"`` (zero for snnTorch), ``"subtract"`` or ``"none"``.
        fire_at_equal: spike when the membrane equals θ (SpikingJelly) or only above it.
        reset_delay: snnTorch's one-step-late reset.
        v_init: the membrane before the first step.
        amplitude: the value of a spike (snnTorch's ``graded_spikes_factor``).
        emit: ``"spikes"`` or ``"membrane"``.
    """

    def __init__(
        self,
        threshold: float = 1.0,
        *,
        style: str = "spikingjelly",
        charge: str = "leak",
        leak: float = 1.0,
        tau: float = 2.0,
        rate: float = 0.5,
        v_reset: float = 0.0,
        reset: str = "value",
        fire_at_equal: bool = True,
        reset_delay: bool = False,
        v_init: float = 0.0,
        amplitude: float = 1.0,
        emit: str = "spikes",
        surrogate: Surrogate | None = None,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        if charge not in CHARGES:
            raise ValueError(f"charge must be one of {', '.join(CHARGES)}, got {charge!r}")
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {', '.join(RESETS)}, got {reset!r}")
        if emit not in ("spikes", "membrane"):
            raise ValueError(f"emit must be 'spikes' or 'membrane', got {emit!r}")
        if style == "snntorch" and charge != "leak":
            raise ValueError("snntorch style neurons charge with the 'leak' equation")
        if charge.startswith(("tau", "simple_tau")) and not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        super().__init__(
            threshold=threshold,
            leak=leak if charge == "leak" else 1.0,
            reset="soft" if reset == "subtract" else "hard",
            v_init=v_init,
            amplitude=amplitude,
            surrogate=surrogate,
        )
        self.style = style
        self.charge = charge
        self.tau = float(tau)
        self.rate = float(rate)
        self.v_reset = float(v_reset)
        self.reset_rule = reset
        self.fire_at_equal = bool(fire_at_equal)
        self.reset_delay = bool(reset_delay)
        self.emit = emit

    def extra_repr(self) -> str:
        dynamics = {
            "leak": f"leak={self.leak:g}",
            "integrate": "integrate",
        }.get(self.charge, f"{self.charge}, tau={self.tau:g}, rate={self.rate:g}")
        return (
            f"style={self.style}, threshold={self.threshold:g}, {dynamics}, "
            f"reset={self.reset_rule}, v_reset={self.v_reset:g}, "
            f"fire_at_equal={self.fire_at_equal}, reset_delay={self.reset_delay}, "
            f"v_init={self.v_init:g}, amplitude={self.amplitude:g}, emit={self.emit}"
        )

    @property
    def spiking(self) -> bool:
        """False for a read-out that never fires (θ = inf)."""
        return not math.isinf(self.threshold)

    # -- one step

    def _fire(self, u: Tensor) -> Tensor:
        exact = (u >= self.threshold) if self.fire_at_equal else (u > self.threshold)
        exact = exact.to(u.dtype)
        if not (torch.is_grad_enabled() and u.requires_grad):
            return exact
        smooth = self.surrogate(u - self.threshold)  # value: exact; gradient: the surrogate's
        return exact + (smooth - smooth.detach())

    def _charge(self, v: Tensor, x: Tensor) -> Tensor:
        return charge(
            self.charge, v, x, leak=self.leak, tau=self.tau, rate=self.rate, v_reset=self.v_reset
        )

    def _step_spikingjelly(self, v: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self._charge(v, x)
        s = self._fire(h)
        if self.reset_rule == "value":
            v = s * self.v_reset + (1.0 - s) * h
        elif self.reset_rule == "subtract":
            v = h - s * self.threshold
        else:
            v = h
        return s, v

    def _step_snntorch(self, v: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        theta = self.threshold
        late = (v - theta > 0).to(v.dtype)  # the reset signal of the previous step's spike
        if self.reset_rule == "subtract":
            v = self.leak * v + x - late * theta
        elif self.reset_rule == "value":
            v = self.leak * ((1 - late) * v) + x
        else:
            v = self.leak * v + x
        s = self._fire(v)
        if not self.reset_delay:
            now = s - late  # snnTorch's "avoid double reset"
            if self.reset_rule == "subtract":
                v = v - now * theta
            elif self.reset_rule == "value":
                v = v - now * v
        return s, v

    # -- the sequence

    def _run(self, seq: Tensor) -> Tensor:
        v = self._initial_state(seq[0])
        step = self._step_snntorch if self.style == "snntorch" else self._step_spikingjelly
        outputs = []
        for x in seq:
            s, v = step(v, x)
            if self.membrane_record is not None:
                self.membrane_record.append(v)
            if self.emit == "membrane":
                outputs.append(v)
            else:
                outputs.append(s * self.amplitude if self.amplitude != 1.0 else s)
        self.v = v
        return torch.stack(outputs)
