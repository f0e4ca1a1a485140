"""Spiking neurons (SPEC §2): one leaky integrate-and-fire family for conversion and training.

Per step, with input current ``I(t)``::

    u(t) = leak * v(t-1) + I(t)
    s(t) = 1[u(t) > threshold]
    v(t) = u(t) - threshold * s(t)        (soft reset)
         = u(t) * (1 - s(t))              (hard reset)
    out(t) = amplitude * s(t)

A neuron takes a time-major sequence ``[T, B, ...]``. Inside a :class:`SpikingNetwork` the
stateless layers run on the ``[T*B, ...]`` fold of the sequence; the network tells its neurons
the number of steps in the fold, and the neurons unfold it for their recurrence. The membrane
state stays on the module between calls until :func:`reset`, so running T steps at once or
one step at a time gives identical outputs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .memory import auto_chunk

__all__ = [
    "TemporalModule",
    "Surrogate",
    "Triangle",
    "Sigmoid",
    "ArcTan",
    "LIF",
    "IF",
    "SpikingNetwork",
    "reset",
    "spiking_layers",
    "temporal_modules",
    "private_state",
    "temporarily_set",
]


# --------------------------------------------------------------------------- surrogates


class Surrogate:
    """Heaviside spike ``s = 1[x > 0]`` with a smooth stand-in for its derivative.

    ``x`` is ``u - threshold``. Subclasses define :meth:`derivative`; calling the object
    applies the spike function with that surrogate gradient.
    """

    name = "surrogate"

    def derivative(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def slope(self, u: Tensor, threshold: float, out: Tensor) -> Tensor:
        """``derivative(u - threshold)`` written into ``out`` (and returned): the BPTT
        backward's per-step slope. Subclasses compute it in place, without the temporaries
        of :meth:`derivative` (which a training step pays per neuron and step)."""
        return out.copy_(self.derivative(u - threshold))

    def __call__(self, x: Tensor) -> Tensor:
        return _SpikeFunction.apply(x, self)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, surrogate: Surrogate) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.derivative(x), None


class Triangle(Surrogate):
    """Triangle surrogate ``(1/γ²)·max(0, γ − |x|)`` (SPEC §2; paper default γ = 1)."""

    name = "triangle"

    def __init__(self, gamma: float = 1.0) -> None:
        if gamma <= 0:
            raise ValueError(f"Triangle surrogate needs gamma > 0, got {gamma}")
        self.gamma = float(gamma)

    def derivative(self, x: Tensor) -> Tensor:
        return (self.gamma - x.abs()).clamp_min(0.0) / (self.gamma * self.gamma)

    def slope(self, u: Tensor, threshold: float, out: Tensor) -> Tensor:
        torch.sub(u, threshold, out=out).abs_()
        torch.sub(out.new_full((), self.gamma), out, out=out)  # γ − |x|, as derivative()
        out.clamp_min_(0.0)
        return out if self.gamma == 1.0 else out.div_(self.gamma * self.gamma)  # x/1 = x


class Sigmoid(Surrogate):
    """Derivative of ``sigmoid(alpha·x)``: ``alpha·σ(αx)·(1 − σ(αx))``."""

    name = "sigmoid"

    def __init__(self, alpha: float = 4.0) -> None:
        self.alpha = float(alpha)

    def derivative(self, x: Tensor) -> Tensor:
        sig = torch.sigmoid(self.alpha * x)
        return self.alpha * sig * (1.0 - sig)

    def slope(self, u: Tensor, threshold: float, out: Tensor) -> Tensor:
        torch.sub(u, threshold, out=out).mul_(self.alpha).sigmoid_()
        return out.addcmul_(out, out, value=-1.0).mul_(self.alpha)  # α·(σ − σ²)


class ArcTan(Surrogate):
    """Derivative of ``arctan(π/2·αx)/π + 1/2``: ``(α/2) / (1 + (π/2·αx)²)``."""

    name = "arctan"

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = float(alpha)

    def derivative(self, x: Tensor) -> Tensor:
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * x) ** 2)

    def slope(self, u: Tensor, threshold: float, out: Tensor) -> Tensor:
        # three passes: x, then 1 + (π/2·α)²·x·x, then (α/2) / that (rounded as x·x times
        # the squared constant rather than the square of the scaled x: equal to ~1 ulp)
        torch.sub(u, threshold, out=out)
        one = out.new_ones(())
        torch.addcmul(one, out, out, value=(math.pi / 2.0 * self.alpha) ** 2, out=out)
        return torch.div(out.new_full((), self.alpha / 2.0), out, out=out)


SURROGATES: dict[str, type[Surrogate]] = {
    "triangle": Triangle,
    "sigmoid": Sigmoid,
    "arctan": ArcTan,
}
"""Surrogates by name; each takes its width/sharpness as the one constructor argument."""


# --------------------------------------------------------------------------- neurons


class TemporalModule(nn.Module):
    """A module that needs to know time: spiking neurons and time-aware normalisation.

    Inside a :class:`SpikingNetwork` the body runs on the ``[T*B, ...]`` fold of the
    sequence; the network sets ``folded_steps`` to T for the duration of the call so that
    the module can unfold time. Outside a network the module sees ``[T, B, ...]`` directly.

    State carried from one call to the next is declared by the module itself with
    :meth:`register_state` (as SpikingJelly's ``register_memory``): :meth:`reset` puts every
    declared attribute back to its initial value, and the anytime engine
    (:mod:`spikecut.anytime`) compacts, saves and restores exactly these attributes. A tensor
    value holds one row per sample (dim 0); any other value (``None`` after a reset, a step
    counter) is shared by all rows.
    """

    def __init__(self) -> None:
        super().__init__()
        self.folded_steps: int | None = None
        self._state_initial: dict[str, Any] = {}

    def register_state(self, name: str, initial: Any = None) -> None:
        """Declare attribute ``name`` as state carried between calls and set it to
        ``initial`` (an immutable value, e.g. ``None`` or ``0``: what a reset restores)."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"state attribute: expected an identifier, got {name!r}")
        self._state_initial[name] = initial
        setattr(self, name, initial)

    @property
    def state_names(self) -> tuple[str, ...]:
        """The attributes declared with :meth:`register_state`, in declaration order."""
        return tuple(getattr(self, "_state_initial", {}))

    def reset(self) -> None:
        """Forget state carried between calls: every declared attribute back to its initial
        value."""
        for name, initial in getattr(self, "_state_initial", {}).items():
            if name in self.__dict__:  # a plain attribute: skip nn.Module.__setattr__'s checks
                self.__dict__[name] = initial
            else:
                setattr(self, name, initial)

    def unfold(self, x: Tensor) -> Tensor:
        """View ``x`` as a time-major sequence ``[T, B, ...]``."""
        steps = self.folded_steps
        if steps is None:
            if x.dim() < 2:
                raise ValueError(
                    f"{type(self).__name__} expects a time-major input [T, B, ...], "
                    f"got shape {tuple(x.shape)}"
                )
            return x
        if x.shape[0] % steps != 0:
            raise ValueError(f"folded input of {x.shape[0]} rows is not divisible by T={steps}")
        return x.reshape(steps, x.shape[0] // steps, *x.shape[1:])


class LIF(TemporalModule):
    """Leaky integrate-and-fire neuron over a time-major sequence ``[T, B, ...]``.

    Defaults are the paper's directly trained neuron: θ = 1, λ = 0.5, hard reset,
    v_init = 0, amplitude 1, triangle surrogate with γ = 1.

    Args:
        threshold: firing threshold θ (a float; converted nets pass the learned QCFS θ).
        leak: λ, the factor applied to the membrane each step (1.0 = no leak).
        reset: ``"hard"`` (membrane to 0 after a spike) or ``"soft"`` (subtract θ).
        v_init: membrane value before the first step after a reset.
        amplitude: value of an emitted spike (θ for converted nets, 1 for trained SNNs).
        surrogate: the surrogate gradient used in training.
    """

    def __init__(
        self,
        threshold: float = 1.0,
        leak: float = 0.5,
        reset: str = "hard",
        v_init: float = 0.0,
        amplitude: float = 1.0,
        surrogate: Surrogate | None = None,
    ) -> None:
        super().__init__()
        if reset not in ("hard", "soft"):
            raise ValueError(f"reset must be 'hard' or 'soft', got {reset!r}")
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"leak must be in [0, 1], got {leak}")
        self.threshold = float(threshold)
        self.leak = float(leak)
        self.reset_mode = reset
        self.v_init = float(v_init)
        self.amplitude = float(amplitude)
        self.surrogate = surrogate if surrogate is not None else Triangle(1.0)
        self.v: Tensor | None
        self.register_state("v", None)  # the membrane; None until the first step
        # While a list, every step's membrane (after reset) is appended here (RCS-SNN).
        self.membrane_record: list[Tensor] | None = None
        # True while the carried state is known to be referenced by nobody else (inside one
        # chunked call or one anytime run): inference then updates it in place, uncopied.
        self.state_private = False

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold:g}, leak={self.leak:g}, reset={self.reset_mode!r}, "
            f"v_init={self.v_init:g}, amplitude={self.amplitude:g}, surrogate={self.surrogate}"
        )

    def forward(self, x: Tensor) -> Tensor:
        if (
            self.folded_steps == 1
            and self.membrane_record is None
            and not torch.is_grad_enabled()
            and type(self)._run is LIF._run  # a subclass's own recurrence is kept
        ):
            return self._step_inference(x)
        out = self._run(self.unfold(x))
        return out.reshape(x.shape)

    def _step_inference(self, x: Tensor) -> Tensor:
        """One graph-free step on ``x`` ``[B, ...]`` (a network streamed one step per call):
        the recurrence of :func:`_lif_loop` without its sequence views, output buffer and
        reshapes, which were half of a small layer's step."""
        v = self.v
        if v is None:  # the first step starts from the constant v_init: no state to fill
            v, target = float(self.v_init), torch.empty_like(x)
        else:
            if v.shape != x.shape:
                self._initial_state(x)  # raises: the state belongs to another batch
            if not self.state_private:
                v = v.clone()  # a state carried from an earlier call may be held by the caller
            target = v
        u = torch.empty_like(x)
        self.__dict__["v"] = _lif_step(
            v,
            x,
            u,
            self.leak,
            self.threshold,
            self.reset_mode == "soft",
            target,
            spikes_in_place=True,
            amplitude=self.amplitude,
        )
        return u

    def _initial_state(self, like: Tensor) -> Tensor:
        if self.v is None:
            return torch.full_like(like, self.v_init)
        if self.v.shape != like.shape:
            raise ValueError(
                f"neuron state has shape {tuple(self.v.shape)} but the input step has shape "
                f"{tuple(like.shape)}; call spikecut.neurons.reset(model) between batches"
            )
        return self.v

    def _run(self, seq: Tensor) -> Tensor:
        """The recurrence over ``seq`` ``[T, B, ...]``; returns the output spikes ``[T, B, ...]``.

        Three paths give the same numbers: a graph-free loop with in-place updates when no
        gradient is needed, a whole-sequence autograd function with a hand-written BPTT
        backward in training, and the per-step autograd loop when membranes are recorded
        in training (RCS-SNN differentiates through the recorded membranes).
        """
        # without a state yet, inference starts from the constant v_init (v None)
        v = None if self.v is None else self._initial_state(seq[0])
        needs_grad = torch.is_grad_enabled() and (
            seq.requires_grad or (v is not None and v.requires_grad)
        )
        if needs_grad and self.membrane_record is not None:
            return self._run_autograd(seq, self._initial_state(seq[0]) if v is None else v)
        if needs_grad:  # without a state, from the constant v_init (no state filled, copied)
            out, v = _LIFSequence.apply(
                seq,
                self.v_init if v is None else v,
                self.leak,
                self.threshold,
                self.reset_mode == "soft",
                self.surrogate,
            )
            self.v = v
            return out * self.amplitude if self.amplitude != 1.0 else out
        if not torch.is_grad_enabled():  # no_grad or inference mode already
            return self._run_inference(seq, v)
        with torch.no_grad():
            return self._run_inference(seq, v)

    def _run_inference(self, seq: Tensor, v: Tensor | None) -> Tensor:
        """Graph-free recurrence: each step's membrane ``u(t)`` is written into the output
        buffer and turned into that step's spikes in place. Without a state (``v`` None)
        the first step starts from the constant ``v_init`` (a pass over the state saved)."""
        out = torch.empty_like(seq)
        record = self.membrane_record
        membranes = torch.empty_like(seq) if record is not None else None
        if v is None:
            initial, v = float(self.v_init), torch.empty_like(seq[0])
        else:  # a state carried from an earlier call may be held by the caller: copy it
            initial = None
            v = v if v is not self.v or self.state_private else v.clone()
        # the plain attribute set directly: nn.Module.__setattr__ costs per streamed step
        self.__dict__["v"] = _lif_loop(
            seq,
            v,
            self.leak,
            self.threshold,
            self.reset_mode == "soft",
            out,
            membranes,
            spikes_in_place=True,
            amplitude=self.amplitude,
            initial=initial,
        )
        if record is not None:
            record.extend(membranes.unbind(0))
        return out

    def _run_autograd(self, seq: Tensor, v: Tensor) -> Tensor:
        """Per-step autograd loop: slow, but every recorded membrane carries its gradient."""
        theta = self.threshold
        spikes = []
        for x_t in seq:
            u = v * self.leak + x_t if self.leak != 1.0 else v + x_t
            s = self.surrogate(u - theta)
            v = u - theta * s if self.reset_mode == "soft" else u * (1.0 - s)
            if self.membrane_record is not None:
                self.membrane_record.append(v)
            spikes.append(s)
        # In training the state keeps its graph, so BPTT runs across chunks.
        self.v = v
        out = torch.stack(spikes)
        return out * self.amplitude if self.amplitude != 1.0 else out


def _lif_loop(
    seq: Tensor,
    v: Tensor,
    leak: float,
    threshold: float,
    soft: bool,
    u_out: Tensor,
    v_out: Tensor | None = None,
    *,
    spikes_in_place: bool = False,
    amplitude: float = 1.0,
    spikes_out: Tensor | None = None,
    initial: float | None = None,
) -> Tensor:
    """Run the LIF recurrence without autograd, writing ``u(t)`` into ``u_out[t]``.

    ``v`` (the membrane before the first step) is updated in place, or, when ``v_out`` is
    given, each step's membrane after reset is written to ``v_out[t]``. With
    ``spikes_in_place`` each ``u_out[t]`` becomes that step's output ``amplitude·s(t)`` as
    soon as the step is done (while it is still in cache); otherwise ``spikes_out[t]``, when
    given, receives ``s(t)``. With ``initial``, the membrane before the first step is that
    constant and ``v`` only a buffer (its values unread). Returns the final membrane. The
    arithmetic is that of the per-step definition, operation for operation (``v·λ + I``,
    ``u − θ·s``, ``u·(1 − s)``; in place of the last, ``u − u·s`` when the spikes are
    written in place, equal since ``u·s`` is exact), so the results are bit-identical to it.
    """
    state = v
    for t in range(seq.shape[0]):
        v = _lif_step(
            initial if t == 0 and initial is not None else v,
            seq[t],
            u_out[t],
            leak,
            threshold,
            soft,
            state if v_out is None else v_out[t],
            spikes_in_place=spikes_in_place,
            amplitude=amplitude,
            spikes=None if spikes_out is None else spikes_out[t],
        )
    return v


def _integrate(v: Tensor | float, x_t: Tensor, leak: float, out: Tensor) -> None:
    """``u = v·λ + I`` into ``out`` (which may be ``v``): in one pass where ``λ·v`` is exact
    (λ = 1, or a power of two such as the usual 0.5), so that adding ``λ·v`` inside the
    addition rounds as the definition's two operations do; in two otherwise. A float ``v``
    is the constant initial membrane: ``I + fl(v·λ)``, the same numbers in one pass."""
    if isinstance(v, float):
        torch.add(x_t, _initial_drive(v, leak, x_t.dtype), out=out)
    elif leak == 1.0:
        torch.add(v, x_t, out=out)
    elif math.frexp(leak)[0] == 0.5:  # λ = 2^k: λ·v is exact
        torch.add(x_t, v, alpha=leak, out=out)
    else:
        torch.mul(v, leak, out=out)
        out.add_(x_t)


@functools.lru_cache(maxsize=256)
def _initial_drive(v_init: float, leak: float, dtype: torch.dtype) -> float:
    """``v_init·λ`` rounded as a state of ``dtype`` filled with ``v_init`` computes it."""
    v = torch.full((), v_init, dtype=dtype)
    return float(v if leak == 1.0 else v * leak)


def _lif_step(
    v: Tensor | float,
    x_t: Tensor,
    u: Tensor,
    leak: float,
    threshold: float,
    soft: bool,
    target: Tensor,
    *,
    spikes_in_place: bool,
    amplitude: float,
    spikes: Tensor | None = None,
) -> Tensor:
    """One step of :func:`_lif_loop`: ``u(t)`` into ``u``, the membrane after reset into
    ``target`` (which may be ``v`` itself), and returns ``target``."""
    if spikes_in_place and spikes is None:
        # inference: u(t) is built in target and the spikes go straight into u, so the
        # spike test runs once (four passes over the state instead of five)
        _integrate(v, x_t, leak, target)
        torch.gt(target, threshold, out=u)
        if soft and amplitude == threshold:
            # a converted net's neuron: its output θ·s is also what the reset subtracts,
            # so the reset reads the output (three passes over the state instead of four)
            if amplitude != 1.0:
                u.mul_(amplitude)
            return target.sub_(u)  # u − θ·s, the operands and order below (θ·s exact)
        if soft:
            target.add_(u, alpha=-threshold)  # u − θ·s: the operands and order below
        else:  # u − u·s: equal to u·(1 − s) below, as u·s is exact for s ∈ {0, 1}
            target.addcmul_(target, u, value=-1.0)
        if amplitude != 1.0:
            u.mul_(amplitude)
        return target
    _integrate(v, x_t, leak, u)
    # The new membrane is written over the old one (no longer needed) or into v_out[t];
    # the spike test is computed into that same buffer, so no temporary is allocated.
    if spikes is not None:
        torch.gt(u, threshold, out=spikes)
    if soft:  # the spikes just written serve the reset, else the test goes into target
        s = spikes if spikes is not None else torch.gt(u, threshold, out=target)
        torch.add(u, s, alpha=-threshold, out=target)  # u − θ·s (θ·s is exact)
    elif spikes is not None:  # u − u·s in one pass: equal to u·(1 − s), as u·s is exact
        torch.addcmul(u, u, spikes, value=-1.0, out=target)
    else:
        torch.le(u, threshold, out=target)
        target.mul_(u)  # (1 − s)·u = u·(1 − s)
    if spikes_in_place:
        u.gt_(threshold)
        if amplitude != 1.0:
            u.mul_(amplitude)
    return target


class _LIFSequence(torch.autograd.Function):
    """The whole LIF sequence as one autograd node (training without per-step graphs).

    Forward saves only the membranes ``u(t)`` before reset; backward runs BPTT step by
    step (each step's tensors stay in cache) with the surrogate slope ``σ' = σ'(u(t) − θ)``
    recomputed from ``u(t)`` (:meth:`Surrogate.slope`, in place)::

        g_u(t) = g_v(t) + σ'·(g_s(t) − θ·g_v(t))                 (soft reset)
        g_u(t) = σ'·g_s(t) + g_v(t)·((1 − s(t)) − σ'·u(t))       (hard reset)
        g_I(t) = g_u(t),   g_v(t−1) = λ·g_u(t)

    where ``g_s(t)`` is the gradient of the spikes and ``g_v(T)`` that of the final state.
    The gradient flows through the reset term, as autograd through the per-step definition
    does. ``g_v(t−1)`` is never formed: λ rides on the operations that read ``g_u(t)``, so a
    hard-reset step makes four passes over the state besides the slope (it made seven, and
    the slope six temporaries, a third of a small network's training step).
    """

    @staticmethod
    def forward(ctx, seq, v0, leak, threshold, soft, surrogate):
        """``v0``: the membrane before the first step, a tensor or the constant v_init."""
        u_all, spikes = torch.empty_like(seq), torch.empty_like(seq)
        constant = isinstance(v0, float)
        v = _lif_loop(
            seq,
            torch.empty_like(seq[0]) if constant else v0.clone(),
            leak,
            threshold,
            soft,
            u_all,
            spikes_out=spikes,
            initial=v0 if constant else None,
        )
        ctx.save_for_backward(u_all)
        ctx.leak, ctx.threshold, ctx.soft, ctx.surrogate = leak, threshold, soft, surrogate
        ctx.set_materialize_grads(False)
        return spikes, v

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_v):
        (u_all,) = ctx.saved_tensors
        theta, soft, surrogate = ctx.threshold, ctx.soft, ctx.surrogate
        if grad_out is None:  # only the final state was used
            grad_out = torch.zeros_like(u_all)
        grad = torch.empty_like(u_all)
        slope = torch.empty_like(u_all[0])
        through = None if soft else torch.empty_like(slope)  # (1 − s) − σ'·u
        # g_v(t) = scale·later: the final state's gradient, then λ·g_u(t+1); None for zero
        later, scale = grad_v, 1.0
        for t in range(u_all.shape[0] - 1, -1, -1):
            u, g_u = u_all[t], grad[t]
            surrogate.slope(u, theta, out=slope)
            if later is None:  # no gradient reaches the state: only the spikes'
                torch.mul(slope, grad_out[t], out=g_u)
            elif soft:
                torch.add(grad_out[t], later, alpha=-theta * scale, out=g_u)
                g_u.mul_(slope).add_(later, alpha=scale)
            else:
                torch.le(u, theta, out=through)
                through.addcmul_(slope, u, value=-1.0)
                torch.mul(slope, grad_out[t], out=g_u)
                g_u.addcmul_(through, later, value=scale)
            later, scale = g_u, ctx.leak
        grad_v0 = None
        if ctx.needs_input_grad[1]:
            grad_v0 = torch.zeros_like(slope) if later is None else later * scale
        return grad, grad_v0, None, None, None, None


class IF(LIF):
    """Integrate-and-fire neuron: :class:`LIF` with leak 1.0.

    Its defaults are those of a converted network's neuron apart from θ: soft reset.
    ``to_snn`` sets θ, ``v_init = θ/2`` and ``amplitude = θ`` from each QCFS layer.
    """

    def __init__(
        self,
        threshold: float = 1.0,
        reset: str = "soft",
        v_init: float = 0.0,
        amplitude: float = 1.0,
        surrogate: Surrogate | None = None,
    ) -> None:
        super().__init__(
            threshold=threshold,
            leak=1.0,
            reset=reset,
            v_init=v_init,
            amplitude=amplitude,
            surrogate=surrogate,
        )


# --------------------------------------------------------------------------- networks


def spiking_layers(model: nn.Module) -> list[LIF]:
    """All neurons of ``model`` in module order."""
    return [m for m in model.modules() if isinstance(m, LIF)]


def temporal_modules(model: nn.Module) -> list[TemporalModule]:
    """All time-aware modules of ``model`` (neurons, TEBN, ...) in module order."""
    return [m for m in model.modules() if isinstance(m, TemporalModule)]


def reset(model: nn.Module) -> None:
    """Reset the state of every neuron (and time-aware layer) in ``model``, nothing outside it."""
    for module in temporal_modules(model):
        module.reset()


@contextmanager
def temporarily_set(modules: list[nn.Module], name: str, value: object) -> Iterator[None]:
    """Set plain attribute ``name`` (not a parameter, buffer or submodule) of every module
    to ``value`` within the block; restore after. Written straight into the instance
    dictionaries: ``nn.Module.__setattr__`` was a tenth of a step's time for a small
    network streamed one sample at a time."""
    previous = [m.__dict__[name] for m in modules]
    for m in modules:
        m.__dict__[name] = value
    try:
        yield
    finally:
        for m, p in zip(modules, previous, strict=True):
            m.__dict__[name] = p


def private_state(model: nn.Module) -> AbstractContextManager[None]:
    """Within the block, ``model``'s neurons update their carried state in place (no copy).

    For loops that own the state from one call to the next (the chunks of one forward,
    the steps of one anytime run); restored on exit.
    """
    return temporarily_set(spiking_layers(model), "state_private", True)


def _folded(modules: list[TemporalModule], steps: int) -> AbstractContextManager[None]:
    return temporarily_set(modules, "folded_steps", steps)


class SpikingNetwork(nn.Module):
    """Runs an ordinary network body on a time-major sequence.

    ``forward(x)`` takes ``[T, B, ...]``, runs ``body`` on the ``[T*B, ...]`` fold (so conv,
    linear, BatchNorm and pooling see one big batch) while its neurons unfold time for their
    recurrence, and returns per-step outputs ``[T, B, ...]`` (per-step logits for a
    classifier). Call :func:`reset` (or :meth:`reset`) before each new input.

    ``time_chunk`` (eval mode only; training folds the whole sequence, so BatchNorm
    statistics pool over all steps, unless ``time_checkpoint`` is set) runs the sequence
    in chunks of that many steps, which gives the same outputs since the state carries
    over, and bounds the memory of a call by one chunk's activations. ``"auto"`` sizes the
    chunks from the first step's neuron states: on CPU so that one layer's activations stay
    under :data:`~spikecut.memory.AUTO_CHUNK_BYTES` (large tensors are fresh ``mmap`` pages
    on every call, whose faults cost more than the bigger fold saves), or under
    :data:`~spikecut.memory.AUTO_CHUNK_BYTES_KEPT` where freed blocks are kept for reuse
    (:func:`~spikecut.speed.keep_large_allocations`); on other devices within an eighth of
    the free memory.

    ``time_checkpoint`` (training only) runs a forward that needs gradients in chunks of
    that many steps with their activations recomputed in the backward pass, so memory no
    longer grows with T (:mod:`spikecut.time_checkpoint`). ``checkpoint_norms`` says what
    to do with BatchNorm whose training statistics pool over all steps: ``"exact"`` refuses
    it, ``"chunk"`` lets each chunk use its own statistics.
    """

    def __init__(
        self,
        body: nn.Module,
        time_chunk: int | str | None = None,
        *,
        time_checkpoint: int | None = None,
        checkpoint_norms: str = "exact",
    ) -> None:
        super().__init__()
        self.body = body
        self.time_chunk = time_chunk
        self.time_checkpoint = time_checkpoint
        self.checkpoint_norms = checkpoint_norms

    @property
    def time_chunk(self) -> int | str | None:
        return self._time_chunk

    @time_chunk.setter
    def time_chunk(self, value: int | str | None) -> None:
        if not (value is None or value == "auto" or (isinstance(value, int) and value >= 1)):
            raise ValueError(f"time_chunk must be None, 'auto' or an int >= 1, got {value!r}")
        self._time_chunk = value

    @property
    def resolved_time_chunk(self) -> int | None:
        """Steps per call that ``time_chunk`` comes to: itself, or what ``"auto"`` sized from
        its last probe (``None`` before the first call, and with no chunking)."""
        chunk = self.time_chunk
        if chunk == "auto":
            cached = getattr(self, "_auto_chunk_cache", None)
            return None if cached is None else cached[1]
        return chunk

    @property
    def time_checkpoint(self) -> int | None:
        return getattr(self, "_time_checkpoint", None)

    @time_checkpoint.setter
    def time_checkpoint(self, value: int | None) -> None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if not (value is None or ok):
            raise ValueError(f"time_checkpoint must be None or an int >= 1, got {value!r}")
        self._time_checkpoint = value

    @property
    def checkpoint_norms(self) -> str:
        return getattr(self, "_checkpoint_norms", "exact")

    @checkpoint_norms.setter
    def checkpoint_norms(self, value: str) -> None:
        if value not in ("exact", "chunk"):
            raise ValueError(f"checkpoint_norms must be 'exact' or 'chunk', got {value!r}")
        self._checkpoint_norms = value

    @property
    def neurons(self) -> list[LIF]:
        return spiking_layers(self.body)

    def reset(self) -> None:
        reset(self.body)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError(
                f"SpikingNetwork expects a time-major input [T, B, ...], got shape {tuple(x.shape)}"
            )
        if self.training:
            steps = self.time_checkpoint
            if steps is None or x.shape[0] <= steps or not torch.is_grad_enabled():
                return self._run_folded(x)
            from .time_checkpoint import run_checkpointed

            return run_checkpointed(self, x, steps, self.checkpoint_norms)
        chunk = getattr(self, "_time_chunk", None)
        if chunk is None or x.shape[0] == 1:
            return self._run_folded(x)
        outputs, start = [], 0
        if chunk == "auto":
            key = (tuple(x.shape[1:]), x.dtype, x.device)
            cached = getattr(self, "_auto_chunk_cache", None)
            if cached is not None and cached[0] == key:
                chunk = cached[1]
            else:  # probe: one step alone, then size the chunks from the neuron states
                outputs, start = [self._run_folded(x[:1])], 1
                chunk = self._auto_chunk(outputs[0])
                self._auto_chunk_cache = (key, chunk)
        if start == 0:  # the first chunk copies a state carried in from an earlier call
            outputs, start = [self._run_folded(x[:chunk])], chunk
        with private_state(self):  # later chunks carry the state produced inside this call
            for begin in range(start, x.shape[0], chunk):
                outputs.append(self._run_folded(x[begin : begin + chunk]))
        return torch.cat(outputs)

    def _auto_chunk(self, first_step: Tensor) -> int:
        """Steps per chunk: the largest power of two whose largest neuron state (≈ one step
        of the largest activation) times the chunk stays under the budget: on CPU a few
        MiB, or 64 MiB where freed blocks are kept (speed), elsewhere an eighth of the
        device's free memory (:func:`spikecut.memory.auto_chunk`)."""
        sizes = [n.v.numel() * n.v.element_size() for n in self.neurons if n.v is not None]
        largest = max(sizes, default=first_step.numel() * first_step.element_size())
        return auto_chunk(largest, first_step.device)

    @contextmanager
    def fixed_structure(self, modules: list[TemporalModule] | None = None) -> Iterator[None]:
        """Within the block the body's module tree is taken as fixed: its time-aware modules
        (``modules``, when the caller has collected them) are collected once instead of on
        every call (for a small network streamed one step at a time, walking the tree was a
        fifth of a step). Do not add or replace modules inside the block."""
        previous = self.__dict__.get("_fixed_temporal")
        self.__dict__["_fixed_temporal"] = (
            temporal_modules(self.body) if modules is None else modules
        )
        try:
            yield
        finally:
            self.__dict__["_fixed_temporal"] = previous

    def _run_folded(self, x: Tensor) -> Tensor:
        steps, batch = x.shape[0], x.shape[1]
        modules = self.__dict__.get("_fixed_temporal")
        with _folded(temporal_modules(self.body) if modules is None else modules, steps):
            y = self.body(x.reshape(steps * batch, *x.shape[2:]))
        return y.reshape(steps, batch, *y.shape[1:])
