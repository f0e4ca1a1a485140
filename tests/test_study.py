"""Seed studies: resumable over α × seeds, paired statistics, a diverged run stops cleanly."""

import json
from pathlib import Path

import pytest

import spikecut.experiment as experiment
from spikecut.cli import main
from spikecut.config import ConfigError, load_config
from spikecut.stats import mean_interval, paired_comparison
from spikecut.study import run_study, study_config, summarise

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Two epochs, so that a run interrupted after its first has a checkpoint to continue from;
# a slim network keeps the eight trainings of the resume test cheap.
TINY = [
    "train.epochs=2",
    "train.batch_size=128",
    "T=4",
    "model.options={width: 4, hidden: 16}",
    "cutoff.rules=[topk]",
    "cutoff.epsilons=[0.0]",
]
ALPHAS, SEEDS = [0.0, 0.005], [0, 1]


class _Interrupt(Exception):
    pass


def _count_training(monkeypatch, stop_at_call=None):
    """Wrap ``train_ann`` as the experiment calls it: record (alpha, seed) of every call;
    the ``stop_at_call``-th call is interrupted after its first epoch's checkpoint."""
    calls = []
    real = experiment.train_ann

    def wrapper(*args, **kwargs):
        calls.append((kwargs["alpha"], kwargs["seed"]))
        if len(calls) == stop_at_call:

            def stop(epoch):
                raise _Interrupt(f"stopped after epoch {epoch}")

            kwargs["options"].on_epoch_end = stop
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "train_ann", wrapper)
    return calls


def test_interrupted_study_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    cfg = load_config(CONFIGS / "digits-qcfs.yaml", TINY)
    options = {"progress": False, "diagnostic_samples": 60}
    whole = run_study(cfg, ALPHAS, SEEDS, tmp_path / "whole", **options)

    out = tmp_path / "interrupted"
    calls = _count_training(monkeypatch, stop_at_call=2)
    with pytest.raises(_Interrupt):
        run_study(cfg, ALPHAS, SEEDS, out, **options)
    assert calls == [(0.0, 0), (0.005, 0)]
    finished = out / "runs" / "alpha_0_seed_0.json"
    saved = finished.read_bytes()
    assert not (out / "runs" / "alpha_0.005_seed_0.json").exists()
    assert (out / "checkpoints" / "alpha_0.005_seed_0.ckpt").is_file()
    assert not (out / "study.json").exists()

    calls = _count_training(monkeypatch)
    resumed = run_study(cfg, ALPHAS, SEEDS, out, **options)
    # the finished run was not trained again; the interrupted one continued from epoch 1
    assert calls == [(0.005, 0), (0.0, 1), (0.005, 1)]
    assert finished.read_bytes() == saved
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["train"]["resumed_from"] for r in runs] == [None, 1, None, None]

    # study.json holds no timings: the whole file must be the same
    assert resumed == whole
    on_disk = json.loads((out / "study.json").read_text())
    assert on_disk == json.loads((tmp_path / "whole" / "study.json").read_text())

    # and the study says what it measured
    assert [s["alpha"] for s in whole["settings"]] == ALPHAS
    base, rcs = whole["settings"]
    assert base["vs_baseline"] is None and set(rcs["vs_baseline"]) == set(whole["metrics"])
    assert [p["run"] for p in rcs["seeds"]] == ["alpha=0.005 seed=0", "alpha=0.005 seed=1"]
    assert whole["diagnostics"]["samples"] == 60
    layers = whole["diagnostics"]["layers"]
    for setting in whole["settings"]:
        d = setting["diagnostics"]
        assert [p["seed"] for p in d["seeds"]] == SEEDS
        assert len(d["mean"]["cosine_to_final"]) == len(layers)
        for i in range(len(layers)):  # the mean over seeds, per step
            pair = [p["cosine_to_final"][i] for p in d["seeds"]]
            assert d["mean"]["cosine_to_final"][i] == pytest.approx(
                [(a + b) / 2 for a, b in zip(*pair, strict=True)]
            )
    for name in ("study.md", "study_metrics.png", "study_cosine.png", "study_firing_rate.png"):
        assert (out / name).stat().st_size > 500, name


def _fake_results(values: dict) -> dict:
    """A results dict with the figures ``values[(alpha, seed)] = (acc, oct, topk acc, exit)``."""
    alphas = sorted({a for a, _ in values})
    seeds = sorted({s for _, s in values})
    runs = []
    for (alpha, seed), (acc, oct_mean, top_acc, top_exit) in values.items():
        runs.append(
            {
                "name": f"alpha={alpha:g} seed={seed}",
                "alpha": alpha,
                "seed": seed,
                "snn_accuracy_per_t": [0.1, acc],
                "oct_mean": oct_mean,
                "rules": [
                    {"rule": "topk", "epsilon": 0.05, "accuracy": 0.0, "mean_exit": 1.0},
                    {"rule": "topk", "epsilon": 0.0, "accuracy": top_acc, "mean_exit": top_exit},
                ],
            }
        )
    config = {"seeds": seeds, "runs": [{"name": f"alpha={a:g}", "alpha": a} for a in alphas]}
    return {"experiment": "x", "method": "conversion", "T": 2, "config": config, "runs": runs}


def test_summary_pairs_by_seed_and_reads_top_k_at_epsilon_zero():
    values = {
        (0.0, 3): (0.90, 1.50, 0.89, 1.70),
        (0.0, 1): (0.80, 1.60, 0.79, 1.80),
        (0.0, 2): (0.85, 1.40, 0.84, 1.60),
        (0.002, 1): (0.82, 1.45, 0.81, 1.75),
        (0.002, 2): (0.84, 1.30, 0.83, 1.55),
        (0.002, 3): (0.91, 1.35, 0.90, 1.65),
    }
    study = summarise(_fake_results(values))
    assert study["seeds"] == [1, 2, 3] and study["alphas"] == [0.0, 0.002]
    base, rcs = study["settings"]
    assert [p["seed"] for p in rcs["seeds"]] == [1, 2, 3]
    assert [p["topk_mean_exit"] for p in rcs["seeds"]] == [1.75, 1.55, 1.65]
    oct_rcs, oct_base = [1.45, 1.30, 1.35], [1.60, 1.40, 1.50]
    assert rcs["summary"]["oct_mean"] == mean_interval(oct_rcs).as_dict()
    expected = paired_comparison(oct_rcs, oct_base).as_dict()
    got = rcs["vs_baseline"]["oct_mean"]
    assert {k: got[k] for k in expected} == expected
    assert got["significant_t"] == (expected["t_p_value"] < 0.05)
    assert got["significant_sign_flip"] is False  # 3 seeds: p >= 0.25
    assert rcs["vs_baseline"]["snn_accuracy"]["mean_difference"] == pytest.approx(0.02 / 3)
    assert study["diagnostics"] is None and "diagnostics" not in rcs

    del values[(0.002, 2)]  # seed 2 still appears at α = 0
    with pytest.raises(ValueError, match=r"lack the runs \(alpha, seed\) \[\(0.002, 2\)\]"):
        summarise(_fake_results(values))


@pytest.mark.parametrize(
    "alphas, seeds, message",
    [
        ([0.0, 0.002], [0], "at least 2 seeds"),
        ([0.0, 0.002], [1, 1], "must not repeat a seed"),
        ([0.001, 0.002], [0, 1], "must include the baseline 0"),
        ([0.0, -0.1], [0, 1], "finite and >= 0"),
        ([0.0, 0.002, 0.002], [0, 1], "must be distinct"),
    ],
)
def test_study_settings_are_checked(alphas, seeds, message):
    cfg = load_config(CONFIGS / "digits-qcfs.yaml")
    with pytest.raises(ConfigError, match=message):
        study_config(cfg, alphas, seeds)


def test_study_config_replaces_runs_and_seeds_and_needs_top_k():
    cfg = study_config(load_config(CONFIGS / "digits-qcfs.yaml"), [0, 0.002], [4, 7])
    assert [(r.name, r.alpha) for r in cfg.runs] == [("alpha=0", 0.0), ("alpha=0.002", 0.002)]
    assert cfg.seeds == [4, 7]
    no_topk = load_config(CONFIGS / "digits-qcfs.yaml", ["cutoff.rules=[softmax]"])
    with pytest.raises(ConfigError, match="must include 'topk'"):
        study_config(no_topk, [0, 0.002], [0, 1])


def test_cli_config_errors_are_one_line(capsys):
    status = main(["study", str(CONFIGS / "digits-qcfs.yaml"), "--alphas", "0.1", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("spikecut: error: --alphas must include the baseline 0")


def test_cli_stops_on_a_diverged_run_and_keeps_the_finished_ones(tmp_path, monkeypatch, capsys):
    real = experiment.train_ann
    calls = []

    def diverge_second(*args, **kwargs):
        calls.append(kwargs["alpha"])
        if len(calls) == 2:
            raise FloatingPointError("training diverged at epoch 1: loss is nan (lr=0.05)")
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "train_ann", diverge_second)
    out = tmp_path / "study"
    argv = ["study", str(CONFIGS / "digits-qcfs.yaml"), "--out", str(out), "--quiet"]
    argv += ["--alphas", "0", "0.005", "--seeds", "0", "1", "--no-diagnostics"]
    argv += ["--set", "train.epochs=1", "--set", "T=4", "--set", "model.options={width: 4}"]
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert "run 'alpha=0.005 seed=0' diverged (training diverged at epoch 1" in err
    assert "1 finished run(s) kept in" in err
    assert (out / "runs" / "alpha_0_seed_0.json").is_file()
    assert not (out / "study.json").exists()
