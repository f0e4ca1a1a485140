"""Evaluate a spiking network from a file (a NIR graph) as an experiment would, without training.

``spikecut evaluate --model net.nir --config exp.yaml`` (and ``spikecut calibrate --model ...``)
load the network, take the data, T and cutoff settings from the config, and run the stages of a
run after training: the test pass (with operation counts), the calibration pass (training data
without augmentation, calibration dropout), every exit rule and, with a held-out calibration
split, the guaranteed rules. ``results.json``, ``report.md`` and the plots are written as for a
run; the training fields (``train``, ``ann_accuracy``) are absent or null. An imported network
did not train on spikecut's split, so the held-out split is held out only if the network's own
training did not use those images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .config import ExperimentConfig

__all__ = ["add_model_arguments", "evaluate_model_file", "default_model_out_dir"]


def add_model_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """``--model FILE.nir``, ``--config``, ``--out`` and ``--set`` for a command that
    evaluates a network from a file."""
    parser.add_argument(
        "--model",
        required=required,
        metavar="FILE.nir",
        help="a spiking network as a NIR graph (spikecut, snnTorch, SpikingJelly, ... wrote it)",
    )
    parser.add_argument(
        "--config",
        dest="model_config",
        metavar="CONFIG.yaml",
        help="with --model: the experiment naming the data, T and cutoff rules (default: the "
        "built-in MNIST-5k experiment)",
    )
    parser.add_argument(
        "--out",
        dest="model_out",
        metavar="DIR",
        help="with --model: output folder (default: results/<experiment>-<model file name>)",
    )
    parser.add_argument(
        "--set",
        dest="model_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --model: override a config value, e.g. --set T=4 (repeatable)",
    )


def default_model_out_dir(cfg: ExperimentConfig, model: str | Path) -> Path:
    return Path("results") / f"{cfg.name}-{Path(model).stem}"


def evaluate_model_file(
    cfg: ExperimentConfig, model: str | Path, out: str | Path, *, progress: bool = True
) -> dict:
    """Load ``model`` (a NIR file), evaluate it on ``cfg``'s data for ``cfg.T`` steps with
    every configured rule, write ``results.json``/``report.md``/plots to ``out``; return the
    results dict (one run, named after the file)."""
    import torch

    from .config import config_to_dict
    from .evaluate import calibration_cum_logits, collect_cum_logits
    from .experiment import (
        _datasets,
        calibration_split_record,
        config_yields_frames,
        cutoff_fields,
        environment_record,
        guaranteed_fields,
        resolve_device,
    )
    from .nir import load
    from .ops import OpCounter
    from .report import write_report

    start = time.perf_counter()
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"model file not found: {model}")
    device = resolve_device(cfg.device)
    snn = load(model).to(device).eval()
    train, calibration, _, test, heldout = _datasets(cfg, progress)
    kwargs = {
        "batch_size": cfg.batch_size_eval,
        "device": str(device),
        "progress": progress,
        "frames": config_yields_frames(cfg, test),
        "workers": cfg.train.workers,
        "time_chunk": cfg.time_chunk,
    }
    with OpCounter(snn) as counter:
        test_logits, test_labels = collect_cum_logits(snn, test, cfg.T, desc=model.name, **kwargs)
    ops = counter.pop()
    cal_logits, cal_labels = calibration_cum_logits(
        snn, calibration, cfg.T, dropout=cfg.cutoff.calibration_dropout, seed=cfg.seed, **kwargs
    )
    entry = {
        "name": model.stem,
        "alpha": 0.0,
        "seed": cfg.seed,
        "ann_accuracy": None,
        "model_file": str(model),
        **cutoff_fields(cfg, (test_logits, test_labels), (cal_logits, cal_labels), ops),
    }
    if heldout is not None:
        held_logits, held_labels = collect_cum_logits(
            snn, heldout, cfg.T, desc="held-out", **kwargs
        )
        entry.update(
            guaranteed_fields(cfg, (test_logits, test_labels), (held_logits, held_labels), ops)
        )
    entry["thresholds"] = [
        float(n.threshold) for n in snn.neurons if torch.isfinite(torch.tensor(n.threshold))
    ]
    entry["seconds"] = time.perf_counter() - start
    results = {
        "experiment": cfg.name,
        "method": "imported",
        "T": cfg.T,
        "config": config_to_dict(cfg),
        "environment": {
            **environment_record(device),
            "seconds": time.perf_counter() - start,
        },
        "calibration_split": calibration_split_record(cfg, heldout, len(train), len(calibration)),
        "runs": [entry],
    }
    write_report(results, Path(out))
    return results
