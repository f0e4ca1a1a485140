"""RCS regularisation (SPEC §5): train networks whose answer settles early.

The ANN version scores, per QCFS layer ``l`` and sample ``n``, how peaked the layer's input
is relative to the batch maximum. The SNN version scores how far each step's response
``s(t) + ReLU(v(t)/θ)`` points away from the response of the last steps (an inverse mean
cosine similarity): a layer whose activity already looks like its final activity early on
lets the output settle early. Both aggregate by penalising the worst correctly classified
sample of each layer. Activations are recorded by flagging this model's own QCFS/LIF modules
(no global hooks), only inside a ``with RCSRegularizer(model)`` block, so plain inference
pays nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.hooks import RemovableHandle

from ._deprecation import renamed_parameters
from .layers import QCFS
from .neurons import LIF, spiking_layers
from .time_checkpoint import is_recomputing

__all__ = [
    "EPS",
    "RHO",
    "window",
    "rcs_ann_scores",
    "rcs_snn_scores",
    "ann_correct_mask",
    "snn_correct_mask",
    "aggregate_rcs",
    "RCSRegularizer",
]

EPS = 1e-5
RHO = 0.3


@renamed_parameters(steps="T")
def window(T: int, rho: float = RHO) -> int:
    """``K = max(1, ⌊ρ·T⌋)``: how many final steps form the reference (or the mask).

    ``T`` is the number of timesteps (deprecated name: ``steps``).
    (SPEC deviation: the authors' code takes all T steps when ⌊ρT⌋ = 0; one step is the
    reading that matches "the last K steps".)
    """
    if T < 1:
        raise ValueError(f"the number of timesteps T must be >= 1, got {T}")
    return max(1, math.floor(rho * T + 1e-9))


def rcs_ann_scores(z: Tensor) -> Tensor:
    """Per-sample RCS-ANN score of one layer's input ``z`` ``[B, ...]`` → ``[B]``.

    ``R_n = max(ReLU(z) over the whole batch) / sqrt(mean over n's neurons of ReLU(z)² + 1e-5)``.

    Degenerate case: a sample whose input is <= 0 everywhere scores ``max / sqrt(1e-5)``
    (about 316 · max, ~1400 against ~6 for the others on ResNet-20), but its gradient stays
    bounded: ReLU passes none to its own entries, and the batch maximum gets 1/sqrt(1e-5).
    On ResNet-20 this was not what diverged (see :class:`spikecut.layers.QCFS`).
    """
    if z.dim() < 2:
        raise ValueError(f"expected a batch of activations [B, ...], got shape {tuple(z.shape)}")
    r = F.relu(z).flatten(1)
    return r.max() / torch.sqrt(r.pow(2).mean(dim=1) + EPS)


def rcs_snn_scores(
    spikes: Tensor, membranes: Tensor, threshold: float = 1.0, rho: float = RHO
) -> Tensor:
    """Per-sample RCS-SNN score of one layer → ``[B]``.

    ``spikes`` and ``membranes`` (after reset) are ``[T, B, ...]``. With the response
    ``r(t) = s(t) + ReLU(v(t)/θ)`` over the layer's neurons and the reference ``r_d`` = the
    mean response of the last ``K = max(1, ⌊ρT⌋)`` steps (not differentiated)::

        cs(t) = <r(t), r_d> / (sqrt(|r(t)|² + 1e-5) · sqrt(|r_d|² + 1e-5))
        R     = 1 / (mean_t cs(t) + 1e-5)

    Degenerate cases (as the SPEC defines them, kept): a silent sample (r = 0 at every
    step) scores 1e5 with zero gradient, so when it is the layer's worst correct sample
    the layer's term is 1e5 and teaches nothing; a sample whose response norm is below
    sqrt(1e-5) has cs ≈ 0 and a gradient that grows like 1/(cs + 1e-5)² (residues of
    1e-4 gave a gradient norm of 6e4, against < 1 at 1e-1).
    """
    if spikes.shape != membranes.shape or spikes.dim() < 2:
        raise ValueError(
            "expected spikes and membranes of the same shape [T, B, ...], got "
            f"{tuple(spikes.shape)} and {tuple(membranes.shape)}"
        )
    response = (spikes + F.relu(membranes / threshold)).flatten(2)  # [T, B, N]
    reference = response[-window(spikes.shape[0], rho) :].mean(0).detach()  # [B, N]
    dot = (response * reference).sum(-1)  # [T, B]
    norms = torch.sqrt(response.pow(2).sum(-1) + EPS) * torch.sqrt(reference.pow(2).sum(-1) + EPS)
    return 1.0 / ((dot / norms).mean(0) + EPS)


def snn_correct_mask(outputs: Tensor, labels: Tensor, rho: float = RHO) -> Tensor:
    """``m_n = 1`` iff ``argmax o_n(t)`` is correct at each of the last ``max(1, ⌊ρT⌋)`` steps.

    ``outputs`` are per-step logits ``[T, B, K]``; the mask is not differentiated.
    """
    if outputs.dim() != 3:
        raise ValueError(f"expected per-step logits [T, B, K], got shape {tuple(outputs.shape)}")
    last = outputs.detach()[-window(outputs.shape[0], rho) :].argmax(-1)  # [K', B]
    return (last == labels).all(dim=0).to(outputs.dtype)


def ann_correct_mask(logits: Tensor, labels: Tensor) -> Tensor:
    """``m_n = 1`` iff the ANN's prediction for sample n is correct (not differentiated)."""
    return (logits.detach().argmax(dim=-1) == labels).to(logits.dtype)


def aggregate_rcs(layer_scores: list[Tensor], mask: Tensor) -> Tensor:
    """``L_RCS = mean over layers of max over samples of m_n · R^l_n`` (a scalar)."""
    if not layer_scores:
        raise ValueError("RCS needs at least one layer's scores; the model has none recorded")
    mask = mask.detach()
    per_layer = torch.stack([(scores * mask).max() for scores in layer_scores])
    return per_layer.mean()


class RCSRegularizer:
    """Records each layer's activity during a forward pass and turns it into ``L_RCS``.

    For an SNN (a model with spikecut neurons) it uses the SNN version on every neuron
    layer; otherwise the ANN version on every QCFS layer. Use as a context manager around
    training::

        with RCSRegularizer(model) as rcs:
            out = model(x)                  # ANN: [B, K]; SNN: per-step logits [T, B, K]
            loss = task_loss(out, y) + alpha * rcs.loss(out, y)

    ``loss`` consumes what was recorded since the last call, so each batch starts clean.

    Args:
        model: the network being trained.
        rcs_rho: reference window fraction ρ of the SNN version (deprecated name: ``rho``).
        mask_rho: mask window fraction ρ' of the SNN version.
    """

    @renamed_parameters(rho="rcs_rho")
    def __init__(
        self,
        model: nn.Module,
        *,
        rcs_rho: float = RHO,
        mask_rho: float = RHO,
        record: bool = True,
    ) -> None:
        self.neurons: list[LIF] = spiking_layers(model)
        self.layers = [m for m in model.modules() if isinstance(m, QCFS)]
        self.snn = bool(self.neurons)
        if not self.snn and not self.layers:
            raise ValueError(
                f"RCSRegularizer found neither spiking neurons nor QCFS layers in "
                f"{type(model).__name__}; RCS reads the membranes of an SNN's neurons or the "
                "input of each QCFS activation of an ANN"
            )
        self.rho, self.mask_rho = rcs_rho, mask_rho
        # False: record nothing and give no loss (loss() is None), for training that must
        # not keep every step's membranes (time checkpointing at alpha = 0)
        self.record = record
        self._spikes: dict[LIF, list[Tensor]] = {}
        self._handles: list[RemovableHandle] = []
        self._active = False

    def __enter__(self) -> RCSRegularizer:
        if not self.record:
            pass
        elif self.snn:
            for neuron in self.neurons:
                neuron.membrane_record = []
                self._spikes[neuron] = []
                self._handles.append(neuron.register_forward_hook(self._record_spikes))
        else:
            for layer in self.layers:
                layer.input_record = []
        self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._spikes.clear()
        for neuron in self.neurons:
            neuron.membrane_record = None
        for layer in self.layers:
            layer.input_record = None
        self._active = False

    def _record_spikes(self, neuron: nn.Module, _inputs: tuple, output: Tensor) -> None:
        if is_recomputing():  # a checkpointed chunk rerun in backward: recorded already
            return
        seq = neuron.unfold(output)  # [T, B, ...] whether folded or not
        self._spikes[neuron].append(seq / neuron.amplitude)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Record nothing inside the block (e.g. a validation pass within training)."""
        if not self._active:
            yield
            return
        self.__exit__(None, None, None)
        try:
            yield
        finally:
            self.__enter__()

    def clear(self) -> None:
        """Drop what was recorded (e.g. after an evaluation pass inside the block)."""
        for spikes in self._spikes.values():
            spikes.clear()
        for neuron in self.neurons:
            if neuron.membrane_record is not None:
                neuron.membrane_record.clear()
        for layer in self.layers:
            if layer.input_record is not None:
                layer.input_record.clear()

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor | None:
        """``L_RCS`` of the forward pass that produced ``outputs``; clears the record.
        ``None`` when the regulariser records nothing (``record=False``)."""
        if not self._active:
            raise RuntimeError("RCSRegularizer.loss called outside its `with` block")
        if not self.record:
            return None
        try:
            if self.snn:
                steps = outputs.shape[0]
                scores = [self._snn_layer_scores(i, n, steps) for i, n in enumerate(self.neurons)]
                mask = snn_correct_mask(outputs, labels, self.mask_rho)
            else:
                scores = [self._ann_layer_scores(i, q) for i, q in enumerate(self.layers)]
                mask = ann_correct_mask(outputs, labels)
        finally:
            self.clear()
        return aggregate_rcs(scores, mask)

    def _ann_layer_scores(self, index: int, layer: QCFS) -> Tensor:
        record = layer.input_record or []
        if len(record) != 1:
            raise RuntimeError(
                f"QCFS layer {index} recorded {len(record)} inputs since the last loss; "
                "expected exactly one forward pass per loss call"
            )
        return rcs_ann_scores(record[0])

    def _snn_layer_scores(self, index: int, neuron: LIF, steps: int) -> Tensor:
        """Layer ``index``'s scores from its calls since the last loss: one per chunk of
        steps when the network runs the sequence in chunks (time checkpointing)."""
        spikes = self._spikes.get(neuron, [])
        recorded = sum(s.shape[0] for s in spikes)
        if recorded != steps:
            raise RuntimeError(
                f"spiking layer {index} recorded {len(spikes)} forward calls ({recorded} steps) "
                f"since the last loss; expected the {steps} steps of the outputs' one forward "
                "pass per loss call"
            )
        membranes = torch.stack(neuron.membrane_record or [])
        seq = spikes[0] if len(spikes) == 1 else torch.cat(spikes)
        return rcs_snn_scores(seq, membranes, neuron.threshold, self.rho)
