"""spikecut: spiking neural networks that answer as early as they safely can.

Train with the RCS regulariser, convert QCFS-ANNs into SNNs, and run them with a calibrated
cutoff that stops each input at its own timestep. Stages are importable on their own::

    import spikecut as sc
    snn = sc.convert.to_snn(ann)
    rule = sc.cutoff.TopKCutoff(epsilon=0.0).calibrate(cum_logits, labels)
"""

__version__ = "0.1.0"

from . import convert, cutoff, layers, models, neurons, regularizers  # noqa: E402

__all__ = ["convert", "cutoff", "layers", "models", "neurons", "regularizers", "__version__"]
