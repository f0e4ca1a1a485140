"""Tests for spikecut.report: validation, markdown numbers, plots, all-or-nothing writes."""

from __future__ import annotations

import copy
import json
import re
import struct

import pytest

from spikecut import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FILES = [
    "results.json",
    "report.md",
    "accuracy_vs_timestep.png",
    "exit_histograms.png",
    "beta.png",
    "tradeoff-rcs.png",
    "tradeoff-baseline.png",
]


def _rule(rule, eps, acc, mean_exit, hist, acc_T, T=4):
    return {
        "rule": rule,
        "epsilon": eps,
        "accuracy": acc,
        "mean_exit": mean_exit,
        "speedup": T / mean_exit,
        "accuracy_delta": acc - acc_T,
        "exit_histogram": hist,
    }


def make_results() -> dict:
    """T = 4, two runs, rules topk (ε 0 and 0.01), softmax, entropy, fixed."""
    a = 0.9876
    b = 0.9
    return {
        "experiment": "toy-digits",
        "T": 4,
        "config": {"model": "cnn_small", "train": {"epochs": 2, "lr": 0.01}},
        "environment": {"torch": "2.13.0", "device": "cpu", "spikecut": "0.1.0", "seconds": 12.5},
        "runs": [
            {
                "name": "rcs",
                "alpha": 0.5,
                "ann_accuracy": 0.99,
                "snn_accuracy_per_t": [0.5, 0.8, 0.95, a],
                "oct_mean": 1.6,
                "oct_histogram": [60, 20, 15, 5],
                "beta": [1.5, 1.0, 0.5, 0.0],
                "train": {"epochs": 2, "final_loss": 0.1234, "final_rcs": 0.5, "seconds": 3.0},
                "rules": [
                    _rule("topk", 0.0, a, 2.0, [40, 30, 20, 10], a),
                    _rule("topk", 0.01, 0.97, 1.6, [60, 25, 10, 5], a),
                    _rule("softmax", 0.0, 0.98, 2.5, [20, 30, 30, 20], a),
                    _rule("entropy", 0.0, 0.975, 3.2, [5, 15, 35, 45], a),
                    _rule("fixed", 0.0, a, 4.0, [0, 0, 0, 100], a),
                ],
            },
            {
                "name": "baseline",
                "alpha": 0.0,
                "ann_accuracy": 0.95,
                "snn_accuracy_per_t": [0.3, 0.6, 0.85, b],
                "oct_mean": 2.5,
                "oct_histogram": [30, 20, 20, 30],
                "beta": None,
                "rules": [
                    _rule("topk", 0.0, 0.895, 3.2, [5, 15, 35, 45], b),
                    _rule("topk", 0.01, 0.88, 2.9, [10, 20, 40, 30], b),
                    _rule("softmax", 0.0, 0.89, 3.0, [10, 20, 30, 40], b),
                    _rule("entropy", 0.0, 0.9, 3.5, [0, 10, 30, 60], b),
                    _rule("fixed", 0.0, b, 4.0, [0, 0, 0, 100], b),
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    results = make_results()
    out = tmp_path_factory.mktemp("report") / "nested" / "out"
    paths = report.write_report(results, out)
    return results, out, paths


# ----------------------------------------------------------------------------- write_report


def test_write_report_writes_every_file_and_a_tradeoff_per_run(written):
    _, out, paths = written
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # no stray temp files
    assert set(paths) == {
        "results",
        "report",
        "accuracy_vs_timestep",
        "exit_histograms",
        "beta",
        "tradeoff:rcs",
        "tradeoff:baseline",
    }
    assert all(p.parent == out and p.is_file() for p in paths.values())


def test_results_json_round_trips(written):
    results, out, _ = written
    assert json.loads((out / "results.json").read_text()) == results
    assert report.load_results(out / "results.json") == results


@pytest.mark.parametrize("name", [f for f in FILES if f.endswith(".png")])
def test_pngs_are_valid_and_non_trivial(written, name):
    data = (written[1] / name).read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 400 and height >= 300
    assert len(data) > 10_000


def test_markdown_numbers_are_formatted(written):
    md = (written[1] / "report.md").read_text()
    assert md.startswith("# spikecut report: toy-digits")
    assert "T = 4 timesteps, 2 runs" in md
    # summary row: ANN 99.00 %, SNN@T 98.76 %, OCT 1.60 → 2.50×, Top-K 98.76 % at 2.00 → 2.00×, ±0
    assert "| rcs | 0.5 | 99.00 | 98.76 | 1.60 | 2.50× | 98.76 | 2.00 | 2.00× | +0.00 |" in md
    # baseline Top-K: 4 / 3.2 = 1.25×, 89.50 − 90.00 = −0.50 points
    assert "| baseline | 0 | 95.00 | 90.00 | 2.50 | 1.60× | 89.50 | 3.20 | 1.25× | -0.50 |" in md
    for section in ("## Summary", "## Top-K ε sweep", "## Accuracy per timestep", "## Config"):
        assert section in md
    assert "## Rules at ε = 0: rcs" in md and "## Rules at ε = 0: baseline" in md
    assert "- **rcs**: [1.5, 1, 0.5, 0]" in md
    assert "- **baseline**: none" in md
    assert "```yaml\nmodel: cnn_small\n" in md
    assert "torch 2.13.0" in md


def test_rules_table_has_every_rule_at_eps0_and_not_the_sweep(written):
    md = (written[1] / "report.md").read_text()
    section = md.split("## Rules at ε = 0: rcs")[1].split("##")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
    assert [r.split("|")[1].strip() for r in rows] == [
        "topk",
        "softmax",
        "entropy",
        "fixed",
        "OCT (oracle)",
    ]
    assert "| entropy | 0.00 | 97.50 | 3.20 | 1.25× | -1.26 |" in section
    assert "| fixed | 0.00 | 98.76 | 4.00 | 1.00× | +0.00 |" in section


def test_sweep_and_per_timestep_tables(written):
    md = (written[1] / "report.md").read_text()
    assert "| 0.01 | 97.00 | 1.60 | 88.00 | 2.90 |" in md
    assert "| 0.00 | 98.76 | 2.00 | 89.50 | 3.20 |" in md
    per_t = md.split("## Accuracy per timestep")[1].split("##")[0]
    assert "| 1 | 50.00 | 30.00 |" in per_t
    assert "| 4 | 98.76 | 90.00 |" in per_t


def test_summary_table_matches_report_and_escapes_pipes():
    results = make_results()
    table = report.summary_table(results)
    assert table.splitlines()[0].startswith("| Run | α | ANN acc %")
    assert len(table.splitlines()) == 2 + 2
    assert table in report.render_markdown(results)
    results["runs"][0]["name"] = "a|b"
    assert r"| a\|b |" in report.summary_table(results)


# ----------------------------------------------------------------------------- optional parts


def _minimal() -> dict:
    results = make_results()
    del results["config"], results["environment"]
    for run in results["runs"]:
        run.pop("beta", None)
        run.pop("train", None)
        run.pop("oct_histogram")
        run["rules"] = [
            {k: r[k] for k in ("rule", "epsilon", "accuracy", "mean_exit")}
            for r in run["rules"]
            if r["rule"] != "topk"
        ]
    return results


def test_markdown_tolerates_missing_optional_fields():
    md = report.render_markdown(_minimal())
    assert "## Config" not in md and "β_t" not in md and "## Top-K ε sweep" not in md
    assert "## Training" not in md and "Environment" not in md
    # no Top-K rule: its summary columns show a dash instead of crashing
    assert "| rcs | 0.5 | 99.00 | 98.76 | 1.60 | 2.50× | — | — | — | — |" in md


def test_plots_tolerate_missing_optional_fields(tmp_path):
    results = _minimal()
    for plot in (report.plot_accuracy_vs_timestep, report.plot_exit_histograms, report.plot_beta):
        path = plot(results, tmp_path / f"{plot.__name__}.png")
        assert path.read_bytes()[:8] == PNG_MAGIC
    name = results["runs"][0]["name"]
    path = report.plot_tradeoff(results, name, tmp_path / "plot_tradeoff.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "plot_accuracy_vs_timestep.png",
            "plot_exit_histograms.png",
            "plot_beta.png",
            "plot_tradeoff.png",
        ]
    )
    with pytest.raises(ValueError, match="no run named 'nope'"):
        report.plot_tradeoff(results, "nope", tmp_path / "x.png")


def _sweep_row(risk, acc, mean_exit):
    row = _rule("topk-risk", risk, acc, mean_exit, [25, 25, 25, 25], 0.9876)
    return {**row, "risk": risk, "delta": 0.1, "certified": True, "loss": 0.004}


def test_the_guaranteed_sweep_is_validated_and_drawn_and_tabled(tmp_path):
    results = make_results()
    sweep = [_sweep_row(0.01, 0.985, 2.6), _sweep_row(0.05, 0.96, 1.9)]
    results["runs"][0]["guaranteed_sweep"] = sweep
    paths = report.write_report(results, tmp_path)
    assert paths["tradeoff:rcs"].read_bytes()[:8] == PNG_MAGIC
    md = (tmp_path / "report.md").read_text()
    assert "![rcs](tradeoff-rcs.png)" in md and "![baseline](tradeoff-baseline.png)" in md
    assert "| topk-risk | 0.05 | yes | 96.00 | 1.90 | 0.40 |" in md
    bad = copy.deepcopy(results)
    bad["runs"][0]["guaranteed_sweep"][1]["mean_exit"] = 4.5
    with pytest.raises(ValueError, match=re.escape("runs[0].guaranteed_sweep[1].mean_exit")):
        report.validate_results(bad)
    bad["runs"][0]["guaranteed_sweep"] = [dict(sweep[0])]
    del bad["runs"][0]["guaranteed_sweep"][0]["risk"]
    with pytest.raises(ValueError, match=re.escape("runs[0].guaranteed_sweep[0].risk: missing")):
        report.validate_results(bad)


# ----------------------------------------------------------------------------- validation


def _set(path, value):
    def mutate(results):
        *parents, last = path
        obj = results
        for key in parents:
            obj = obj[key]
        if value is KeyError:
            del obj[last]
        else:
            obj[last] = value(obj[last]) if callable(value) else value

    return mutate


INVALID = [
    (
        _set(["runs", 1, "snn_accuracy_per_t"], lambda v: v[:3]),
        "runs[1].snn_accuracy_per_t: expected a list of length T=4, found length 3",
    ),
    (
        _set(["runs", 0, "rules", 3, "accuracy"], 1.5),
        "runs[0].rules[3].accuracy: expected a number in [0, 1], found 1.5",
    ),
    (_set(["runs", 1, "oct_mean"], KeyError), "runs[1].oct_mean: missing required key"),
    (_set(["experiment"], KeyError), "experiment: missing required key"),
    (
        _set(["runs", 0, "rules", 1, "mean_exit"], 4.5),
        "runs[0].rules[1].mean_exit: expected a number in [1, 4], found 4.5",
    ),
    (_set(["runs", 0, "snn_accuracy_per_t", 2], "0.9"), "runs[0].snn_accuracy_per_t[2]"),
    (_set(["runs", 0, "beta"], [1.0, 2.0]), "runs[0].beta: expected a list of length T=4"),
    (_set(["T"], True), "T: expected an integer >= 1, found True"),
    (_set(["runs"], []), "runs: expected a non-empty list"),
    (_set(["config", "train", "lr"], float("nan")), "config.train.lr: expected a finite number"),
]


@pytest.mark.parametrize(("mutate", "message"), INVALID)
def test_validation_names_the_field(mutate, message):
    results = make_results()
    mutate(results)
    with pytest.raises(ValueError, match=re.escape(message)):
        report.validate_results(results)


def test_valid_results_pass_and_are_not_modified():
    results = make_results()
    before = copy.deepcopy(results)
    report.validate_results(results)
    report.render_markdown(results)
    assert results == before


def test_invalid_results_write_nothing_into_fresh_dir(tmp_path):
    results = make_results()
    results["runs"][0]["rules"][3]["accuracy"] = 1.5
    out = tmp_path / "fresh"
    with pytest.raises(ValueError, match=re.escape("runs[0].rules[3].accuracy")):
        report.write_report(results, out)
    assert not out.exists() or not any(out.iterdir())


def test_invalid_results_leave_existing_results_untouched(tmp_path):
    (tmp_path / "results.json").write_text('{"old": true}\n')
    results = make_results()
    del results["runs"][1]["oct_mean"]
    with pytest.raises(ValueError, match=re.escape("runs[1].oct_mean")):
        report.write_report(results, tmp_path)
    assert (tmp_path / "results.json").read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_render_failure_writes_nothing(tmp_path, monkeypatch):
    def broken(results):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report.plots, "_beta_figure", broken)
    with pytest.raises(RuntimeError, match="plot failed"):
        report.write_report(make_results(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_plot_beta_without_thresholds_still_writes(tmp_path):
    results = make_results()
    for run in results["runs"]:
        run["beta"] = None
    path = report.plot_beta(results, tmp_path / "beta.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------- load_results


def test_load_results_truncated_json_names_the_file(tmp_path):
    path = tmp_path / "results.json"
    text = json.dumps(make_results(), indent=2)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"results\.json: not valid JSON .*truncated"):
        report.load_results(path)


def test_load_results_missing_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"results file not found: .*nope\.json"):
        report.load_results(tmp_path / "nope.json")


def test_load_results_invalid_content_names_file_and_field(tmp_path):
    results = make_results()
    results["runs"][0]["ann_accuracy"] = 98.5  # a percentage where a fraction belongs
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"r\.json: runs\[0\]\.ann_accuracy: expected a number"):
        report.load_results(path)


def test_every_swept_rule_gets_its_own_sweep_table():
    results = make_results()
    a = results["runs"][0]["snn_accuracy_per_t"][-1]
    results["runs"][0]["rules"].append(_rule("softmax", 0.05, 0.96, 1.25, [80, 10, 5, 5], a))
    md = report.render_markdown(results)
    section = md.split("## Softmax confidence ε sweep")[1].split("##")[0]
    assert "| 0.00 | 98.00 | 2.50 |" in section
    assert "| 0.05 | 96.00 | 1.25 | — | — |" in section
    assert "## Entropy ε sweep" not in md  # a single ε is no sweep


def test_runs_repeated_over_seeds_get_mean_and_sample_std():
    results = make_results()
    for run, group in zip(results["runs"], ("rcs", "rcs"), strict=True):
        run["group"] = group
    # ANN 0.99 and 0.95 -> mean 97.00, sample std 2.83; OCT 1.6 and its twin's
    oct_b = results["runs"][1]["oct_mean"]
    mean = (1.6 + oct_b) / 2
    std = abs(1.6 - oct_b) / 2**0.5
    md = report.render_markdown(results)
    section = md.split("## Mean ± std over seeds")[1].split("##")[0]
    assert "| rcs | 0.5 | 2 | 97.00 ± 2.83 |" in section
    assert f"{mean:.2f} ± {std:.2f}" in section
    assert "Mean ± std over seeds" in report.summary_table(results)
    results["runs"][0]["group"] = 3
    with pytest.raises(ValueError, match=r"runs\[0\]\.group"):
        report.validate_results(results)
