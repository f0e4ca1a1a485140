"""Per-layer temporal diagnostics of an SNN: how much each layer fires, and how soon its
activity looks like its final activity.

RCS-SNN (SPEC §5) trains every spiking layer's response ``r(t) = s(t) + ReLU(v(t)/θ)`` to point
early in the direction of its late response. Whether that happened (and so why the mean OCT
moved, or did not) is read here, per spiking layer and step t, on test samples:

* ``firing_rate[t]``: spikes per neuron per step, the mean of ``s(t)`` over samples and neurons;
* ``cosine_to_final[t]``: the mean over samples of ``cos(r_n(t), r_n(T))``, each response
  flattened over the layer's neurons. It is 1 at t = T. A response that is exactly zero has no
  direction: the cosine counts as 1 when both ``r_n(t)`` and ``r_n(T)`` are zero, else 0.

Membranes are recorded through each neuron's own ``membrane_record`` (as RCS does) and spikes
by a forward hook on this network's neurons only; nothing global is touched.
"""

from __future__ import annotations

import operator
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ._deprecation import renamed_parameters
from .layout import to_time_major
from .neurons import LIF, reset

__all__ = ["evenly_spaced_subset", "temporal_diagnostics", "run_diagnostics"]


def evenly_spaced_subset(dataset: Dataset, samples: int | None) -> Dataset:
    """``samples`` items spread evenly over ``dataset`` (all of it when None or larger).

    Evenly spaced rather than the first ones: test splits are often stored class by class.
    """
    total = len(dataset)
    if samples is None or samples >= total:
        return dataset
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    indices = torch.linspace(0, total - 1, samples).round().long().unique().tolist()
    return Subset(dataset, indices)


class _ResponseRecorder:
    """Within the block, every neuron of ``model`` records its spikes and membranes."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LIF)]
        if not self.layers:
            raise ValueError(
                f"{type(model).__name__} has no spiking neurons (spikecut LIF/IF modules); "
                "diagnostics read the spikes and membranes of an SNN"
            )
        self._spikes: dict[LIF, list[Tensor]] = {}
        self._handles: list = []

    def __enter__(self) -> _ResponseRecorder:
        for _, neuron in self.layers:
            neuron.membrane_record = []
            self._spikes[neuron] = []
            self._handles.append(neuron.register_forward_hook(self._record))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for _, neuron in self.layers:
            neuron.membrane_record = None
        self._spikes.clear()

    def _record(self, neuron: nn.Module, _inputs: tuple, output: Tensor) -> None:
        # one call per chunk of steps when the network runs the sequence in chunks
        self._spikes[neuron].append(neuron.unfold(output) / neuron.amplitude)

    def take(self, neuron: LIF) -> tuple[Tensor, Tensor]:
        """``(spikes, membranes)`` ``[T, B, ...]`` recorded since the last call; clears them."""
        spikes = torch.cat(self._spikes[neuron])
        membranes = torch.stack(neuron.membrane_record)
        self._spikes[neuron].clear()
        neuron.membrane_record.clear()
        if spikes.shape != membranes.shape:
            raise RuntimeError(
                f"recorded spikes {tuple(spikes.shape)} and membranes {tuple(membranes.shape)} "
                "differ; one whole forward pass per batch was expected"
            )
        return spikes, membranes


def _cosine_to_final(response: Tensor) -> Tensor:
    """``cos(r(t), r(T))`` per step and sample, ``[T, B]``, for a response ``[T, B, N]``."""
    final = response[-1]
    dot = (response * final).sum(-1)
    norms = response.norm(dim=-1) * final.norm(dim=-1)
    cosine = dot / norms.clamp_min(torch.finfo(response.dtype).tiny)
    zero_now, zero_final = response.norm(dim=-1) == 0, (final.norm(dim=-1) == 0).expand_as(dot)
    cosine = torch.where(zero_now | zero_final, (zero_now & zero_final).to(cosine.dtype), cosine)
    return cosine.clamp(-1.0, 1.0)


@renamed_parameters(steps="T", repeat=("frames", operator.not_))
@torch.inference_mode()
def temporal_diagnostics(
    snn: nn.Module,
    dataset: Dataset,
    T: int,
    *,
    frames: bool = False,
    samples: int | None = 500,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "diagnostics",
) -> dict:
    """Firing rate and cosine-to-final response per spiking layer and step.

    Runs ``snn`` for ``T`` steps on ``samples`` evenly spaced items of ``dataset``
    (``frames=False``: static inputs repeated at every step; ``frames=True``: items are
    ``[T, ...]`` frames). Returns ``{"layers": [name, ...], "samples": n, "T": T,
    "firing_rate": [[T floats] per layer], "cosine_to_final": [[T floats] per layer]}``.
    Deprecated keywords: ``steps`` (T), ``repeat`` (not frames).
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    subset = evenly_spaced_subset(dataset, samples)
    snn.to(device).eval()
    recorder = _ResponseRecorder(snn)
    n_layers = len(recorder.layers)
    spike_sums = torch.zeros(n_layers, T, dtype=torch.float64)
    neuron_counts = torch.zeros(n_layers, dtype=torch.float64)
    cosine_sums = torch.zeros(n_layers, T, dtype=torch.float64)
    seen = 0
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False)
    with recorder:
        for x, _ in tqdm(loader, desc=desc, disable=not progress, leave=False):
            reset(snn)
            snn(to_time_major(x.to(device), T, frames=frames))
            for i, (name, neuron) in enumerate(recorder.layers):
                spikes, membranes = recorder.take(neuron)
                if spikes.shape[0] != T:
                    raise RuntimeError(f"layer {name!r} ran {spikes.shape[0]} steps, not {T}")
                s = spikes.flatten(2).double()  # [T, B, N]
                response = s + torch.relu(membranes.flatten(2).double() / neuron.threshold)
                spike_sums[i] += s.sum(dim=(1, 2)).cpu()
                neuron_counts[i] += s.shape[1] * s.shape[2]
                cosine_sums[i] += _cosine_to_final(response).sum(1).cpu()
            seen += x.shape[0]
    reset(snn)
    return {
        "layers": [name for name, _ in recorder.layers],
        "samples": seen,
        "T": T,
        "firing_rate": (spike_sums / neuron_counts[:, None]).tolist(),
        "cosine_to_final": (cosine_sums / seen).tolist(),
    }


def run_diagnostics(
    out_dir: str | Path,
    run_names: list[str],
    *,
    samples: int | None = 500,
    batch_size: int = 100,
    progress: bool = True,
) -> dict[str, dict]:
    """:func:`temporal_diagnostics` of finished runs of an experiment folder, by run name.

    Each run's SNN is rebuilt from its weights (:func:`spikecut.experiment.load_run_snn`)
    and measured on the configured test split, on the configured device.
    """
    from .config import parse_config
    from .data import get_dataset
    from .experiment import config_yields_frames, dataset_options, load_run_snn, resolve_device
    from .report import load_results

    out = Path(out_dir)
    results = load_results(out / "results.json")
    if "config" not in results:
        raise ValueError(f"{out / 'results.json'}: has no 'config', cannot rebuild the test split")
    cfg = parse_config(results["config"])
    opts = dataset_options(cfg, progress=False)
    test = get_dataset(cfg.data.name, cfg.data.root, split="test", augment=False, **opts)
    found: dict[str, dict] = {}
    for name in tqdm(run_names, desc="diagnostics", disable=not progress, leave=False):
        snn, _, cfg = load_run_snn(out, name, num_classes=test.num_classes)
        found[name] = temporal_diagnostics(
            snn,
            test,
            cfg.T,
            frames=config_yields_frames(cfg, test),
            samples=samples,
            batch_size=batch_size,
            device=resolve_device(cfg.device),
            progress=progress,
            desc=f"diagnostics {name}",
        )
    return found
