"""``python -m spikecut`` runs the command-line interface (also under torchrun)."""

from .cli import main

raise SystemExit(main())
