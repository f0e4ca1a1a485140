"""Event-camera recordings as numpy structured arrays with fields ``x, y, t, p``.

``t`` is in microseconds (int64), ``p`` is the polarity (1 = ON, 0 = OFF). Readers for the
published on-disk formats live here too.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EVENT_DTYPE", "make_events"]

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")])


def make_events(x, y, t, p) -> np.ndarray:
    """Pack equal-length coordinate, timestamp (µs) and polarity arrays into ``EVENT_DTYPE``."""
    x, y, t, p = (np.asarray(a) for a in (x, y, t, p))
    if not (x.shape == y.shape == t.shape == p.shape) or x.ndim != 1:
        raise ValueError(
            "make_events expects four 1-D arrays of equal length, got shapes "
            f"x{x.shape} y{y.shape} t{t.shape} p{p.shape}"
        )
    events = np.empty(x.shape[0], dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events
