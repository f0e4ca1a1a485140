"""Command line: ``spikecut run [CONFIG.yaml] [--out DIR] [--set key=value ...] [--resume]``
and friends (``report``, ``config``, ``bench``). Under ``torchrun --nproc_per_node=N -m
spikecut run ...`` the processes train together and rank 0 prints and writes.

A configuration problem (missing file, unknown key, wrong type, unknown dataset) or a run
whose training diverged is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError, load_config
from .train import TrainingDiverged

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2


# Where `make run` and the README's commands put the default experiments.
DEFAULT_RESULTS = ("results/default", "results/mnist5k-tet", "results/mnist5k-dvs-tet")


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
    run.add_argument("config", nargs="?", help="experiment YAML (default: built-in MNIST-5k)")
    run.add_argument("--out", help="output folder (default: results/<experiment name>)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the checkpoints in the output folder (same "
        "configuration); finished runs are not repeated",
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
        "--results",
        nargs="+",
        default=None,
        metavar="DIR",
        help="finished experiment folders for the anytime wall-clock benchmark (default: "
        "those of the default experiments that exist: " + ", ".join(DEFAULT_RESULTS) + ")",
    )

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
    )
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


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
        "report": _cmd_report,
        "config": _cmd_config,
        "bench": _cmd_bench,
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
