"""Experiment reports: results.json, report.md tables and PNG plots.

Everything here is a pure function of a *results dict* (its schema is what
``validate_results`` checks), so a report can be re-rendered later from ``results.json`` alone.
Files are written atomically; ``write_report`` renders everything in memory before it touches
the disk, so an invalid or unrenderable result leaves the output folder as it was.

The package keeps one concern a module: :mod:`~spikecut.report.schema` (validation),
:mod:`~spikecut.report.selection` (which rows of a run are shown),
:mod:`~spikecut.report.markdown` (report.md), :mod:`~spikecut.report.plots` (PNGs) and
:mod:`~spikecut.report.files` (writing and reading). ``spikecut.report`` re-exports the
public names, so ``from spikecut.report import write_report`` works as before.
"""

from . import files, markdown, plots, schema, selection
from .files import load_results, write_report
from .markdown import _table, render_markdown, summary_table, tradeoff_file
from .plots import plot_accuracy_vs_timestep, plot_beta, plot_exit_histograms, plot_tradeoff
from .schema import validate_results

__all__ = [
    "load_results",
    "plot_accuracy_vs_timestep",
    "plot_beta",
    "plot_exit_histograms",
    "plot_tradeoff",
    "tradeoff_file",
    "render_markdown",
    "summary_table",
    "validate_results",
    "write_report",
    "files",
    "markdown",
    "plots",
    "schema",
    "selection",
    "_table",
]
