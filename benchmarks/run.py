"""Run the benchmarks: ``python benchmarks/run.py [--quick] [--out ...] [--device cpu|cuda]``.

The same as ``spikecut bench``; see benchmarks/README.md.
"""

import sys

from spikecut.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
