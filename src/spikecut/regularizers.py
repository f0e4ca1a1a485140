"""RCS regularisation (SPEC §5): train networks whose answer settles early.

The ANN version scores, per QCFS layer ``l`` and sample ``n``, how peaked the layer's input
is relative to the batch maximum; the aggregate penalises the worst correctly classified
sample of each layer. Activations are collected by flagging this model's own QCFS modules
(no global hooks), only inside a ``with RCSRegularizer(model)`` block.
"""

from __future__ import annotations

from types import TracebackType

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import QCFS

__all__ = [
    "EPS",
    "rcs_ann_scores",
    "ann_correct_mask",
    "aggregate_rcs",
    "RCSRegularizer",
]

EPS = 1e-5


def rcs_ann_scores(z: Tensor) -> Tensor:
    """Per-sample RCS-ANN score of one layer's input ``z`` ``[B, ...]`` → ``[B]``.

    ``R_n = max(ReLU(z) over the whole batch) / sqrt(mean over n's neurons of ReLU(z)² + 1e-5)``.
    """
    if z.dim() < 2:
        raise ValueError(f"expected a batch of activations [B, ...], got shape {tuple(z.shape)}")
    r = F.relu(z).flatten(1)
    return r.max() / torch.sqrt(r.pow(2).mean(dim=1) + EPS)


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
    """Collects each QCFS layer's input during a forward pass and turns it into ``L_RCS``.

    Use as a context manager around training::

        with RCSRegularizer(model) as rcs:
            logits = model(x)
            loss = F.cross_entropy(logits, y) + alpha * rcs.loss(logits, y)

    ``loss`` consumes what was recorded since the last call, so each batch starts clean.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, QCFS)]
        if not self.layers:
            raise ValueError(
                f"RCSRegularizer found no QCFS layers in {type(model).__name__}; the ANN "
                "version of RCS reads the input of each QCFS activation"
            )
        self._active = False

    def __enter__(self) -> RCSRegularizer:
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
        for layer in self.layers:
            layer.input_record = None
        self._active = False

    def clear(self) -> None:
        """Drop what was recorded (e.g. after an evaluation pass inside the block)."""
        for layer in self.layers:
            if layer.input_record is not None:
                layer.input_record.clear()

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """``L_RCS`` of the forward pass that produced ``logits``; clears the record."""
        if not self._active:
            raise RuntimeError("RCSRegularizer.loss called outside its `with` block")
        scores = []
        for index, layer in enumerate(self.layers):
            record = layer.input_record or []
            if len(record) != 1:
                raise RuntimeError(
                    f"QCFS layer {index} recorded {len(record)} inputs since the last loss; "
                    "expected exactly one forward pass per loss call"
                )
            scores.append(rcs_ann_scores(record[0]))
        self.clear()
        return aggregate_rcs(scores, ann_correct_mask(logits, labels))
