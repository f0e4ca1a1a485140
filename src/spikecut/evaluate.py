"""Evaluation: ANN accuracy, the SNN's accumulated outputs, and every cutoff rule on them.

The SNN is run for all T steps once per split; every rule, the ε sweeps and the OCT oracle
are then computed offline on the accumulated logits ``Y`` ``[T, N, K]`` (see
:mod:`spikecut.cutoff`). The calibration pass runs on the training split without
augmentation, with dropout after every spiking layer (SPEC §6).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import cutoff
from ._deprecation import renamed_parameters
from .layers import CalibrationDropout, calibration_dropout
from .layout import to_time_major
from .neurons import SpikingNetwork, reset
from .ops import OpCounts
from .speed import release_freed_memory
from .train import accuracy

__all__ = [
    "ann_accuracy",
    "collect_cum_logits",
    "calibration_cum_logits",
    "evaluate_cutoff",
    "evaluate_guaranteed_rules",
    "evaluate_guaranteed_sweep",
    "DEFAULT_SWEEP_RISKS",
    "operations",
]


def _loader(dataset: Dataset, batch_size: int, workers: int = 0) -> DataLoader:
    """In dataset order; ``workers`` processes prepare the batches (decoding, framing)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)


def ann_accuracy(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 256, device: str = "cpu"
) -> float:
    """Top-1 accuracy (fraction) of an ordinary network (:func:`spikecut.train.accuracy`)."""
    model.to(device).eval()
    return accuracy(model, dataset, lambda net, x: net(x), batch_size=batch_size, device=device)


@renamed_parameters(steps="T", repeat=("frames", operator.not_))
def collect_cum_logits(
    snn: nn.Module,
    dataset: Dataset,
    T: int,
    *,
    frames: bool = False,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    desc: str = "snn",
    workers: int = 0,
    time_chunk: int | str | None = "auto",
) -> tuple[Tensor, Tensor]:
    """Run ``snn`` for ``T`` steps on every sample; return ``(Y [T, N, K], labels [N])``.

    ``frames=False`` repeats each static input at every step (direct encoding); with
    ``frames=True`` dataset items are frame sequences ``[T, ...]`` (:mod:`spikecut.layout`).
    State is reset before every batch; ``workers`` DataLoader processes load the items.

    ``time_chunk`` bounds memory: a :class:`~spikecut.neurons.SpikingNetwork` runs the
    sequence that many steps at a time with its state carried between chunks (same
    outputs as the whole-sequence call), so a pass needs memory for one chunk of one batch
    plus the accumulated ``Y``. ``"auto"`` (default) picks the chunk from the memory the
    device has free (:func:`spikecut.memory.auto_chunk`); ``None`` folds all T steps
    at once. Other modules are called on the whole sequence.
    Deprecated keywords: ``steps`` (T), ``repeat`` (not frames).
    """
    return _cum_logits(
        snn, dataset, T, frames, batch_size, device, progress, desc, workers, time_chunk
    )


@contextmanager
def _time_chunks(snn: nn.Module, time_chunk: int | str | None) -> Iterator[None]:
    """Within the block a :class:`~spikecut.neurons.SpikingNetwork` runs in ``time_chunk``
    steps at a time; its own setting is restored after. Other modules are left alone."""
    if not isinstance(snn, SpikingNetwork):
        yield
        return
    previous, snn.time_chunk = snn.time_chunk, time_chunk
    try:
        yield
    finally:
        snn.time_chunk = previous


@torch.inference_mode()
def _cum_logits(
    snn: nn.Module,
    dataset: Dataset,
    T: int,
    frames: bool,
    batch_size: int,
    device: str,
    progress: bool,
    desc: str,
    workers: int,
    time_chunk: int | str | None,
    dropouts: Sequence[CalibrationDropout] = (),
) -> tuple[Tensor, Tensor]:
    """The pass of :func:`collect_cum_logits`; ``dropouts`` learn each batch's first
    sample index (their masks are keyed by it)."""
    snn.to(device).eval()
    outputs, labels, seen = [], [], 0
    batches = _loader(dataset, batch_size, workers)
    with _time_chunks(snn, time_chunk):
        for x, y in tqdm(batches, desc=desc, disable=not progress, leave=False):
            reset(snn)
            for dropout in dropouts:
                dropout.sample_offset = seen
            per_step = snn(to_time_major(x.to(device), T, frames=frames))
            outputs.append(per_step.float().cumsum(0).cpu())
            labels.append(y)
            seen += len(y)
            del per_step
            release_freed_memory()  # freed blocks back to the OS: no growth across batches
    reset(snn)
    return torch.cat(outputs, dim=1), torch.cat(labels)


@renamed_parameters(steps="T", repeat=("frames", operator.not_))
def calibration_cum_logits(
    snn: nn.Module,
    dataset: Dataset,
    T: int,
    *,
    dropout: float = 0.3,
    seed: int = 0,
    frames: bool = False,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    workers: int = 0,
    time_chunk: int | str | None = "auto",
    desc: str = "calibrate",
) -> tuple[Tensor, Tensor]:
    """:func:`collect_cum_logits` with calibration dropout after every spiking layer.

    The dropout masks depend on ``seed`` and each sample's index in ``dataset``, not on the
    batch size or the time chunks (:class:`~spikecut.layers.CalibrationDropout`), and the
    global random state is left alone. Deprecated keywords: ``steps`` (T), ``repeat`` (not
    frames).
    """
    state = torch.random.get_rng_state()  # the DataLoader draws a seed from it
    try:
        with calibration_dropout(snn, dropout, seed) as model:
            dropouts = [m for m in model.modules() if isinstance(m, CalibrationDropout)]
            options = (frames, batch_size, device, progress, desc, workers, time_chunk)
            return _cum_logits(snn, dataset, T, *options, dropouts)
    finally:
        torch.random.set_rng_state(state)


def evaluate_cutoff(
    test_logits: Tensor,
    test_labels: Tensor,
    cal_logits: Tensor,
    cal_labels: Tensor,
    *,
    rules: Sequence[str] = ("topk", "softmax", "entropy"),
    epsilons: Sequence[float] = cutoff.DEFAULT_EPSILONS,
    bins: int = 100,
    ops: OpCounts | None = None,
) -> dict:
    """Per-step accuracy, OCT, and every rule's ε sweep, as the fields of a run's results.

    With ``ops`` (the :class:`~spikecut.ops.OpCounts` of the test pass) every rule row also
    gets ``mean_sops`` and ``energy_ratio`` up to its exits, and the run ``ann_macs`` and
    per-layer ``firing_rates`` (see :func:`operations`).
    """
    steps = test_logits.shape[0]
    oct_steps = cutoff.oct_steps(test_logits, test_labels)

    calibrated: dict[tuple[str, float], cutoff.ExitRule] = {}
    applied: list[cutoff.ExitRule] = [cutoff.FixedTimestep(steps)]  # one per rule row

    def make(name: str):
        params = {"bins": bins} if name == "topk" else {}

        def build(eps: float) -> cutoff.ExitRule:
            calibrated[(name, eps)] = rule = cutoff.make_rule(name, eps, **params)
            applied.append(rule)
            return rule

        return build

    rule_rows = [cutoff.evaluate_rule(applied[0], test_logits, test_labels)]
    for name in rules:
        rule_rows += cutoff.sweep_epsilon(
            make(name), cal_logits, cal_labels, test_logits, test_labels, epsilons
        )
    beta = None
    if "topk" in rules:
        # The sweep already calibrated Top-K at ε = 0 when 0 is among its epsilons.
        topk = calibrated.get(("topk", 0.0))
        if topk is None:
            topk = cutoff.TopKCutoff(epsilon=0.0, bins=bins).calibrate(cal_logits, cal_labels)
        beta = [float(b) for b in topk.beta]
    return {
        "snn_accuracy_per_t": cutoff.accuracy_per_step(test_logits, test_labels),
        "oct_mean": float(oct_steps.float().mean()),
        "oct_histogram": torch.bincount(oct_steps - 1, minlength=steps).tolist(),
        "calibration_accuracy_per_t": cutoff.accuracy_per_step(cal_logits, cal_labels),
        "beta": beta,
        "rules": rule_rows,
        **({} if ops is None else operations(ops, test_logits, rule_rows, applied)),
    }


def evaluate_guaranteed_rules(
    test_logits: Tensor,
    test_labels: Tensor,
    heldout_logits: Tensor,
    heldout_labels: Tensor,
    *,
    rules: Sequence[str] = cutoff.GUARANTEED_RULES,
    risk: float = 0.01,
    delta: float = 0.1,
    alpha: float = 0.1,
    max_set_size: int = 1,
    ops: OpCounts | None = None,
) -> list[dict]:
    """The guaranteed rules, calibrated on the held-out split's outputs (no dropout) and
    evaluated on the test split: one :func:`~spikecut.cutoff.evaluate_guaranteed` row per
    rule (risk, δ, n, certified, the bound met, accuracy, mean exit, test loss; SpikeCP:
    coverage and mean set size), plus ``mean_sops``/``energy_ratio`` with ``ops``."""
    rows, built = [], []
    for name in rules:
        rule = cutoff.make_guaranteed_rule(
            name, risk=risk, delta=delta, alpha=alpha, max_set_size=max_set_size
        ).calibrate(heldout_logits, heldout_labels)
        rows.append(cutoff.evaluate_guaranteed(rule, test_logits, test_labels))
        built.append(rule)
    if ops is not None:
        operations(ops, test_logits, rows, built)
    return rows


DEFAULT_SWEEP_RISKS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.05)


def evaluate_guaranteed_sweep(
    test_logits: Tensor,
    test_labels: Tensor,
    heldout_logits: Tensor,
    heldout_labels: Tensor,
    *,
    rules: Sequence[str] = ("topk-risk", "softmax-risk", "entropy-risk"),
    risks: Sequence[float] = DEFAULT_SWEEP_RISKS,
    delta: float = 0.1,
) -> list[dict]:
    """The risk-controlled rules at several risk levels: the guaranteed points of the
    accuracy/latency trade-off. One :func:`~spikecut.cutoff.evaluate_guaranteed` row per
    (rule, risk), rules in order and risks ascending; rules that are not ``*-risk`` (SpikeCP
    has no risk level) are skipped. A larger risk certifies a looser threshold, so each
    rule's mean exit does not grow along its risks."""
    rows = []
    for name in rules:
        if not name.endswith("-risk"):
            continue
        for risk in sorted(risks):
            rule = cutoff.make_guaranteed_rule(name, risk=risk, delta=delta)
            rule.calibrate(heldout_logits, heldout_labels)
            rows.append(cutoff.evaluate_guaranteed(rule, test_logits, test_labels))
    return rows


def operations(
    ops: OpCounts,
    test_logits: Tensor,
    rule_rows: Sequence[dict] = (),
    rules: Sequence[cutoff.ExitRule] = (),
) -> dict:
    """Operation counts for a run's results (see :mod:`spikecut.ops`).

    Adds ``mean_sops`` (synaptic operations per sample up to its exit) and ``energy_ratio``
    (E_ann / E_snn) to each row of ``rule_rows`` from the exits of the matching rule in
    ``rules``; returns the run's ``ann_macs`` (MACs of the equivalent ANN per sample) and
    ``firing_rates`` (per spiking layer, the mean spikes per neuron at each step).
    """
    if ops.samples != test_logits.shape[1] or ops.steps != test_logits.shape[0]:
        raise ValueError(
            f"ops: counted {ops.steps} steps x {ops.samples} samples, but the test logits "
            f"have {test_logits.shape[0]} x {test_logits.shape[1]}"
        )
    for row, rule in zip(rule_rows, rules, strict=True):
        summary = ops.summary(rule.exit_steps(test_logits))
        row["mean_sops"] = summary["mean_sops"]
        if math.isfinite(summary["energy_ratio"]):
            row["energy_ratio"] = summary["energy_ratio"]
    return {"ann_macs": ops.ann_macs, "firing_rates": ops.firing_rates()}
