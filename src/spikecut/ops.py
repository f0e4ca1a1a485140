"""Operation counts of a spiking network: spikes, synaptic operations, MACs and energy.

What is counted (SPEC §6), per sample and per step:

* **spikes** of every spiking layer (:class:`~spikecut.neurons.LIF` and subclasses): the
  number of non-zero outputs; divided by the layer's neurons this is its firing rate.
* **SOPs** (synaptic operations, accumulates) of every *event-driven* synaptic layer
  (``nn.Conv1d/2d/3d``, ``nn.Linear``): each non-zero input element costs one accumulate per
  synapse it reaches, its *fan-out*. The fan-out is exact: for a ``Linear`` layer it is
  ``out_features``; for a convolution it is ``out_channels / groups`` times the number of
  (output position, kernel offset) pairs that read that input position, found once per
  input size as the input-gradient of the summed output of a one-channel copy of the layer
  with all-one weights (so stride, padding, dilation and borders are all accounted for).
  A non-zero input that is not a single spike (e.g. the average of four spikes after an
  average pool) counts as one event.
* **analogue MACs** of every synaptic layer that runs *before any spiking layer* in a
  forward call (the first layer, which sees the analogue input: image or event frames):
  these are multiply-accumulates over the dense input at every step, as is usual in the
  literature.
* **dense MACs** of every synaptic layer: its connections to real (non-padding) inputs,
  i.e. the MACs of the equivalent ANN for one sample; padding positions multiply a constant
  zero and are not counted. Their sum is :attr:`OpCounts.ann_macs`.

Energy (45 nm estimate, Horowitz 2014): an accumulate costs ``E_AC = 0.9 pJ`` and a
multiply-accumulate ``E_MAC = 4.6 pJ``. ``E_snn = 0.9·SOPs + 4.6·analogue MACs`` (both up to
each sample's exit step), ``E_ann = 4.6·ANN MACs``, and the **energy ratio is
E_ann / E_snn**: above 1 the SNN is the cheaper one.

Counting uses forward hooks, attached by :class:`OpCounter` for the duration of a ``with``
block; nothing is changed in the network. Other layer types (pooling, BatchNorm, additions)
are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ._modules import forward_hooks
from .neurons import LIF, SpikingNetwork

__all__ = [
    "E_AC_PJ",
    "E_MAC_PJ",
    "OpCounter",
    "OpCounts",
    "SYNAPTIC_LAYERS",
    "ann_macs",
    "energy_ratio",
    "layer_macs",
    "until_exit",
]

E_AC_PJ = 0.9
"""Energy of one accumulate (a synaptic operation) in picojoules (45 nm)."""
E_MAC_PJ = 4.6
"""Energy of one multiply-accumulate in picojoules (45 nm)."""

SYNAPTIC_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""The layer types whose operations are counted."""

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# --------------------------------------------------------------------------- fan-out


def _spatial_fanout(conv: nn.Module, spatial: Sequence[int], device: torch.device) -> Tensor:
    """Per input position: how many (output position, kernel offset) pairs read it.

    The input-gradient of ``sum(conv_ones(x))`` for a one-channel copy of ``conv`` with
    all-one weights is exactly that count (the convolution is linear in ``x``).
    """
    # Outside inference mode, so that the probe's weight and the gradient are ordinary tensors.
    with torch.inference_mode(False), torch.enable_grad():
        probe = type(conv)(
            1,
            1,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=False,
            padding_mode=conv.padding_mode,
        ).to(device=device, dtype=torch.float64)
        nn.init.ones_(probe.weight)
        x = torch.zeros(1, 1, *spatial, dtype=torch.float64, device=device, requires_grad=True)
        probe(x).sum().backward()
    return x.grad[0, 0].round().long()


class _Synapse:
    """Counting for one synaptic layer; caches the fan-out per input size."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self._fanout: dict[tuple, Tensor] = {}

    def fanout(self, x: Tensor) -> Tensor:
        """Spatial fan-out ``[*spatial]`` (conv) for an input like ``x``, cached."""
        key = (tuple(x.shape[2:]), x.device)
        if key not in self._fanout:
            self._fanout[key] = _spatial_fanout(self.layer, x.shape[2:], x.device)
        return self._fanout[key]

    def per_channel(self) -> int:
        layer = self.layer
        return (
            layer.out_features
            if isinstance(layer, nn.Linear)
            else layer.out_channels // layer.groups
        )

    def dense(self, x: Tensor) -> int:
        """Connections to real inputs for one row of ``x`` (the ANN's MACs of this layer)."""
        if isinstance(self.layer, nn.Linear):
            return x[0].numel() * self.layer.out_features
        return int(self.fanout(x).sum()) * x.shape[1] * self.per_channel()

    def events(self, x: Tensor) -> Tensor:
        """SOPs per row of ``x``: non-zero inputs times their fan-out, exact int64 ``[rows]``."""
        nonzero = x != 0
        if isinstance(self.layer, nn.Linear):
            return nonzero.reshape(x.shape[0], -1).sum(1) * self.layer.out_features
        per_position = nonzero.sum(1)  # [rows, *spatial], int64
        return (per_position * self.fanout(x)).reshape(x.shape[0], -1).sum(1) * self.per_channel()


# --------------------------------------------------------------------------- results


def until_exit(per_step: Tensor, exit_steps: Tensor | None = None) -> Tensor:
    """Per-sample totals up to each sample's exit step.

    ``per_step`` is ``[T, N]`` (a count per step and sample); ``exit_steps`` is ``[N]`` with
    values ``1..T`` (``None``: all T steps). Returns ``[N]``.
    """
    if per_step.dim() != 2:
        raise ValueError(f"per_step: expected a [T, N] tensor, got shape {tuple(per_step.shape)}")
    T, N = per_step.shape
    if exit_steps is None:
        return per_step.sum(0)
    if exit_steps.shape != (N,):
        raise ValueError(f"exit_steps: expected shape ({N},), got {tuple(exit_steps.shape)}")
    if N and (int(exit_steps.min()) < 1 or int(exit_steps.max()) > T):
        raise ValueError(
            f"exit_steps: expected values in 1..{T}, found "
            f"{int(exit_steps.min())}..{int(exit_steps.max())}"
        )
    idx = exit_steps.to(per_step.device).long() - 1
    return per_step.cumsum(0)[idx, torch.arange(N, device=per_step.device)]


def energy_ratio(mean_sops: float, mean_analogue_macs: float, ann_macs: float) -> float:
    """``E_ann / E_snn`` with ``E_snn = 0.9 pJ·SOPs + 4.6 pJ·analogue MACs`` and
    ``E_ann = 4.6 pJ·MACs`` (above 1: the SNN spends less). ``inf`` if ``E_snn = 0``."""
    e_snn = E_AC_PJ * mean_sops + E_MAC_PJ * mean_analogue_macs
    e_ann = E_MAC_PJ * ann_macs
    return e_ann / e_snn if e_snn > 0 else math.inf


@dataclass
class OpCounts:
    """Counts of one or more forward calls with the same number of steps ``T``.

    Every per-step tensor is int64 ``[T, N]`` (step, sample), keyed by layer name (as in
    ``model.named_modules()``).

    Attributes:
        steps: T.
        spikes: spikes emitted per spiking layer.
        neurons: neurons per sample in each spiking layer.
        sops: synaptic operations of each event-driven synaptic layer.
        analogue_macs: dense MACs of each synaptic layer that reads the analogue input.
        dense_macs: MACs of every synaptic layer for one sample and step (the ANN's).
    """

    steps: int
    spikes: dict[str, Tensor] = field(default_factory=dict)
    neurons: dict[str, int] = field(default_factory=dict)
    sops: dict[str, Tensor] = field(default_factory=dict)
    analogue_macs: dict[str, Tensor] = field(default_factory=dict)
    dense_macs: dict[str, int] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        for table in (self.spikes, self.sops, self.analogue_macs):
            for value in table.values():
                return value.shape[1]
        return 0

    @property
    def ann_macs(self) -> int:
        """MACs of the equivalent ANN for one sample (all synaptic layers, once)."""
        return sum(self.dense_macs.values())

    def _total(self, table: dict[str, Tensor]) -> Tensor:
        device = next((v.device for v in table.values()), torch.device("cpu"))
        total = torch.zeros(self.steps, self.samples, dtype=torch.long, device=device)
        for value in table.values():
            total = total + value
        return total

    def total_sops(self) -> Tensor:
        """SOPs of all event-driven layers, ``[T, N]``."""
        return self._total(self.sops)

    def total_analogue_macs(self) -> Tensor:
        """MACs of the analogue-input layers, ``[T, N]``."""
        return self._total(self.analogue_macs)

    def total_spikes(self) -> Tensor:
        """Spikes of all spiking layers, ``[T, N]``."""
        return self._total(self.spikes)

    def firing_rates(self) -> dict[str, list[float]]:
        """Per spiking layer and step: mean spikes per neuron and sample (a rate in [0, 1])."""
        return {
            name: (count.double().mean(1) / self.neurons[name]).tolist()
            for name, count in self.spikes.items()
        }

    def summary(self, exit_steps: Tensor | None = None) -> dict[str, float]:
        """Means over samples of the operations up to each exit step (``None``: all T).

        Keys: ``mean_sops``, ``mean_analogue_macs``, ``mean_spikes``, ``ann_macs`` and
        ``energy_ratio`` (E_ann / E_snn, see :func:`energy_ratio`).
        """
        mean = {
            key: float(until_exit(table, exit_steps).double().mean())
            for key, table in (
                ("mean_sops", self.total_sops()),
                ("mean_analogue_macs", self.total_analogue_macs()),
                ("mean_spikes", self.total_spikes()),
            )
        }
        mean["ann_macs"] = float(self.ann_macs)
        mean["energy_ratio"] = energy_ratio(
            mean["mean_sops"], mean["mean_analogue_macs"], mean["ann_macs"]
        )
        return mean

    @staticmethod
    def cat(parts: Sequence[OpCounts]) -> OpCounts:
        """Join the counts of calls on different samples (same T, same layers) along N."""
        if not parts:
            raise ValueError("OpCounts.cat: expected at least one OpCounts, got none")
        first = parts[0]
        steps = {p.steps for p in parts}
        if len(steps) != 1:
            raise ValueError(f"OpCounts.cat: all parts need the same T, got {sorted(steps)}")

        def join(name: str) -> dict[str, Tensor]:
            keys = list(getattr(first, name))
            for p in parts:
                if list(getattr(p, name)) != keys:
                    raise ValueError(f"OpCounts.cat: parts count different layers in {name!r}")
            return {k: torch.cat([getattr(p, name)[k] for p in parts], dim=1) for k in keys}

        return OpCounts(
            steps=first.steps,
            spikes=join("spikes"),
            neurons=dict(first.neurons),
            sops=join("sops"),
            analogue_macs=join("analogue_macs"),
            dense_macs=dict(first.dense_macs),
        )


# --------------------------------------------------------------------------- counting


def _add(table: dict, key: str, value) -> None:
    # A layer called more than once in a forward adds up its counts.
    table[key] = table[key] + value if key in table else value


class OpCounter:
    """Counts the operations of every forward call of a time-major network.

    ``model`` takes ``[T, B, ...]`` (e.g. a :class:`~spikecut.neurons.SpikingNetwork`); its
    layers may see the ``[T*B, ...]`` fold, or one time chunk of it after another
    (``SpikingNetwork.time_chunk``): each chunk's counts land in its steps' rows. Use as a
    context manager::

        with OpCounter(snn) as counter:
            snn(x)                     # any number of calls
        counts = counter.pop()         # OpCounts of those calls, joined along the batch

    A synaptic layer counts as *analogue* (MACs) when no spiking layer has run yet in the
    current forward call (of the chunk, when chunked), and as *event-driven* (SOPs)
    otherwise.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._synapses = {
            name: _Synapse(m) for name, m in model.named_modules() if isinstance(m, SYNAPTIC_LAYERS)
        }
        self._neurons = {name: m for name, m in model.named_modules() if isinstance(m, LIF)}
        # A SpikingNetwork calls its body once per time chunk with the [chunk*B, ...] fold.
        self._body = model.body if isinstance(model, SpikingNetwork) else None
        self._handles: list = []
        self._calls: list[OpCounts] = []
        self._call: OpCounts | None = None
        self._rows = 0  # samples in the current call
        self._first = 0  # the current chunk's first step
        self._steps = 0  # steps in the current chunk
        self._chunked = False
        self._spiked = False

    # -- hooks

    def __enter__(self) -> OpCounter:
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def attach(self) -> None:
        """Register the hooks (idempotent)."""
        if self._handles:
            return
        self._handles.append(self.model.register_forward_pre_hook(self._start))
        if self._body is not None:
            self._handles.append(self._body.register_forward_pre_hook(self._start_chunk))
        for name, neuron in self._neurons.items():
            self._handles.append(neuron.register_forward_hook(self._neuron_hook(name)))
        for name, synapse in self._synapses.items():
            self._handles.append(synapse.layer.register_forward_hook(self._synapse_hook(name)))

    def detach(self) -> None:
        """Remove the hooks; recorded counts stay until :meth:`pop`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _start(self, module: nn.Module, args: tuple) -> None:
        x = args[0]
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(
                "OpCounter expects the model to take a time-major tensor [T, B, ...], got "
                f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
            )
        self._call = OpCounts(steps=x.shape[0])
        self._rows = x.shape[1]
        self._first, self._steps = 0, x.shape[0]  # one chunk of all steps unless told
        self._chunked = False  # True once the body has started a chunk of this call
        self._spiked = False
        self._calls.append(self._call)

    def _start_chunk(self, module: nn.Module, args: tuple) -> None:
        if self._call is None or not isinstance(args[0], Tensor):
            return
        if self._chunked:
            self._first += self._steps  # the previous chunk's steps are done
        self._chunked = True
        self._steps = args[0].shape[0] // self._rows
        self._spiked = False

    def _add(self, table: dict[str, Tensor], name: str, per_row: Tensor) -> None:
        """Add the counts of the current chunk's rows (step-major) to layer ``name``."""
        if name not in table:
            table[name] = per_row.new_zeros(self._call.steps, self._rows)
        steps = slice(self._first, self._first + self._steps)
        table[name][steps] += per_row.reshape(self._steps, self._rows)

    def _neuron_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            if self._call is None:
                return
            rows = out.reshape(self._steps * self._rows, -1)
            self._add(self._call.spikes, name, (rows != 0).sum(1))
            self._call.neurons[name] = rows.shape[1]
            self._spiked = True

        return hook

    def _synapse_hook(self, name: str):
        synapse = self._synapses[name]

        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            if self._call is None:
                return
            x = args[0]
            dense = synapse.dense(x)
            if self._first == 0:  # per sample and step: counted in the first chunk only
                _add(self._call.dense_macs, name, dense)
            if self._spiked:
                self._add(self._call.sops, name, synapse.events(x))
            else:
                rows = torch.full((x.shape[0],), dense, dtype=torch.long, device=x.device)
                self._add(self._call.analogue_macs, name, rows)

        return hook

    # -- results

    def pop(self) -> OpCounts:
        """The counts of all calls since the last ``pop``, joined along samples; clears them."""
        if not self._calls:
            raise RuntimeError("OpCounter recorded no forward call of the model")
        calls, self._calls, self._call = self._calls, [], None
        return calls[0] if len(calls) == 1 else OpCounts.cat(calls)


def layer_macs(model: nn.Module, example: Tensor) -> dict[str, int]:
    """MACs per sample of every synaptic layer of an ordinary network (forward hooks).

    ``example`` is a batch of inputs ``[B, ...]`` (its size does not matter: counts are per
    sample); padding positions are not counted (see the module docstring).
    """
    synapses = {
        name: _Synapse(m) for name, m in model.named_modules() if isinstance(m, SYNAPTIC_LAYERS)
    }
    macs: dict[str, int] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            macs[name] = macs.get(name, 0) + synapses[name].dense(args[0])

        return hook

    hooks = [(s.layer, hook_for(n)) for n, s in synapses.items()]
    with forward_hooks(hooks), torch.inference_mode():
        model(example)
    return macs


def ann_macs(model: nn.Module, example: Tensor) -> int:
    """Total MACs of an ordinary network for one sample (see :func:`layer_macs`)."""
    return sum(layer_macs(model, example).values())
