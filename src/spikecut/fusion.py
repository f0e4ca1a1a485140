"""Inference preparation: fold BatchNorm into the layer before it, and related speed-ups.

A converted network keeps BatchNorm as its eval-mode affine (SPEC §3). At inference time
that affine can be folded into the preceding convolution or linear layer, which saves one
pass over every activation of every step. :func:`prepare_for_inference` bundles this with
the other inference-only switches (no gradients, channels-last weights, ``torch.compile``).
Both functions return new modules; the caller's model is never modified.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .neurons import SpikingNetwork, reset
from .speed import channels_last_convolutions

__all__ = ["fold_batchnorm", "prepare_for_inference"]

# Exact types only: a subclass (e.g. a time-aware BatchNorm with per-step scales, or a conv
# with its own forward) computes something else and must not be folded.
_FOLDABLE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _fold_pair(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` (eval mode) into ``layer``'s weight and bias, in place."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"cannot fold {bn}: it has no running statistics (track_running_stats=False), "
            "so its eval-mode output depends on the batch"
        )
    with torch.no_grad():
        weight = layer.weight
        scale = torch.rsqrt(bn.running_var.to(weight.dtype) + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.to(weight.dtype)
        shift = -bn.running_mean.to(weight.dtype) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.to(weight.dtype)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(shift)
        new_weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
        new_bias = bias * scale + shift
    layer.weight = nn.Parameter(new_weight, requires_grad=weight.requires_grad)
    layer.bias = nn.Parameter(new_bias, requires_grad=weight.requires_grad)


def _out_channels(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _fold_in(module: nn.Module) -> int:
    """Fold every (layer, BatchNorm) pair of consecutive children of every ``nn.Sequential``
    inside ``module``; returns how many pairs were folded."""
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:], strict=False):
            layer, bn = seq._modules[first], seq._modules[second]
            if type(layer) not in _FOLDABLE_LAYERS or type(bn) not in _BATCHNORMS:
                continue
            if bn.training:
                raise ValueError(
                    f"cannot fold BatchNorm {second!r}: it is in training mode, where it "
                    "normalises with batch statistics; call model.eval() first"
                )
            if bn.num_features != _out_channels(layer):
                raise ValueError(
                    f"cannot fold BatchNorm {second!r}: it has {bn.num_features} features but "
                    f"the layer before it ({first!r}) has {_out_channels(layer)} outputs"
                )
            _fold_pair(layer, bn)
            seq._modules[second] = nn.Identity()
            folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` where each conv/linear directly followed by an eval-mode BatchNorm
    (as consecutive children of an ``nn.Sequential``) becomes one layer with folded weights.

    ``W' = W·γ/√(σ²+ε)`` and ``b' = (b − μ)·γ/√(σ²+ε) + β``; the BatchNorm becomes
    ``nn.Identity``. The result equals the original in eval mode up to float rounding.
    Only exact ``Conv1d/2d/3d``/``Linear`` and ``BatchNorm1d/2d/3d`` types are folded.

    Raises:
        ValueError: a foldable BatchNorm is in training mode or has no running statistics.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_batchnorm expects a torch.nn.Module, got {type(model).__name__}")
    folded = copy.deepcopy(model)
    _fold_in(folded)
    return folded


def _has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_for_inference(
    snn: nn.Module,
    *,
    fold_bn: bool = True,
    channels_last: bool | None = None,
    time_chunk: int | str | None = "auto",
    compile: bool = False,
) -> nn.Module:
    """A copy of ``snn`` set up for fast inference; ``snn`` itself is left unchanged.

    * a fresh neuron state (the copy forgets any state ``snn`` carries);
    * eval mode and ``requires_grad=False`` on every parameter, so neurons take their
      graph-free in-place path (run it under ``torch.inference_mode()`` for the rest);
    * ``fold_bn``: BatchNorm folded into the preceding conv/linear (:func:`fold_batchnorm`);
    * ``channels_last``: 2-D conv weights in channels-last layout, which makes the
      convolutions (and the neurons after them) run in NHWC; ``None`` (default) turns it on
      for networks with 2-D convolutions, where it was faster on CPU and is the usual
      choice on CUDA;
    * ``time_chunk``: for a :class:`~spikecut.neurons.SpikingNetwork`, run the sequence in
      chunks of this many steps (same outputs); ``"auto"`` (default) sizes them on CPU so
      that large activations do not cost fresh pages on every call (see ``SpikingNetwork``);
    * ``compile``: wrap the result in ``torch.compile`` (opt-in: the first call compiles).
    """
    if not isinstance(snn, nn.Module):
        raise TypeError(
            f"prepare_for_inference expects a torch.nn.Module, got {type(snn).__name__}"
        )
    model = copy.deepcopy(snn).eval()
    reset(model)  # the copy starts from a clean state, whatever the original carried
    if fold_bn:
        _fold_in(model)
    model.requires_grad_(False)
    if channels_last is None:
        channels_last = _has_conv2d(model)
    if channels_last:
        channels_last_convolutions(model)
    if isinstance(model, SpikingNetwork):
        model.time_chunk = time_chunk
    if compile:
        return torch.compile(model)
    return model
