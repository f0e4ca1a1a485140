"""Writing a report all-or-nothing, and reading results.json back."""

from __future__ import annotations

import json
import os
from pathlib import Path

from spikecut._io import atomic_write, atomic_write_json, atomic_write_text

from . import plots
from .markdown import _render_markdown, tradeoff_file
from .schema import validate_results

_TOL = 1e-9
_DASH = "—"
_RULE_MARKERS = {"topk": "*", "softmax": "o", "entropy": "s", "fixed": "D"}
_SPARE_MARKERS = ("^", "v", "P", "X", "h", "<", ">")
_DPI = 110


# ----------------------------------------------------------------------------- files


def write_report(results: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Validate, render everything in memory, then write the report files atomically.

    Returns the written paths by name: ``results``, ``report``, ``accuracy_vs_timestep``,
    ``exit_histograms``, ``beta``, and ``tradeoff:<run name>`` per run
    (:func:`tradeoff_file`). Nothing is written if validation or rendering fails.
    """
    validate_results(results)
    markdown = _render_markdown(results)
    pngs = {
        "accuracy_vs_timestep": (
            "accuracy_vs_timestep.png",
            plots._png_bytes(plots._accuracy_figure(results)),
        ),
        "exit_histograms": (
            "exit_histograms.png",
            plots._png_bytes(plots._histogram_figure(results)),
        ),
        "beta": ("beta.png", plots._png_bytes(plots._beta_figure(results))),
    }
    for run in results["runs"]:
        figure = plots._png_bytes(plots._tradeoff_figure(results, run))
        pngs[f"tradeoff:{run['name']}"] = (tradeoff_file(run["name"]), figure)
    out = Path(out_dir)
    paths = {
        "results": atomic_write_json(out / "results.json", results),
        "report": atomic_write_text(out / "report.md", markdown),
    }
    for name, (file, data) in pngs.items():
        paths[name] = atomic_write(out / file, lambda tmp, d=data: tmp.write_bytes(d))
    return paths


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate a ``results.json``; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"results file not found: {path}") from None
    try:
        results = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "the file may be truncated or corrupt"
        ) from err
    try:
        validate_results(results)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return results
