"""spikecut: spiking neural networks that answer as early as they safely can.

Train SNNs directly (surrogate gradients, TET, TEBN) or convert QCFS-ANNs into SNNs, with the
RCS regulariser, and run them with a calibrated cutoff that stops each input at its own
timestep. Stages are importable on their own::

    import spikecut as sc
    snn = sc.convert.to_snn(ann)
    rule = sc.cutoff.TopKCutoff(epsilon=0.0).calibrate(cum_logits, labels)
    result = sc.anytime.AnytimeClassifier(snn, rule, T=8).run(x)   # really stops early
"""

__version__ = "0.1.0"

from . import (  # noqa: E402
    anytime,
    convert,
    cutoff,
    data,
    interop,
    layers,
    layout,
    losses,
    models,
    neurons,
    ops,
    regularizers,
)
from .layout import to_time_major  # noqa: E402

__all__ = [
    "anytime",
    "convert",
    "cutoff",
    "data",
    "interop",
    "layers",
    "layout",
    "losses",
    "to_time_major",
    "models",
    "neurons",
    "ops",
    "regularizers",
    "__version__",
]
