"""Operation counts: spikes, SOPs with exact fan-out, analogue and ANN MACs, energy."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spikecut.neurons import IF, SpikingNetwork
from spikecut.ops import (
    E_AC_PJ,
    E_MAC_PJ,
    OpCounter,
    OpCounts,
    ann_macs,
    energy_ratio,
    layer_macs,
    until_exit,
)


def repeat(x, steps):
    return x.unsqueeze(0).expand(steps, *x.shape)


def two_layer_net() -> SpikingNetwork:
    """Linear(3→4) → IF(θ=1, soft reset, v0=0) → Linear(4→2), with input currents
    [1.5, 0.6, 0, 2.5] for the input [1, 1, 1]."""
    first = nn.Linear(3, 4, bias=False)
    second = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        first.weight.copy_(
            torch.tensor(
                [[1.5, 0.0, 0.0], [0.0, 0.6, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.5]],
                dtype=torch.float64,
            )
        )
        second.weight.fill_(1.0)
    return SpikingNetwork(nn.Sequential(first, IF(threshold=1.0), second)).double().eval()


def test_two_layer_net_counts_known_spikes_sops_and_macs():
    # Hand simulation, soft reset, spike iff u > 1:
    #   neuron 0 (I=1.5): u = 1.5, 2.0, 2.5 -> spikes at t = 1, 2, 3
    #   neuron 1 (I=0.6): u = 0.6, 1.2, 0.8 -> spike at t = 2
    #   neuron 2 (I=0):   never;  neuron 3 (I=2.5): spikes at every step
    # The second sample (input 0) never spikes.
    net = two_layer_net()
    x = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    with torch.inference_mode(), OpCounter(net) as counter:
        net(repeat(x, 3))
    counts = counter.pop()
    assert counts.steps == 3 and counts.samples == 2
    assert counts.spikes["body.1"].tolist() == [[2, 0], [3, 0], [2, 0]]
    assert counts.neurons == {"body.1": 4}
    # every spike reaches both outputs of the second layer
    assert list(counts.sops) == ["body.2"]
    assert counts.sops["body.2"].tolist() == [[4, 0], [6, 0], [4, 0]]
    # the first layer reads the analogue input: dense 3·4 MACs per sample and step
    assert list(counts.analogue_macs) == ["body.0"]
    assert counts.analogue_macs["body.0"].tolist() == [[12, 12]] * 3
    assert counts.dense_macs == {"body.0": 12, "body.2": 8}
    assert counts.ann_macs == 20
    rates = counts.firing_rates()["body.1"]
    assert rates == pytest.approx([2 / 8, 3 / 8, 2 / 8])


def test_summary_up_to_exit_and_energy_ratio():
    net = two_layer_net()
    x = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    with torch.inference_mode(), OpCounter(net) as counter:
        net(repeat(x, 3))
    counts = counter.pop()
    summary = counts.summary(torch.tensor([2, 3]))
    # sample 0 stops after step 2: 4 + 6 SOPs and 2·12 MACs; sample 1: 0 SOPs, 3·12 MACs
    assert summary["mean_sops"] == pytest.approx(5.0)
    assert summary["mean_analogue_macs"] == pytest.approx(30.0)
    assert summary["mean_spikes"] == pytest.approx(2.5)
    assert summary["ann_macs"] == 20
    expected = (E_MAC_PJ * 20) / (E_AC_PJ * 5.0 + E_MAC_PJ * 30.0)
    assert summary["energy_ratio"] == pytest.approx(expected)
    full = counts.summary()
    assert full["mean_sops"] == pytest.approx(7.0)


def test_until_exit_sums_each_column_up_to_its_exit_step():
    per_step = torch.tensor([[1, 10, 100], [2, 20, 200], [3, 30, 300]])
    assert until_exit(per_step, torch.tensor([1, 3, 2])).tolist() == [1, 60, 300]
    assert until_exit(per_step).tolist() == [6, 60, 600]
    with pytest.raises(ValueError, match="values in 1..3"):
        until_exit(per_step, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        until_exit(per_step, torch.tensor([1, 1]))


def test_energy_ratio_is_ann_over_snn_energy():
    assert energy_ratio(1000.0, 0.0, 1000.0) == pytest.approx(4.6 / 0.9)
    assert energy_ratio(0.0, 10.0, 10.0) == pytest.approx(1.0)
    assert energy_ratio(0.0, 0.0, 10.0) == math.inf


def test_conv_sops_use_the_exact_fan_out_of_each_input_position():
    # 1x1 conv (weight 2) -> IF -> 3x3 conv with padding 1 and 2 output channels, on 3x3.
    # Input 1.5 at the corner (0, 0) and the centre (1, 1): both neurons spike every step.
    # A corner input is read by 2x2 output positions, the centre by 3x3: SOPs per step =
    # 2 channels x (4 + 9) = 26.
    first = nn.Conv2d(1, 1, 1, bias=False)
    second = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        first.weight.fill_(2.0)
    net = SpikingNetwork(nn.Sequential(first, IF(threshold=1.0), second)).eval()
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = 1.5
    with torch.inference_mode(), OpCounter(net) as counter:
        net(repeat(x, 2))
    counts = counter.pop()
    assert counts.spikes["body.1"].tolist() == [[2], [2]]
    assert counts.sops["body.2"].tolist() == [[26], [26]]
    assert counts.analogue_macs["body.0"].tolist() == [[9], [9]]
    # dense: the 3x3 fan-out map sums to 4·4 + 4·6 + 9 = 49 per channel pair
    assert counts.dense_macs == {"body.0": 9, "body.2": 98}


def _brute_force_fanout(conv: nn.Conv2d, h: int, w: int) -> torch.Tensor:
    """Count, for every input position, the (output position, kernel offset) pairs that read
    it, by unfolding a map of position indices (0 marks padding)."""
    index = torch.arange(1, h * w + 1, dtype=torch.float64).reshape(1, 1, h, w)
    cols = F.unfold(index, conv.kernel_size, conv.dilation, conv.padding, conv.stride).flatten()
    counts = torch.bincount(cols.long(), minlength=h * w + 1)[1:]
    return counts.reshape(h, w)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation", "groups"),
    [(3, 2, 1, 1, 1), (3, 1, 2, 2, 1), (2, 2, 0, 1, 2), ((3, 1), (1, 2), (1, 0), 1, 4)],
)
def test_conv_fan_out_matches_a_brute_force_count(kernel, stride, padding, dilation, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, kernel, stride, padding, dilation, groups=groups, bias=False)
    net = SpikingNetwork(nn.Sequential(IF(threshold=0.5), conv)).eval()
    x = (torch.rand(3, 4, 7, 6) > 0.6).float()  # spikes of amplitude 1 where x = 1
    with torch.inference_mode(), OpCounter(net) as counter:
        net(repeat(x, 1))
    counts = counter.pop()
    fanout = _brute_force_fanout(conv, 7, 6) * (8 // groups)
    expected = (x * fanout).flatten(1).sum(1).long()
    assert counts.sops["body.1"][0].tolist() == expected.tolist()
    assert counts.dense_macs["body.1"] == int(fanout.sum()) * 4


def test_counter_joins_batches_along_samples_and_matches_one_big_batch():
    net = two_layer_net()
    x = torch.rand(6, 3, dtype=torch.float64) * 2
    with torch.inference_mode(), OpCounter(net) as counter:
        for part in (x[:4], x[4:]):
            net.reset()
            net(repeat(part, 3))
        joined = counter.pop()
        net.reset()
        net(repeat(x, 3))
        whole = counter.pop()
    assert joined.samples == whole.samples == 6
    for name in whole.spikes:
        assert torch.equal(joined.spikes[name], whole.spikes[name])
    assert torch.equal(joined.total_sops(), whole.total_sops())
    with pytest.raises(ValueError, match="same T"):
        OpCounts.cat([joined, OpCounts(steps=2)])
    with pytest.raises(RuntimeError, match="no forward call"):
        counter.pop()


def test_hooks_are_removed_after_the_block():
    net = two_layer_net()
    with OpCounter(net):
        pass
    assert not net._forward_pre_hooks
    assert all(not m._forward_hooks for m in net.modules())


def test_ann_macs_by_hooks_equal_the_snns_dense_macs():
    ann = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
    )
    per_layer = layer_macs(ann, torch.randn(7, 2, 6, 6))
    # conv: 4 out x 2 in x (sum of the 6x6 fan-out map = (6·3 - 2)^2 = 256); linear: 36·5
    assert per_layer == {"0": 4 * 2 * 256, "4": 36 * 5}
    assert ann_macs(ann, torch.randn(1, 2, 6, 6)) == 2048 + 180


def test_evaluate_cutoff_adds_operations_that_report_validates_and_renders():
    from spikecut.cutoff import TopKCutoff
    from spikecut.evaluate import collect_cum_logits, evaluate_cutoff
    from spikecut.report import render_markdown, validate_results

    torch.manual_seed(0)
    net = two_layer_net()
    with torch.no_grad():
        net.body[2].weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 2.0], [-1.0, 1.5, 0.0, -2.0]]))
    x = torch.rand(40, 3, dtype=torch.float64) * 2
    data = torch.utils.data.TensorDataset(x, torch.zeros(40, dtype=torch.long))
    with OpCounter(net) as counter:
        cum, _ = collect_cum_logits(net, data, 4, batch_size=16, progress=False)
    counts = counter.pop()
    y = cum[-1].argmax(-1)  # labels: the SNN's own answers, so early exits are safe
    fields = evaluate_cutoff(cum, y, cum, y, rules=["topk"], epsilons=[0.0, 0.2], ops=counts)
    assert fields["ann_macs"] == 20
    assert fields["firing_rates"]["body.1"] == pytest.approx(counts.firing_rates()["body.1"])
    fixed, top0, top5 = fields["rules"]
    assert fixed["mean_sops"] == pytest.approx(float(counts.total_sops().sum(0).double().mean()))
    exits = TopKCutoff(epsilon=0.0).calibrate(cum, y).exit_steps(cum)
    assert top0["mean_sops"] == pytest.approx(
        float(until_exit(counts.total_sops(), exits).double().mean())
    )
    # exiting early costs fewer operations, so less energy
    assert top0["mean_exit"] < fixed["mean_exit"] and top5["mean_exit"] <= top0["mean_exit"]
    assert top5["mean_sops"] <= top0["mean_sops"] < fixed["mean_sops"]
    assert top0["energy_ratio"] > fixed["energy_ratio"] > 0

    run = {"name": "r", "alpha": 0.0, "ann_accuracy": 0.5, **fields}
    results = {"experiment": "ops", "T": 4, "runs": [run]}
    validate_results(results)
    text = render_markdown(results)
    assert "## Operations" in text and "E_ANN / E_SNN" in text
    assert f"{fixed['mean_sops']:,.0f}" in text and "## Firing rates" in text
    run["rules"][1]["mean_sops"] = -1.0
    with pytest.raises(ValueError, match=r"runs\[0\]\.rules\[1\]\.mean_sops"):
        validate_results(results)
    run["rules"][1]["mean_sops"] = 1.0
    run["firing_rates"]["body.1"] = [0.1, 0.2]
    with pytest.raises(ValueError, match=r"firing_rates\.body\.1: expected a list of length T=4"):
        validate_results(results)
    with pytest.raises(ValueError, match="counted 4 steps x 40 samples"):
        evaluate_cutoff(cum[:3], y, cum[:3], y, rules=["topk"], ops=counts)


@pytest.mark.parametrize("chunk", [1, 2, 3, "auto"])
def test_counts_of_a_chunked_call_equal_the_whole_sequence(chunk, monkeypatch):
    import spikecut.memory as memory

    monkeypatch.setattr(memory, "AUTO_CHUNK_BYTES", 2 * 4 * 6 * 6 * 5 * 4)  # chunks of 2 steps
    monkeypatch.setattr("spikecut.speed._kept", False)  # the budget without kept blocks
    torch.manual_seed(3)
    body = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), IF(threshold=0.5), nn.Conv2d(4, 3, 3), IF(), nn.Flatten()
    )
    net = SpikingNetwork(body).eval()
    x = repeat(torch.rand(5, 1, 6, 6) * 2, 7)
    with torch.inference_mode(), OpCounter(net) as counter:
        whole_out = net(x)
        whole = counter.pop()
        net.reset()
        net.time_chunk = chunk
        chunked_out = net(x)
        chunked = counter.pop()
    assert torch.equal(chunked_out, whole_out)
    assert chunked.steps == 7 and chunked.dense_macs == whole.dense_macs
    for table in ("spikes", "sops", "analogue_macs"):
        mine, theirs = getattr(chunked, table), getattr(whole, table)
        assert mine.keys() == theirs.keys() and mine
        for name in theirs:
            assert torch.equal(mine[name], theirs[name]), (table, name)
