"""Experiment configuration validation and the command line's handling of bad input."""

from pathlib import Path

import pytest
import yaml

from spikecut.cli import main
from spikecut.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    parse_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_builtin_default_is_the_documented_yaml():
    assert config_to_dict(load_config(None)) == config_to_dict(
        load_config(CONFIGS / "mnist5k-qcfs.yaml")
    )


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    assert isinstance(load_config(path), ExperimentConfig)


def test_overrides_are_parsed_as_yaml_and_nest():
    cfg = load_config(None, ["train.epochs=3", "T=4", "cutoff.rules=[topk]", "data.root=/x"])
    assert cfg.train.epochs == 3 and cfg.T == 4
    assert cfg.cutoff.rules == ["topk"] and cfg.data.root == "/x"
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


def test_integers_are_accepted_for_floats_but_not_the_reverse():
    assert parse_config({"train": {"lr": 1}}).train.lr == 1.0
    with pytest.raises(ConfigError, match=r"'T' must be int, got float 8.5"):
        parse_config({"T": 8.5})


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"trian": {}}, r"unknown key 'trian' \(expected one of: name, method, seed, seeds, T"),
        ({"train": {"lrr": 0.1}}, r"unknown key 'train.lrr'"),
        ({"train": {"epochs": "ten"}}, r"'train.epochs' must be int, got str 'ten'"),
        ({"runs": [{"alpha": 0.1}]}, r"missing required key 'runs\[0\].name'"),
        ({"runs": [{"name": "a", "alpha": "x"}]}, r"'runs\[0\].alpha' must be float"),
        ({"data": {"name": "imagenet-99"}}, r"'data.name' is 'imagenet-99'; available:"),
        ({"model": {"name": "nope"}}, r"'model.name' is 'nope'"),
        ({"cutoff": {"rules": ["oracle"]}}, r"'cutoff.rules\[0\]' is 'oracle'"),
        ({"cutoff": {"epsilons": [1.5]}}, r"'cutoff.epsilons\[0\]' must be in \[0, 1\)"),
        ({"data": {"augment": "yes"}}, r"'data.augment' must be bool"),
        ({"runs": [{"name": "a"}, {"name": "a"}]}, r"names must be unique"),
        ({"data": 3}, r"'data' must be a mapping, got int 3"),
        ({"seeds": [1, 1]}, r"'seeds' must not repeat a seed"),
        ({"model": {"options": {"widht": 8}}}, r"'model.options': .*'widht'.*accepted.*width"),
        ({"model": {"options": {"levels": 8}}}, r"use 'model.levels' instead"),
        ({"data": {"options": {"tset_size": 9}}}, r"'data.options': .*'tset_size'.*test_size"),
        ({"time_chunk": 0}, r"'time_chunk' must be 'auto', null or an integer >= 1, got 0"),
        ({"time_chunk": "big"}, r"'time_chunk' must be 'auto', null or an integer >= 1"),
    ],
)
def test_bad_configs_name_the_key_and_the_problem(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def run_cli(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_missing_config_file_is_one_line_and_status_2(capsys, tmp_path):
    status, out, err = run_cli(capsys, "run", str(tmp_path / "absent.yaml"))
    assert status == 2
    assert err.strip() == f"spikecut: error: config file not found: {tmp_path / 'absent.yaml'}"
    assert "Traceback" not in err


def test_cli_unknown_key_and_wrong_type(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 2, "momentom": 0.9}}))
    status, _, err = run_cli(capsys, "run", str(path))
    assert status == 2 and "unknown key 'train.momentom'" in err
    assert len(err.strip().splitlines()) == 1
    status, _, err = run_cli(capsys, "run", "--set", "train.batch_size=big")
    assert status == 2 and "'train.batch_size' must be int, got str 'big'" in err


def test_cli_unparsable_yaml_and_non_mapping(capsys, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    status, _, err = run_cli(capsys, "run", str(broken))
    assert status == 2 and "cannot parse" in err and str(broken) in err
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    status, _, err = run_cli(capsys, "run", str(scalar))
    assert status == 2 and "must hold a mapping" in err
    status, _, err = run_cli(capsys, "run", "--set", "novalue")
    assert status == 2 and "key=value" in err


def test_cli_config_prints_the_validated_configuration(capsys):
    status, out, _ = run_cli(capsys, "config", "--set", "T=5")
    assert status == 0
    assert yaml.safe_load(out)["T"] == 5


def test_cli_report_on_missing_or_corrupt_results(capsys, tmp_path):
    status, _, err = run_cli(capsys, "report", str(tmp_path / "results.json"))
    assert status == 2 and "not found" in err
    corrupt = tmp_path / "results.json"
    corrupt.write_text('{"experiment": "x", "T": ')
    status, _, err = run_cli(capsys, "report", str(corrupt))
    assert status == 2 and "not valid JSON" in err


def test_training_options_are_validated():
    from spikecut.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="'train.select' is 'best' but there is no validation"):
        parse_config({"train": {"select": "best"}})
    with pytest.raises(
        ConfigError, match="'train.precision' is 'fp8'; expected one of: fp32, bf16"
    ):
        parse_config({"train": {"precision": "fp8"}})
    with pytest.raises(ConfigError, match="validation_fraction' must be in"):
        parse_config({"train": {"validation_fraction": 1.0}})
    with pytest.raises(ConfigError, match="'train.workers' must be >= 0"):
        parse_config({"train": {"workers": -1}})
    cfg = parse_config(
        {"train": {"select": "best", "validation_fraction": 0.1, "precision": "bf16"}}
    )
    assert cfg.train.select == "best" and cfg.train.precision == "bf16"
