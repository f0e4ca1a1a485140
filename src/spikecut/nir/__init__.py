"""NIR (Neuromorphic Intermediate Representation) export and import.

``export(snn, sample)`` writes a spikecut network as a ``nir.NIRGraph`` (save it with
``nir.write``) for snnTorch, SpikingJelly, Norse, Sinabs, Lava or neuromorphic hardware;
``load(graph_or_path)`` builds a spikecut network from a graph another framework wrote, so it
gets spikecut's cutoff and anytime engine. The ``nir`` package is optional: ``import spikecut``
works without it, and these functions say how to install it.
"""

from __future__ import annotations

from .conventions import DT
from .exporter import NIRExportError, export
from .loader import NIRImportError, load

__all__ = ["DT", "NIRExportError", "NIRImportError", "export", "load", "require_nir"]

INSTALL_HINT = "pip install 'spikecut[nir]' (or: pip install nir h5py)"


def require_nir():
    """The ``nir`` package, or an ImportError that says how to install it."""
    try:
        import nir
    except ImportError as err:
        raise ImportError(
            f"spikecut.nir needs the NIR package: {INSTALL_HINT}; import failed: {err}"
        ) from err
    return nir
