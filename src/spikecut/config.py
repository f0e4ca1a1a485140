"""Typed experiment configuration: YAML in, validated dataclasses out.

Every key is checked against the dataclass fields and their type hints: an unknown key, a
value of the wrong type or an unreadable file is a :class:`ConfigError` whose one-line
message names the key path, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cutoff import DEFAULT_EPSILONS
from .train import TrainConfig

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "DirectConfig",
    "CalibrationConfig",
    "GuaranteeConfig",
    "CutoffConfig",
    "ExperimentConfig",
    "load_config",
    "parse_config",
    "apply_overrides",
    "config_to_dict",
]


class ConfigError(ValueError):
    """An experiment configuration that cannot be used as written."""


@dataclass
class DataConfig:
    """Which dataset, where it lives, and dataset-specific options."""

    name: str = "mnist5k"
    root: str | None = None
    augment: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Which registered model, its QCFS settings and other constructor options.

    The defaults are those of the embedded default experiment: the initial QCFS threshold
    is 1.0 there, scaled to the BatchNorm-normalised activations of the small network
    (SPEC's 8.0 is for the paper's large networks; its paper configs set it explicitly).
    """

    name: str = "mnist-cnn"
    levels: int = 4
    threshold: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """One training run of the experiment; runs differ in the RCS weight α."""

    name: str
    alpha: float = 0.0


@dataclass
class DirectConfig:
    """Direct training of the SNN (``method: direct``, SPEC §4): loss, TEBN and the neuron.

    The defaults are the paper's: TET with λ = 1e-3, LIF with θ = 1, λ = 0.5, hard reset and
    the triangle surrogate (γ = 1); RCS windows ρ = ρ' = 0.3.
    """

    loss: str = "tet"
    tet_lambda: float = 1e-3
    tebn: bool = False
    threshold: float = 1.0
    leak: float = 0.5
    reset: str = "hard"
    surrogate: str = "triangle"
    surrogate_width: float = 1.0
    rcs_rho: float = 0.3
    mask_rho: float = 0.3


@dataclass
class CalibrationConfig:
    """Where the guaranteed rules calibrate (``cutoff.calibration``).

    ``source: heldout`` carves a stratified ``fraction`` of the training data off before
    training (deterministically from the experiment's ``seed``); the network never trains on
    it, and the guaranteed rules calibrate on its outputs without dropout. ``source: train``
    carves nothing: the network trains on all the training data (the paper's setup) and the
    guaranteed rules are not evaluated, since no data the network has not fitted is left.

    The default is ``heldout`` with 10 %: a guarantee needs calibration samples exchangeable
    with the test samples, which the training data is not, and ``spikecut run`` should report
    the guaranteed rules. The price is 10 % less training data, which moves every number
    of the run a little; the paper's rules (Top-K etc.) still calibrate on the (remaining)
    training data with dropout, as the paper does. The paper configs set ``source: train``.
    """

    source: str = "heldout"
    fraction: float = 0.1


@dataclass
class GuaranteeConfig:
    """The rules with a statistical guarantee (``cutoff.guarantee``), calibrated on the
    held-out split: ``topk-risk``, ``softmax-risk``, ``entropy-risk`` (Learn-then-Test:
    P(loss <= risk) >= 1 - delta, loss = answers lost against the SNN at T) and ``spikecp``
    (conformal sets, coverage >= 1 - alpha, exit when the set has <= max_set_size labels).
    ``sweep_risks``: the risk levels at which the ``*-risk`` rules are also evaluated, for
    the trade-off plot (results.json ``guaranteed_sweep``)."""

    rules: list[str] = field(
        default_factory=lambda: ["topk-risk", "softmax-risk", "entropy-risk", "spikecp"]
    )
    risk: float = 0.01
    delta: float = 0.1
    alpha: float = 0.1
    max_set_size: int = 1
    sweep_risks: list[float] = field(default_factory=lambda: [0.005, 0.01, 0.02, 0.05])


@dataclass
class CutoffConfig:
    """The exit rules to evaluate, their ε sweep, the Top-K calibration settings, and the
    held-out calibration split with the guaranteed rules calibrated on it.

    ``calibration_samples`` caps the paper's calibration pass (training data, dropout) at a
    stratified sample of that many training images drawn from the seed; ``null`` uses them
    all, as the paper does. The pass costs T steps per image, so deep networks at large T
    spend most of a run there.
    """

    rules: list[str] = field(default_factory=lambda: ["topk", "softmax", "entropy"])
    epsilons: list[float] = field(default_factory=lambda: list(DEFAULT_EPSILONS))
    bins: int = 100
    calibration_dropout: float = 0.3
    calibration_samples: int | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    guarantee: GuaranteeConfig = field(default_factory=GuaranteeConfig)


@dataclass
class ExperimentConfig:
    """One pass of data → train → convert → calibrate → evaluate → report."""

    name: str = "mnist5k-qcfs"
    # "conversion": train a QCFS-ANN and convert it; "direct": train the SNN itself.
    method: str = "conversion"
    seed: int = 0
    # Repeat every run for each of these seeds (the report adds mean ± std per run);
    # empty: one repetition with ``seed``.
    seeds: list[int] = field(default_factory=list)
    T: int = 8
    device: str = "cpu"
    batch_size_eval: int = 500
    # Steps per chunk of the evaluation passes: "auto" (from the device's free memory),
    # an int, or null (all T steps at once: memory grows with T).
    time_chunk: int | str | None = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    direct: DirectConfig = field(default_factory=DirectConfig)
    runs: list[RunConfig] = field(
        default_factory=lambda: [
            RunConfig(name="alpha=0", alpha=0.0),
            RunConfig(name="rcs alpha=0.002", alpha=0.002),
        ]
    )
    cutoff: CutoffConfig = field(default_factory=CutoffConfig)
    out: str | None = None


# --------------------------------------------------------------------------- validation


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return f"a list of {_type_name(item)}"
    if origin is dict:
        return "a mapping"
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _found(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{type(value).__name__} {text}"


# Which raw YAML values each scalar type accepts (bool is not an int here; int is a float).
_SCALARS = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def _convert(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _convert(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"'{path}' must be {_type_name(hint)}, got {_found(value)}")
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"'{path}' must be null, got {_found(value)}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"'{path}' must be {_type_name(hint)}, got {_found(value)}")
        (item,) = typing.get_args(hint)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}' must be a mapping, got {_found(value)}")
        return dict(value)
    accepts = _SCALARS.get(hint)
    if accepts is not None and accepts(value):
        return float(value) if hint is float else value
    raise ConfigError(f"'{path}' must be {_type_name(hint)}, got {_found(value)}")


def _build(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        where = f"'{path}'" if path else "the configuration"
        raise ConfigError(f"{where} must be a mapping, got {_found(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(f"unknown key '{key}' (expected one of: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in raw:
            values[name] = _convert(raw[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{key}'")
    return cls(**values)


def _check_values(cfg: ExperimentConfig) -> None:
    from .cutoff import RULES
    from .data import available_datasets
    from .data.registry import DATASETS
    from .models import available_models
    from .models.registry import MODELS

    if cfg.data.name not in available_datasets():
        raise ConfigError(
            f"'data.name' is {cfg.data.name!r}; available: {', '.join(available_datasets())}"
        )
    if cfg.model.name not in available_models():
        raise ConfigError(
            f"'model.name' is {cfg.model.name!r}; available: {', '.join(available_models())}"
        )
    _check_options(
        "data.options", DATASETS, cfg.data.name, cfg.data.options, ("root", "split", "augment")
    )
    _check_options(
        "model.options",
        MODELS,
        cfg.model.name,
        cfg.model.options,
        ("num_classes", "levels", "threshold", "activation"),
    )

    checks = [
        (cfg.T >= 1, f"'T' must be >= 1, got {cfg.T}"),
        (cfg.train.epochs >= 1, f"'train.epochs' must be >= 1, got {cfg.train.epochs}"),
        (cfg.train.batch_size >= 1, f"'train.batch_size' must be >= 1, got {cfg.train.batch_size}"),
        (cfg.train.lr > 0, f"'train.lr' must be > 0, got {cfg.train.lr}"),
        (cfg.train.workers >= 0, f"'train.workers' must be >= 0, got {cfg.train.workers}"),
        (
            0.0 <= cfg.train.validation_fraction < 1.0,
            f"'train.validation_fraction' must be in [0, 1), got {cfg.train.validation_fraction}",
        ),
        (
            cfg.train.select != "best" or cfg.train.validation_fraction > 0,
            "'train.select' is 'best' but there is no validation split to select on: set "
            "'train.validation_fraction' (e.g. 0.05); the test split is never used for selection",
        ),
        (
            cfg.time_chunk is None
            or cfg.time_chunk == "auto"
            or (isinstance(cfg.time_chunk, int) and cfg.time_chunk >= 1),
            f"'time_chunk' must be 'auto', null or an integer >= 1, got {cfg.time_chunk!r}",
        ),
        (len(cfg.runs) >= 1, "'runs' must list at least one run"),
        (cfg.cutoff.bins >= 1, f"'cutoff.bins' must be >= 1, got {cfg.cutoff.bins}"),
        (
            0.0 <= cfg.cutoff.calibration_dropout < 1.0,
            f"'cutoff.calibration_dropout' must be in [0, 1), got {cfg.cutoff.calibration_dropout}",
        ),
        (
            cfg.cutoff.calibration_samples is None or cfg.cutoff.calibration_samples >= 1,
            "'cutoff.calibration_samples' must be >= 1 or null (all training images), got "
            f"{cfg.cutoff.calibration_samples}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"'seeds' must not repeat a seed, got {cfg.seeds}")
    names = [r.name for r in cfg.runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"'runs' names must be unique, got {names}")
    for i, run in enumerate(cfg.runs):
        if run.alpha < 0:
            raise ConfigError(f"'runs[{i}].alpha' must be >= 0, got {run.alpha}")
    _check_direct(cfg)
    for i, rule in enumerate(cfg.cutoff.rules):
        if rule not in RULES:
            raise ConfigError(
                f"'cutoff.rules[{i}]' is {rule!r}; known rules: {', '.join(sorted(RULES))}"
            )
    for i, eps in enumerate(cfg.cutoff.epsilons):
        if not 0.0 <= eps < 1.0:
            raise ConfigError(f"'cutoff.epsilons[{i}]' must be in [0, 1), got {eps}")
    _check_guarantee(cfg)


def _check_guarantee(cfg: ExperimentConfig) -> None:
    from .risk import GUARANTEED_RULES

    cal, g = cfg.cutoff.calibration, cfg.cutoff.guarantee
    if cal.source not in ("heldout", "train"):
        raise ConfigError(
            f"'cutoff.calibration.source' is {cal.source!r}; expected one of: heldout, train"
        )
    checks = [
        (
            0.0 < cal.fraction < 1.0,
            f"'cutoff.calibration.fraction' must be in (0, 1), got {cal.fraction}",
        ),
        (
            cal.source == "train" or cal.fraction + cfg.train.validation_fraction < 1.0,
            "'cutoff.calibration.fraction' + 'train.validation_fraction' must be < 1, got "
            f"{cal.fraction} + {cfg.train.validation_fraction}",
        ),
        (0.0 < g.risk < 1.0, f"'cutoff.guarantee.risk' must be in (0, 1), got {g.risk}"),
        (0.0 < g.delta < 1.0, f"'cutoff.guarantee.delta' must be in (0, 1), got {g.delta}"),
        (0.0 < g.alpha < 1.0, f"'cutoff.guarantee.alpha' must be in (0, 1), got {g.alpha}"),
        (
            g.max_set_size >= 1,
            f"'cutoff.guarantee.max_set_size' must be >= 1, got {g.max_set_size}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for i, risk in enumerate(g.sweep_risks):
        if not 0.0 < risk < 1.0:
            raise ConfigError(f"'cutoff.guarantee.sweep_risks[{i}]' must be in (0, 1), got {risk}")
    for i, rule in enumerate(g.rules):
        if rule not in GUARANTEED_RULES:
            raise ConfigError(
                f"'cutoff.guarantee.rules[{i}]' is {rule!r}; known rules: "
                f"{', '.join(GUARANTEED_RULES)}"
            )


METHODS = ("conversion", "direct")


def _check_direct(cfg: ExperimentConfig) -> None:
    from .losses import LOSSES
    from .neurons import SURROGATES
    from .time_checkpoint import NORM_POLICIES
    from .train import PRECISIONS, SELECTIONS

    d = cfg.direct
    choices = [
        ("method", cfg.method, METHODS),
        ("train.precision", cfg.train.precision, tuple(PRECISIONS)),
        ("train.select", cfg.train.select, SELECTIONS),
        ("train.time_checkpoint_norms", cfg.train.time_checkpoint_norms, NORM_POLICIES),
        ("direct.loss", d.loss, tuple(LOSSES)),
        ("direct.reset", d.reset, ("hard", "soft")),
        ("direct.surrogate", d.surrogate, tuple(SURROGATES)),
    ]
    for key, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"'{key}' is {value!r}; expected one of: {', '.join(allowed)}")
    checks = [
        (d.threshold > 0, f"'direct.threshold' must be > 0, got {d.threshold}"),
        (0.0 <= d.leak <= 1.0, f"'direct.leak' must be in [0, 1], got {d.leak}"),
        (d.surrogate_width > 0, f"'direct.surrogate_width' must be > 0, got {d.surrogate_width}"),
        (0.0 <= d.tet_lambda <= 1.0, f"'direct.tet_lambda' must be in [0, 1], got {d.tet_lambda}"),
        (0.0 < d.rcs_rho <= 1.0, f"'direct.rcs_rho' must be in (0, 1], got {d.rcs_rho}"),
        (0.0 < d.mask_rho <= 1.0, f"'direct.mask_rho' must be in (0, 1], got {d.mask_rho}"),
        (
            cfg.train.time_checkpoint is None or cfg.train.time_checkpoint >= 1,
            f"'train.time_checkpoint' must be >= 1 or null, got {cfg.train.time_checkpoint}",
        ),
        (
            cfg.train.time_checkpoint is None or cfg.method == "direct",
            "'train.time_checkpoint' applies to 'method: direct' (the SNN trains through "
            f"time); method {cfg.method!r} trains an ANN: set it to null",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _check_options(key: str, registry: Any, name: str, options: dict, own_keys: tuple) -> None:
    """Options must be ones the factory takes, and not ones the config sets elsewhere."""
    clash = sorted(set(options) & set(own_keys))
    if clash:
        parent = key.rsplit(".", 1)[0]
        raise ConfigError(
            f"'{key}' must not set {', '.join(clash)}: use '{parent}.{clash[0]}' instead"
        )
    try:
        registry.check_options(name, options, fixed=own_keys)
    except TypeError as err:
        raise ConfigError(f"'{key}': {err}") from None


def parse_config(raw: dict | None) -> ExperimentConfig:
    """Validate a raw mapping (e.g. parsed YAML) into an :class:`ExperimentConfig`."""
    cfg = _build(ExperimentConfig, raw or {}, "")
    _check_values(cfg)
    return cfg


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a raw config mapping."""
    raw = dict(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: cannot parse value {text!r}: {err}") from None
        node = raw
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {key}: '{where}' is not a mapping")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment (or the built-in default when ``path`` is None) and validate it."""
    raw: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"cannot parse {path} as YAML: {detail}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping at the top, got {_found(raw)}")
    return parse_config(apply_overrides(raw, overrides or []))


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """The configuration as plain data (for results.json and report.md)."""
    return dataclasses.asdict(cfg)
