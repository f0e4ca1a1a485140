"""Command line: ``spikecut run [CONFIG.yaml] [--out DIR] [--set key=value ...] [--resume]``
and friends (``study``, ``report``, ``config``, ``bench``, ``check``, ``calibrate``,
``evaluate``; ``calibrate`` and ``evaluate`` also take ``--model FILE.nir``). Under
``torchrun --nproc_per_node=N -m spikecut run ...`` the processes train together and rank 0
prints and writes.

A configuration problem (missing file, unknown key, wrong type, unknown dataset) or a run
whose training diverged is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError, load_config
from .model_file import add_model_arguments
from .train import TrainingDiverged

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2


# Where `make run` and the README's commands put the default experiments.
DEFAULT_RESULTS = (
    "results/default",
    "results/mnist5k-tet",
    "results/mnist5k-dvs-tet",
    "results/mnist5k-enter-tet",
    "results/mnist5k-resnet20-qcfs",
)


def _add_experiment_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """CONFIG, --out, --set and --quiet: how a command that runs an experiment is told which."""
    parser.add_argument("config", nargs="?", help="experiment YAML (default: built-in MNIST-5k)")
    parser.add_argument("--out", help=f"output folder (default: {default_out})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikecut",
        description="Spiking neural networks with RCS training, QCFS conversion and cutoff.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run an experiment end to end (the built-in MNIST-5k default without CONFIG)",
        description="Train, convert, calibrate, evaluate every cutoff rule and write a report.",
    )
    _add_experiment_arguments(run, "results/<experiment name>")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the checkpoints in the output folder (same "
        "configuration); finished runs are not repeated",
    )

    study = sub.add_parser(
        "study",
        help="run a config over seeds x RCS weights alpha and compare each alpha with alpha = 0 "
        "(confidence intervals, paired tests, layer diagnostics); resumable",
        description="Train and evaluate the config once per (alpha, seed), then report per alpha "
        "the mean and 95% Student-t interval over seeds of the SNN accuracy at T, the mean OCT "
        "and the Top-K (epsilon = 0) accuracy and mean exit, and against alpha = 0 the mean "
        "paired difference, paired t-test and exact sign-flip test. Writes study.json, study.md "
        "and plots beside the experiment's results.json. Finished runs are kept and skipped "
        "when the same command is run again; an interrupted run continues from its checkpoint. "
        "The config's 'runs' and 'seeds' are replaced by --alphas and --seeds.",
    )
    _add_experiment_arguments(study, "results/<experiment name>-study")
    study.add_argument(
        "--alphas",
        nargs="+",
        type=float,
        default=[0.0, 0.002, 0.005],
        metavar="A",
        help="RCS weights to compare; must include 0, the baseline (default: %(default)s)",
    )
    study.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0, 1, 2, 3, 4],
        metavar="S",
        help="seeds, at least 2 (default: %(default)s)",
    )
    study.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="skip the per-layer firing-rate and response-convergence diagnostics",
    )
    study.add_argument(
        "--samples",
        type=int,
        default=500,
        help="test samples for the diagnostics, evenly spaced over the split (default: "
        "%(default)s)",
    )

    report = sub.add_parser("report", help="re-render report.md and plots from a results.json")
    report.add_argument("results", help="path to results.json")
    report.add_argument("--out", help="output folder (default: the results file's folder)")

    bench = sub.add_parser(
        "bench",
        help="simulation speed and memory against SpikingJelly/snnTorch, and anytime wall-clock",
        description="Time the same spiking networks in spikecut and its peers (one process) and "
        "write JSON + a markdown table.",
    )
    bench.add_argument(
        "--quick", action="store_true", help="small sizes (a few minutes on 2 cores)"
    )
    bench.add_argument(
        "--out",
        default="benchmarks/results/latest.json",
        help="results JSON (the markdown table goes beside it; default: %(default)s)",
    )
    bench.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    bench.add_argument("--threads", type=int, help="torch threads (default: all available CPUs)")
    bench.add_argument(
        "--rule",
        default="topk",
        help="exit rule of the anytime benchmark: topk (ε = 0, the run's saved β) or a "
        "guaranteed rule (topk-risk, softmax-risk, entropy-risk, spikecp) rebuilt from the "
        "run's stored calibration (default: %(default)s)",
    )
    bench.add_argument(
        "--memory",
        action="store_true",
        help="add the memory section: peak memory of ResNet-20 inference, calibration and "
        "training (with and without time checkpointing) against T, one process per point",
    )
    bench.add_argument(
        "--results",
        nargs="+",
        default=None,
        metavar="DIR",
        help="finished experiment folders for the anytime wall-clock benchmark (default: "
        "those of the default experiments that exist: " + ", ".join(DEFAULT_RESULTS) + ")",
    )

    check = sub.add_parser(
        "check",
        help="check the guaranteed rules of a finished run by recalibrating on resamples",
        description="Pool a run's held-out and test outputs, recalibrate each rule on many "
        "draws and count how often its risk exceeds the promised one "
        "(spikecut.risk.check_guarantee). Writes check-<run>.json beside results.json.",
    )
    check.add_argument("results", help="a finished run's folder (with results.json)")
    check.add_argument("--run", help="run name (default: the first run)")
    check.add_argument("--repeats", type=int, default=200)
    check.add_argument("--cal-fraction", type=float, default=0.5)
    check.add_argument("--mode", choices=("resample", "split"), default="resample")
    check.add_argument("--risk", type=float, help="default: the run's cutoff.guarantee.risk")
    check.add_argument("--delta", type=float, help="default: the run's cutoff.guarantee.delta")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument(
        "--train-split",
        action="store_true",
        help="also check calibrators fitted once on the training split without dropout (data "
        "the network fitted; reruns the SNN on it)",
    )

    from .risk import GUARANTEED_RULES

    calibrate = sub.add_parser(
        "calibrate",
        help="recalibrate the guaranteed rules of finished runs with new settings, no retraining",
        description="Load each run's held-out and test outputs (outputs/<run>.pt, computed once "
        "from the saved weights when absent), calibrate the guaranteed rules on the held-out "
        "outputs with the given settings, evaluate them on the test outputs, and replace the "
        "runs' 'guaranteed' and 'guaranteed_sweep' entries in results.json (atomically); "
        "report.md and the plots are rendered again. Settings not given keep the run's "
        "cutoff.guarantee values.",
    )
    calibrate.add_argument(
        "results", nargs="?", help="a finished experiment's folder (with results.json)"
    )
    calibrate.add_argument(
        "--run",
        dest="runs",
        action="append",
        metavar="NAME",
        help="run to recalibrate (repeatable; default: every run)",
    )
    calibrate.add_argument(
        "--rule",
        dest="rules",
        action="append",
        choices=GUARANTEED_RULES,
        help="guaranteed rule (repeatable; default: cutoff.guarantee.rules)",
    )
    calibrate.add_argument("--risk", type=float, help="risk of the *-risk rules, in (0, 1)")
    calibrate.add_argument("--delta", type=float, help="δ of the *-risk rules, in (0, 1)")
    calibrate.add_argument("--alpha", type=float, help="SpikeCP miscoverage α, in (0, 1)")
    calibrate.add_argument("--max-set-size", type=int, help="SpikeCP exit set size (>= 1)")
    calibrate.add_argument(
        "--sweep-risks",
        type=float,
        nargs="+",
        metavar="R",
        help="risk levels of the trade-off sweep (default: cutoff.guarantee.sweep_risks)",
    )
    calibrate.add_argument(
        "--device", default="cpu", help="device for computing missing outputs (default: cpu)"
    )
    calibrate.add_argument("--quiet", action="store_true", help="no progress bars")
    add_model_arguments(calibrate, required=False)

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate a spiking network from a NIR file on a configured experiment's data",
        description="Load --model (a NIR graph), take data, T and cutoff rules from --config, "
        "calibrate and evaluate every rule, and write results.json and the report as a run "
        "does (without training fields).",
    )
    add_model_arguments(evaluate, required=True)
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")

    show = sub.add_parser("config", help="print the validated configuration as YAML")
    show.add_argument("config", nargs="?", help="experiment YAML (default: built-in)")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from .experiment import default_out_dir, run_experiment
    from .report import summary_table

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else default_out_dir(cfg)
    results = run_experiment(cfg, out, progress=not args.quiet, resume=args.resume)
    if results["environment"].get("rank", 0) == 0:
        print(summary_table(results))
        print(f"\nwrote {out / 'results.json'}, {out / 'report.md'} and plots to {out}/")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from .study import StudyDiverged, default_study_dir, run_study
    from .study_report import study_summary

    if args.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {args.samples}")
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else default_study_dir(cfg)
    try:
        study = run_study(
            cfg,
            args.alphas,
            args.seeds,
            out,
            progress=not args.quiet,
            diagnostics=args.diagnostics,
            diagnostic_samples=args.samples,
        )
    except StudyDiverged as err:  # a run diverged: one line, the finished runs are kept
        print(f"spikecut: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if study is None:  # another rank of a torchrun study: rank 0 prints and writes
        return 0
    print(study_summary(study))
    print(f"\nwrote {out / 'study.json'}, {out / 'study.md'} and plots to {out}/")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import load_results, summary_table, write_report

    path = Path(args.results)
    try:
        results = load_results(path)
    except ValueError as err:  # corrupt or invalid results: bad input, not a crash
        raise ConfigError(str(err)) from None
    out = Path(args.out) if args.out else path.parent
    write_report(results, out)
    print(summary_table(results))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.runner import run_bench

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda requested but CUDA is not available")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    from .cutoff import GUARANTEED_RULES

    if args.rule != "topk" and args.rule not in GUARANTEED_RULES:
        raise ConfigError(
            f"--rule {args.rule!r}: expected topk or one of {', '.join(GUARANTEED_RULES)}"
        )
    results_dirs = args.results
    if results_dirs is None:
        results_dirs = [d for d in DEFAULT_RESULTS if (Path(d) / "results.json").is_file()]
        missing = [d for d in DEFAULT_RESULTS if d not in results_dirs]
        if missing:
            print(
                f"anytime benchmark: no finished run in {', '.join(missing)} (make them with "
                "`spikecut run [configs/X.yaml] --out DIR`, or name folders with --results)"
            )
    out = Path(args.out)
    run_bench(
        out,
        quick=args.quick,
        device=args.device,
        results_dirs=results_dirs,
        threads=args.threads,
        rule=args.rule,
        memory=args.memory,
    )
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def _heldout_results(folder: Path, remedy: str):
    """The results and config of a finished experiment that held out a calibration split;
    a one-line error (ending with ``remedy``) for anything else."""
    from .config import parse_config
    from .report import load_results

    try:
        results = load_results(folder / "results.json")
        cfg = parse_config(results["config"])
    except (ValueError, KeyError) as err:
        raise ConfigError(f"{folder / 'results.json'}: {err}") from None
    split = results.get("calibration_split") or {}
    if split.get("source") != "heldout" or cfg.cutoff.calibration.source != "heldout":
        raise ConfigError(
            f"{folder / 'results.json'}: the run has no held-out calibration split "
            f"(calibration_split: {split or 'absent'}); {remedy}"
        )
    return results, cfg


def _cmd_check(args: argparse.Namespace) -> int:
    import torch

    from . import cutoff
    from ._io import atomic_write_json
    from .experiment import _slug, load_run_outputs

    folder = Path(args.results)
    results, cfg = _heldout_results(
        folder,
        "its networks trained on all the training data, so there is nothing exchangeable "
        "with the test split to pool",
    )
    runs = {run["name"]: run for run in results["runs"]}
    name = args.run or next(iter(runs))
    if name not in runs:
        raise ConfigError(f"no run named {name!r} in {folder}; runs: {', '.join(runs)}")
    g = cfg.cutoff.guarantee
    risk = g.risk if args.risk is None else args.risk
    delta = g.delta if args.delta is None else args.delta
    outputs = load_run_outputs(folder, name)
    Y = torch.cat([outputs["heldout"][0], outputs["test"][0]], dim=1)
    labels = torch.cat([outputs["heldout"][1], outputs["test"][1]])

    def ltt(score):
        return lambda y, lab: cutoff.RiskControlledCutoff(score, risk, delta).calibrate(y, lab)

    def paper_at_risk(y, lab):  # the paper's calibration at ε = risk, no finite-sample term
        return cutoff.TopKCutoff(epsilon=risk, bins=cfg.cutoff.bins).calibrate(y, lab)

    checks = {f"{s}-risk": ltt(s) for s in ("topk", "softmax", "entropy")}
    checks[f"topk (paper, ε = {risk:g} on each draw)"] = paper_at_risk
    if runs[name].get("beta") is not None:  # the run's own Top-K: training data + dropout
        as_run = cutoff.TopKCutoff(bins=cfg.cutoff.bins)
        as_run.beta = torch.tensor(runs[name]["beta"])
        checks["topk (paper, as run: ε = 0, training split)"] = lambda y, lab: as_run
    if args.train_split:  # fitted once on data the network trained on: no guarantee
        Ytr, ytr = _training_outputs(folder, name, cfg)
        fitted_topk = cutoff.TopKCutoff(epsilon=risk, bins=cfg.cutoff.bins).calibrate(Ytr, ytr)
        fitted_ltt = cutoff.RiskControlledCutoff("topk", risk, delta).calibrate(Ytr, ytr)
        checks[f"topk (ε = {risk:g}, training split, no dropout)"] = lambda y, lab: fitted_topk
        checks["topk-risk (training split, no dropout)"] = lambda y, lab: fitted_ltt
    report = {"run": name, "pool": Y.shape[1], "checks": {}}
    print(
        f"{name}: {Y.shape[1]} pooled held-out + test samples, risk {risk:g}, δ {delta:g}, "
        f"{args.repeats} {args.mode} draws of {args.cal_fraction:g}"
    )
    for label, make in checks.items():
        r = cutoff.check_guarantee(
            Y,
            labels,
            make,
            risk=risk,
            delta=delta,
            repeats=args.repeats,
            cal_fraction=args.cal_fraction,
            seed=args.seed,
            mode=args.mode,
        )
        report["checks"][label] = r
        lo, hi = r["violation_interval"]
        flag = "  ABOVE δ" if r["significantly_above_delta"] else ""
        print(
            f"  {label:45s} violations {r['violation_rate']:.3f} [{lo:.3f}, {hi:.3f}]"
            f"  mean loss {100 * r['mean_loss']:.2f} %  mean exit {r['mean_exit']:.2f}{flag}"
        )
    path = folder / f"check-{_slug(name)}{'' if args.mode == 'resample' else '-' + args.mode}.json"
    atomic_write_json(path, report)
    print(f"wrote {path}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .model_file import default_model_out_dir, evaluate_model_file
    from .report import summary_table

    cfg = load_config(args.model_config, args.model_overrides)
    out = Path(args.model_out) if args.model_out else default_model_out_dir(cfg, args.model)
    results = evaluate_model_file(cfg, args.model, out, progress=not args.quiet)
    print(summary_table(results))
    print(f"\nwrote {out / 'results.json'}, {out / 'report.md'} and plots to {out}/")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    if args.model is not None:  # a network from a file has no run to recalibrate: evaluate it
        if args.results is not None:
            raise ConfigError("calibrate: give a results folder or --model, not both")
        return _cmd_evaluate(args)
    if args.results is None:
        raise ConfigError("calibrate: give a finished experiment's folder, or --model FILE.nir")

    from ._io import atomic_write_json
    from .config import config_to_dict, parse_config
    from .experiment import _run_file, guaranteed_fields, load_run_outputs
    from .report import summary_table, write_report

    folder = Path(args.results)
    results, cfg = _heldout_results(
        folder,
        "re-run it with `cutoff.calibration.source: heldout` to calibrate the guaranteed rules",
    )
    runs = {run["name"]: run for run in results["runs"]}
    names = args.runs or list(runs)
    unknown = [n for n in names if n not in runs]
    if unknown:
        raise ConfigError(f"no run named {unknown[0]!r} in {folder}; runs: {', '.join(runs)}")
    g = cfg.cutoff.guarantee
    given = {
        "rules": args.rules,
        "risk": args.risk,
        "delta": args.delta,
        "alpha": args.alpha,
        "max_set_size": args.max_set_size,
        "sweep_risks": args.sweep_risks,
    }
    g = dataclasses.replace(g, **{k: v for k, v in given.items() if v is not None})
    cfg.cutoff.guarantee = g
    try:  # the new settings, checked as a config would be
        cfg = parse_config(config_to_dict(cfg))
    except ConfigError as err:
        raise ConfigError(f"calibrate: {err}") from None
    for name in names:
        outputs = load_run_outputs(folder, name, device=args.device, progress=not args.quiet)
        run = runs[name]
        run.update(guaranteed_fields(cfg, outputs["test"], outputs["heldout"]))
        for r in run["guaranteed"]:
            level = f"risk {r['risk']:g}" if "risk" in r else f"α {r['alpha']:g}"
            print(
                f"{name}: {r['rule']:13s} {level:11s} accuracy {100 * r['accuracy']:.2f} %  "
                f"mean exit {r['mean_exit']:.2f} / {results['T']}"
            )
    if set(names) == set(runs):  # every run now follows the new settings
        results["config"]["cutoff"]["guarantee"] = config_to_dict(cfg)["cutoff"]["guarantee"]
    write_report(results, folder)  # validates and renders first: never a half-written report
    for name in names:  # keep `run --resume` from bringing the old calibration back
        path = _run_file(folder, name)
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            saved["entry"] = runs[name]
            atomic_write_json(path, saved)
    print(summary_table(results))
    print(f"\nrecalibrated {', '.join(names)}; wrote {folder / 'results.json'} and the report")
    return 0


def _training_outputs(folder: Path, name: str, cfg):
    """The run's SNN outputs on its training split (no augmentation, no dropout)."""
    from .evaluate import collect_cum_logits
    from .experiment import _datasets, config_yields_frames, load_run_snn

    snn, _, _ = load_run_snn(folder, name)
    _, plain, _, _, _ = _datasets(cfg, progress=False)
    frames = config_yields_frames(cfg, plain)
    return collect_cum_logits(
        snn, plain, cfg.T, frames=frames, batch_size=cfg.batch_size_eval, progress=False
    )


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from .config import config_to_dict

    print(yaml.safe_dump(config_to_dict(load_config(args.config, args.overrides)), sort_keys=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spikecut`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    commands = {
        "run": _cmd_run,
        "study": _cmd_study,
        "report": _cmd_report,
        "config": _cmd_config,
        "bench": _cmd_bench,
        "check": _cmd_check,
        "calibrate": _cmd_calibrate,
        "evaluate": _cmd_evaluate,
    }
    try:
        return commands[args.command](args)
    except (ConfigError, CheckpointError, FileNotFoundError) as err:
        print(f"spikecut: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as err:  # the settings, not the program: say what to change
        written = (
            f"the runs finished before it are reported in {err.report}"
            if err.report is not None
            else "no run had finished, nothing was written"
        )
        print(f"spikecut: error: {err}; {written}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("spikecut: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
