"""The one tensor layout of spikecut's public calls: time-major ``[T, B, ...]``.

A network consumes ``[T, B, ...]`` and returns per-step logits ``[T, B, K]``. Inputs come in
two kinds, named by one flag everywhere (``frames``):

* ``frames=False``: a static batch ``[B, ...]``, repeated at every step (direct encoding);
* ``frames=True``: a sequence of frames, step ``t`` fed at step ``t``.

Datasets yield one sample at a time, so a DataLoader batch of frames is batch-major
``[B, T, ...]``; :func:`to_time_major` turns either kind of batch into the network's input.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["to_time_major"]


def to_time_major(x: Tensor, T: int, *, frames: bool = False) -> Tensor:
    """``[T, B, ...]`` from a DataLoader batch: a static ``[B, ...]`` batch repeated ``T``
    times (a view, no copy), or with ``frames=True`` frames ``[B, T, ...]`` transposed."""
    if not frames:
        return x.unsqueeze(0).expand(T, *x.shape)
    if x.dim() < 3 or x.shape[1] != T:
        raise ValueError(f"expected frames [B, T={T}, ...], got shape {tuple(x.shape)}")
    return x.transpose(0, 1)
