"""Which rows of a run the tables and plots show (base rules, Top-K, ε sweeps)."""

from __future__ import annotations

_TOL = 1e-9
_DASH = "—"
_RULE_MARKERS = {"topk": "*", "softmax": "o", "entropy": "s", "fixed": "D"}
_SPARE_MARKERS = ("^", "v", "P", "X", "h", "<", ">")
_DPI = 110


# ----------------------------------------------------------------------------- selection


def _base_rules(run: dict) -> list[dict]:
    """One entry per rule, in first-seen order: the one with the smallest ε (ε = 0 in a sweep)."""
    best: dict[str, dict] = {}
    for entry in run["rules"]:
        name = entry["rule"]
        if name not in best or entry["epsilon"] < best[name]["epsilon"]:
            best[name] = entry
    return list(best.values())


def _topk(run: dict) -> dict | None:
    return next((r for r in _base_rules(run) if r["rule"] == "topk"), None)


def _sweep(run: dict, rule: str) -> list[dict]:
    return sorted((r for r in run["rules"] if r["rule"] == rule), key=lambda r: r["epsilon"])


def _topk_sweep(run: dict) -> list[dict]:
    return _sweep(run, "topk")


_RULE_TITLES = {"topk": "Top-K", "softmax": "Softmax confidence", "entropy": "Entropy"}


def _rule_names(results: dict) -> list[str]:
    names: dict[str, None] = {}
    for run in results["runs"]:
        names.update((r["rule"], None) for r in _base_rules(run))
    return list(names)


def _final_acc(run: dict) -> float:
    return run["snn_accuracy_per_t"][-1]
