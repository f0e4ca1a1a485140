"""Bring your own SNN: SpikingJelly and snnTorch networks as spikecut networks.

``from_spikingjelly(net)`` and ``from_snntorch(net)`` return a
:class:`~spikecut.neurons.SpikingNetwork` with the same weights and the same dynamics, so the
cutoff rules, :class:`~spikecut.anytime.AnytimeClassifier`, streaming and operation counts work
on it. Each framework's neurons become :class:`MirroredLIF`, which repeats that framework's
arithmetic; what cannot be reproduced exactly raises :class:`InteropError` naming the module
and the reason. The frameworks are imported only when an adapter is called.
"""

from .adapt import TOLERANCE, InteropError
from .neuron import MirroredLIF
from .snntorch import from_snntorch, snntorch_outputs
from .spikingjelly import from_spikingjelly, spikingjelly_outputs

__all__ = [
    "InteropError",
    "MirroredLIF",
    "TOLERANCE",
    "from_snntorch",
    "from_spikingjelly",
    "snntorch_outputs",
    "spikingjelly_outputs",
]
