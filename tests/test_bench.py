"""The benchmark machinery on tiny sizes: schema, missing peers, agreement, memory, ratios."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikecut import cli
from spikecut.bench import runner, simulation
from spikecut.bench.simulation import (
    SimulationConfig,
    build_ann,
    build_simulator,
    check_agreement,
    speed_ratios,
)

TINY = dict(nets=("conv28",), batch=2, T=2, scale=0.125, warmup=0, repeats=1, threads=1)


def hide_modules(monkeypatch, *hidden):
    """Make ``importlib.import_module`` fail for ``hidden`` packages (and their submodules)."""
    real = importlib.import_module

    def fake(name, package=None):
        if any(name == h or name.startswith(h + ".") for h in hidden):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)


def check_schema(results):
    assert set(results) >= {"simulation", "anytime", "config", "machine", "notes"}
    for row in results["simulation"]:
        assert set(row) == {"net", "library", "mode", "samples_steps_per_s", "peak_mem_mb"}
        assert row["mode"] in ("inference", "training")
        assert isinstance(row["samples_steps_per_s"], float) and row["samples_steps_per_s"] > 0
        assert row["peak_mem_mb"] is None or row["peak_mem_mb"] >= 0
    for row in results["anytime"]:
        assert set(row) >= {"experiment", "rule", "epsilon", "steps_speedup", "wall_speedup"}


def test_runner_writes_json_and_markdown_with_peers_missing(tmp_path, monkeypatch):
    hide_modules(monkeypatch, "spikingjelly", "snntorch", "spikecut.bench.anytime")
    out = tmp_path / "results" / "latest.json"
    results = runner.run_bench(out, config=SimulationConfig(**TINY), log=lambda _: None)

    on_disk = json.loads(out.read_text())
    assert on_disk == results
    check_schema(on_disk)
    libraries = {(r["library"], r["mode"]) for r in on_disk["simulation"]}
    assert libraries == {
        (lib, mode)
        for lib in ("spikecut", "pytorch-loop", "dense-ann")
        for mode in ("inference", "training")
    } | {("spikecut-stepwise", "inference")}  # stepwise is an inference-only variant
    assert set(on_disk["missing_peers"]) == {"spikingjelly", "snntorch"}
    assert on_disk["ratios"] == []  # no peer, no ratio against the fastest peer
    assert on_disk["anytime"] == []
    assert any("anytime benchmark missing" in note for note in on_disk["notes"])

    breakdown = {(r["net"], r["mode"]): r for r in on_disk["breakdown"]}
    assert set(breakdown) == {("conv28", "inference"), ("conv28", "training")}
    for row in breakdown.values():  # the neurons take part of the time, never all of it
        assert 0.0 < row["neuron_share"] < 1.0
        assert row["rest_seconds"] == pytest.approx(row["seconds"] * (1 - row["neuron_share"]))
        assert row["rest_over_dense"] > 0

    markdown = (tmp_path / "results" / "latest.md").read_text()
    assert "Where spikecut's time goes" in markdown
    assert "| conv28 | training | spikecut |" in markdown
    assert "| — | — | spikingjelly | MISSING |" in markdown
    assert "anytime benchmark missing" in markdown
    assert not list(out.parent.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_runner_calls_the_anytime_driver_with_the_results_dirs(tmp_path, monkeypatch):
    hide_modules(monkeypatch, "spikingjelly", "snntorch")
    calls = []

    class FakeAnytime:
        @staticmethod
        def run_anytime_bench(dirs, *, device, quick, rule):
            calls.append((dirs, device, quick, rule))
            return [
                dict(
                    experiment="digits",
                    run="alpha=0",
                    rule="topk",
                    epsilon=0.0,
                    steps_speedup=2.0,
                    wall_speedup=1.8,
                    batch_size=500,
                    strategy="compact",
                    step_cost_ratio=2.5,
                    oracle_ratio=0.97,
                    ratio_turns=[0.9, 0.7, 0.85],
                    faster_turns=2,
                    split=dict(network=0.6, rule=0.2, compaction=0.1, other=0.1, total=1.0),
                )
            ]

    real = importlib.import_module
    monkeypatch.setattr(
        importlib,
        "import_module",
        lambda name, package=None: (
            FakeAnytime if name == "spikecut.bench.anytime" else real(name, package)
        ),
    )
    cfg = SimulationConfig(**{**TINY, "libraries": ("spikecut",), "modes": ("inference",)})
    results = runner.run_bench(
        tmp_path / "r.json", config=cfg, results_dirs=["a", "b"], log=lambda _: None
    )
    assert calls == [(["a", "b"], "cpu", False, "topk")]
    assert results["anytime"][0]["wall_speedup"] == 1.8
    assert (
        "| digits | alpha=0 | 500 | topk | 0 | 2.00× | 1.80× | 0.90 | 0.70–0.90 | 2/3 | 2.50× "
        "| 0.97 | compact "
        "| 60% / 20% / 10% / 10% |" in (tmp_path / "r.md").read_text()
    )


def test_spikecut_computes_the_same_network_as_the_hand_written_loop():
    for net in ("conv28", "vgg32"):
        rows = {
            r["library"]: r
            for r in check_agreement(net, ("spikecut", "pytorch-loop"), batch=2, T=4, scale=0.125)
        }
        assert rows["pytorch-loop"]["max_abs_diff"] == 0.0
        assert rows["pytorch-loop"]["grad_rel_diff"] < 1e-5
        assert rows["spikecut"]["max_abs_diff"] == 0.0


def test_simulators_spike_and_share_weights():
    ann = build_ann("conv28", scale=0.125)
    x = torch.rand(3, 2, 1, 28, 28) * 2
    ours = build_simulator("spikecut", ann).eval()
    loop = build_simulator("pytorch-loop", ann).eval()
    first_conv = ours.net.body[0].weight
    assert torch.equal(first_conv, loop.layers[0].weight)
    assert first_conv.data_ptr() != ann[0].weight.data_ptr()  # copies, not the ANN's own
    with torch.no_grad():
        hidden = ours.net.body[:3](x.reshape(6, 1, 28, 28))
    assert 0 < hidden.count_nonzero() < hidden.numel()  # the first LIF layer really spikes
    with torch.no_grad():
        assert torch.equal(ours(x), ours(x))  # each call starts from a fresh state


def test_unknown_names_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown benchmark net"):
        build_ann("resnet")
    with pytest.raises(ValueError, match="unknown library"):
        build_simulator("brian2", build_ann("conv28", 0.125))
    hide_modules(monkeypatch, "snntorch")
    with pytest.raises(simulation.PeerMissing, match="pip install --no-deps"):
        build_simulator("snntorch", build_ann("conv28", 0.125))


_MEMORY_PROBE = """
import json, torch
from spikecut.bench.simulation import memory_method, peak_memory_mb

def allocate():
    block = torch.ones(40 * 2**20 // 4)  # 40 MiB
    return float(block[0])

cpu = torch.device("cpu")
print(json.dumps([peak_memory_mb(allocate, cpu), peak_memory_mb(lambda: None, cpu),
                  memory_method(cpu)]))
"""


def test_peak_memory_sees_a_large_temporary_tensor():
    # In a child process: the measurement changes glibc's settings for the whole process.
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, check=True
    )
    big, small, method = json.loads(done.stdout)
    if big is None:  # only where /proc and glibc are missing
        assert method == "unavailable on this platform"
        return
    assert 38 <= big <= 60
    assert small < 5


def test_memory_is_measured_in_a_child_process_for_each_library():
    cfg = SimulationConfig(**{**TINY, "libraries": ("spikecut", "pytorch-loop")})
    memory = simulation._memory_in_child(cfg)
    assert set(memory) == {
        ("conv28", mode, lib) for mode in ("inference", "training") for lib in cfg.libraries
    }
    assert all(v is None or v >= 0 for v in memory.values())


def test_the_memory_child_runs_spikecut_in_the_chunks_the_timing_resolved():
    libraries = ("spikecut", "spikecut-stepwise")  # the stepwise one resolves no chunk
    cfg = SimulationConfig(**{**TINY, "libraries": libraries, "modes": ("inference",)})
    chunked = {}
    ((net, _, ((_, call), (_, stepwise))),) = simulation._groups(
        cfg, torch.device("cpu"), {}, print, chunked=chunked
    )
    assert chunked[net].time_chunk == "auto" and chunked[net].resolved_time_chunk is None
    stepwise()
    call()  # the first call resolves "auto"
    resolved = chunked[net].resolved_time_chunk
    assert resolved >= 1 and resolved & (resolved - 1) == 0  # a power of two
    chunked = {}
    list(simulation._groups(cfg, torch.device("cpu"), {}, print, chunks={net: 3}, chunked=chunked))
    assert chunked[net].time_chunk == 3


def test_speed_ratios_against_the_fastest_peer():
    def row(library, mode, speed, mem):
        return dict(net="n", library=library, mode=mode, samples_steps_per_s=speed, peak_mem_mb=mem)

    rows = [
        row("spikecut", "training", 300.0, 50.0),
        row("spikingjelly", "training", 100.0, 80.0),
        row("snntorch", "training", 200.0, 40.0),
        row("pytorch-loop", "training", 150.0, 100.0),
    ]
    (ratio,) = speed_ratios(rows)
    assert ratio["fastest_peer"] == "snntorch"
    assert ratio["speed_ratio"] == pytest.approx(1.5)
    assert ratio["memory_ratio"] == pytest.approx(50.0 / 40.0)
    assert ratio["speed_ratio_vs_loop"] == pytest.approx(2.0)
    (ratio,) = speed_ratios([*rows, row("dense-ann", "training", 400.0, 30.0)])
    assert ratio["dense_ratio"] == pytest.approx(0.75) and ratio["fastest_peer"] == "snntorch"


def test_cli_bench_passes_its_options(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(runner, "run_bench", lambda out, **kw: seen.update(out=out, **kw))
    out = tmp_path / "x.json"
    status = cli.main(["bench", "--quick", "--out", str(out), "--results", "a", "b"])
    assert status == 0
    expected = dict(out=out, quick=True, device="cpu", results_dirs=["a", "b"], threads=None)
    assert seen == {**expected, "rule": "topk", "memory": False}
    assert cli.main(["bench", "--out", str(out), "--results", "a", "--rule", "topk-risk"]) == 0
    assert seen["rule"] == "topk-risk"


def test_cli_bench_defaults_to_the_finished_default_experiments(monkeypatch, tmp_path, capsys):
    seen = {}
    monkeypatch.setattr(runner, "run_bench", lambda out, **kw: seen.update(out=out, **kw))
    monkeypatch.chdir(tmp_path)
    finished = tmp_path / "results" / "mnist5k-tet"
    finished.mkdir(parents=True)
    (finished / "results.json").write_text("{}")
    assert cli.main(["bench", "--quick"]) == 0
    assert seen["results_dirs"] == ["results/mnist5k-tet"]
    said = capsys.readouterr().out
    assert (
        "no finished run in results/default, results/mnist5k-dvs-tet, "
        "results/mnist5k-enter-tet, results/mnist5k-resnet20-qcfs" in said
    )


def test_cli_bench_refuses_bad_options(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "--device", "cuda"]) == cli.EXIT_USAGE
    assert "CUDA is not available" in capsys.readouterr().err
    assert cli.main(["bench", "--threads", "0"]) == cli.EXIT_USAGE
    assert "--threads" in capsys.readouterr().err
    assert cli.main(["bench", "--rule", "softmax"]) == cli.EXIT_USAGE
    assert "--rule 'softmax': expected topk or one of topk-risk" in capsys.readouterr().err


def test_training_throughput_of_a_config_and_item_shapes():
    from spikecut.bench.training import item_shape, throughput_table, training_throughput
    from spikecut.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    row = training_throughput(
        load_config(root / "digits-qcfs.yaml"), device="cpu", iterations=2, warmup=1, batch_size=8
    )
    assert row["samples_per_second"] > 0 and row["batch_size"] == 8
    assert row["peak_memory_mb"] is None  # CPU
    assert "| digits-qcfs | digits-cnn | conversion |" in throughput_table([row])
    dvs = load_config(root / "cifar10dvs-vggsnn-tet.yaml")
    assert item_shape(dvs) == (10, (10, 2, 48, 48), True)  # frames
    assert item_shape(load_config(root / "tinyimagenet-resnet18-qcfs.yaml"))[1] == (3, 64, 64)


def test_simulation_config_takes_T_and_still_reads_the_old_steps():
    assert SimulationConfig(T=3).T == 3
    with pytest.warns(DeprecationWarning, match="steps"):
        old = SimulationConfig(steps=5)
    assert old.T == 5 and "steps" not in old.to_dict()
    with pytest.warns(DeprecationWarning, match="steps"):
        assert old.steps == 5
    assert SimulationConfig.from_dict({"steps": 4, "nets": ["vgg32"]}).T == 4  # old JSON
    assert SimulationConfig.from_dict(old.to_dict()) == old
    with pytest.warns(DeprecationWarning, match="steps"):
        rows = check_agreement("conv28", ("spikecut",), batch=1, steps=2, scale=0.125)
    assert rows[0]["max_abs_diff"] == 0.0


def test_old_results_with_steps_still_render():
    old = {
        "config": {
            "batch": 2,
            "steps": 3,
            "scale": 0.5,
            "device": "cpu",
            "repeats": 1,
            "warmup": 0,
        },
        "machine": {"torch_threads": 1, "torch": "x", "processor": "p", "cpus_available": 1},
        "simulation": [],
        "missing_peers": {},
        "ratios": [],
        "agreement": [],
        "memory_method": "m",
        "anytime": [],
        "notes": [],
    }
    assert "T = 3" in runner.render_markdown(old)


def test_builders_live_apart_from_the_measurement():
    from spikecut.bench import networks, peers

    assert simulation.build_ann is networks.build_ann
    assert simulation.build_simulator is peers.build_simulator
    assert simulation.PeerMissing is peers.PeerMissing


def test_neuron_share_profiles_the_neurons_and_leaves_the_model_as_it_was():
    from spikecut.bench.breakdown import neuron_share
    from spikecut.neurons import LIF, SpikingNetwork

    x = torch.rand(4, 8, 64)
    only_neurons = SpikingNetwork(torch.nn.Sequential(LIF(), LIF()))
    neuron_heavy = neuron_share(only_neurons, lambda: only_neurons(x), torch.device("cpu"))
    layers = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(40)], LIF())
    layer_heavy_net = SpikingNetwork(layers)
    layer_heavy = neuron_share(layer_heavy_net, lambda: layer_heavy_net(x), torch.device("cpu"))
    assert 0.0 < layer_heavy < neuron_heavy <= 1.0
    assert "forward" not in vars(layers[-1])  # the labelled forward was taken off again
    with pytest.raises(ValueError, match="no spikecut neurons"):
        neuron_share(torch.nn.Linear(2, 2), lambda: None, torch.device("cpu"))


def test_interleaved_timings_take_turns_and_pair_by_turn(monkeypatch):
    from spikecut.bench import timing

    now, order = [0.0], []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def call(name: str, seconds: list[float]):
        def run() -> None:  # takes the next of its durations on the fake clock
            order.append(name)
            now[0] += seconds[len([o for o in order if o == name]) - 1]

        return run

    calls = [call("a", [9.0, 1.0, 2.0, 3.0]), call("b", [9.0, 5.0, 4.0, 6.0])]
    times = timing.interleaved_seconds(calls, torch.device("cpu"), repeats=3, warmup=1)
    assert order == ["a", "b"] * 4  # one untimed warm-up turn, then three timed turns
    assert times == [[1.0, 2.0, 3.0], [5.0, 4.0, 6.0]]  # the i-th entries: one turn's pair
    order.clear()
    calls = [call("a", [7.0, 2.0]), call("b", [3.0, 8.0])]
    assert timing.best_seconds_interleaved(calls, torch.device("cpu"), 2, 0) == [2.0, 3.0]
