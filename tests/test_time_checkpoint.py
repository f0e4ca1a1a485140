"""Time-chunk checkpointing in training: same loss, gradients and state as plain BPTT."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikecut.convert import to_trainable_snn
from spikecut.layers import TEBN
from spikecut.losses import snn_loss
from spikecut.neurons import LIF, SpikingNetwork, reset, temporal_modules
from spikecut.regularizers import RCSRegularizer
from spikecut.time_checkpoint import time_checkpointing, time_pooling_norms

T = 7


def _snn(seed: int = 0, tebn: bool = True, reset_mode: str = "hard") -> SpikingNetwork:
    """A small direct-trained net: conv, (TE)BN, LIF, pool, linear, LIF, linear (float64)."""
    torch.manual_seed(seed)
    ann = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )
    neuron = LIF(threshold=0.5, leak=0.8, reset=reset_mode)
    snn = to_trainable_snn(ann, neuron=neuron, tebn=tebn, T=T).double().train()
    for m in snn.modules():  # distinct per-step scales, so a wrong p_t would show
        if isinstance(m, TEBN):
            m.scale.data = torch.linspace(0.6, 1.4, T, dtype=torch.float64)
    return snn


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, 5, 2, 8, 8, generator=g, dtype=torch.float64) * 2
    return x, torch.randint(0, 3, (5,), generator=g)


def _step(snn: nn.Module, x, y, rcs: RCSRegularizer | None = None):
    """One training step: loss, every parameter's gradient, and the state it leaves."""
    reset(snn)
    snn.zero_grad(set_to_none=True)
    out = snn(x)
    loss = snn_loss("tet", out, y, tet_lambda=1e-3)
    if rcs is not None:
        loss = loss + 0.5 * rcs.loss(out, y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in snn.named_parameters()}
    state = [{k: getattr(m, k) for k in m.state_names} for m in temporal_modules(snn)]
    buffers = {n: b.clone() for n, b in snn.named_buffers()}
    return loss.detach(), grads, state, buffers


def _assert_same(a, b) -> None:
    loss_a, grads_a, state_a, buffers_a = a
    loss_b, grads_b, state_b, buffers_b = b
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=1e-12)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-9, atol=1e-12, msg=name)
    for sa, sb in zip(state_a, state_b, strict=True):
        assert sa.keys() == sb.keys()
        for k in sa:
            if isinstance(sa[k], torch.Tensor):
                torch.testing.assert_close(sa[k], sb[k], rtol=1e-12, atol=1e-12)
            else:
                assert sa[k] == sb[k], k
    for name in buffers_a:
        torch.testing.assert_close(buffers_a[name], buffers_b[name], rtol=0, atol=0, msg=name)


def _frozen_bn(snn: nn.Module) -> nn.Module:
    """BatchNorm on running statistics (fine-tuning): no statistics pooled over time."""
    for m in snn.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return snn


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("reset_mode", ["hard", "soft"])
def test_gradients_and_state_equal_plain_bptt(steps, reset_mode):
    """LIF + TEBN (per-step scales, step counter) with chunks that do and do not divide T."""
    x, y = _inputs()
    plain = _step(_frozen_bn(_snn(reset_mode=reset_mode)), x, y)
    snn = _frozen_bn(_snn(reset_mode=reset_mode))
    snn.time_checkpoint = steps
    _assert_same(plain, _step(snn, x, y))
    assert snn.body[0].weight.grad.abs().sum() > 0  # gradients reached the first layer


def test_rcs_recording_equals_plain_bptt():
    """The RCS regulariser (recorded membranes and spikes, differentiated) sees every step
    once: loss and gradients as without checkpointing."""
    x, y = _inputs()
    plain_net = _frozen_bn(_snn())
    with RCSRegularizer(plain_net) as rcs:
        plain = _step(plain_net, x, y, rcs)
    snn = _frozen_bn(_snn())
    with time_checkpointing(snn, 3), RCSRegularizer(snn) as rcs:
        for _ in range(2):  # a recomputation must leave nothing for the next step's loss
            checkpointed = _step(snn, x, y, rcs)
            assert all(len(n.membrane_record) == 0 for n in snn.neurons)  # consumed by loss
            _assert_same(plain, checkpointed)
    assert snn.time_checkpoint is None  # restored on exit


def test_chunk_norms_equal_bptt_through_the_chunked_forward():
    """With checkpoint_norms='chunk', BatchNorm pools over each chunk: gradients equal plain
    BPTT through the same chunks run one after the other, and its running statistics are
    updated once per chunk (not again when a chunk is recomputed)."""
    x, y = _inputs()
    reference = _snn()

    class Chunked(nn.Module):  # the chunked forward without checkpointing
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.cat([self.net(x[i : i + 3]) for i in range(0, T, 3)])

    plain = _step(Chunked(reference), x, y)
    snn = _snn()
    snn.time_checkpoint, snn.checkpoint_norms = 3, "chunk"
    checkpointed = _step(snn, x, y)
    loss, grads, state, buffers = plain
    plain = (
        loss,
        {k.removeprefix("net."): v for k, v in grads.items()},
        state,
        {k.removeprefix("net."): v for k, v in buffers.items()},
    )
    _assert_same(plain, checkpointed)
    # and that is not plain whole-sequence BPTT: the statistics differ
    whole = _step(_snn(), x, y)
    assert not torch.allclose(whole[0], checkpointed[0])


def test_pooled_batchnorm_is_refused_by_default():
    x, y = _inputs()
    snn = _snn(tebn=False)
    assert time_pooling_norms(snn.body) == ["1"]
    snn.time_checkpoint = 3
    with pytest.raises(ValueError, match=r"BatchNorm layer\(s\) '1' pool training statistics"):
        _step(snn, x, y)
    snn.time_checkpoint = T  # one chunk: nothing changes, nothing refused
    _step(snn, x, y)
    snn.eval()  # eval mode: the checkpoint is a training option, inference is untouched
    assert time_pooling_norms(snn.body) == []


def test_inference_and_no_grad_ignore_the_option():
    x, _ = _inputs()
    snn = _snn(tebn=False)
    snn.time_checkpoint = 2  # with pooled BatchNorm: would be refused if it ran
    with torch.no_grad():
        reset(snn)
        snn(x)
    snn.eval()
    reset(snn)
    snn(x)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "2"])
def test_bad_values_are_refused(bad):
    snn = _snn()
    with pytest.raises(ValueError, match="time_checkpoint must be None or an int >= 1"):
        snn.time_checkpoint = bad
    with pytest.raises(ValueError, match="checkpoint_norms must be 'exact' or 'chunk'"):
        snn.checkpoint_norms = "pooled"
    with (
        pytest.raises(TypeError, match="needs a spikecut SpikingNetwork"),
        time_checkpointing(nn.Linear(2, 2), 2),
    ):
        pass


def _tiny_dataset(n: int = 16):
    g = torch.Generator().manual_seed(3)
    return torch.utils.data.TensorDataset(
        torch.rand(n, 2, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    )


def _weights_after_training(config, bn: bool) -> dict:
    from spikecut.train import train_snn

    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 4, 3, padding=1)] + ([nn.BatchNorm2d(4)] if bn else [])
    ann = nn.Sequential(*layers, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    snn = to_trainable_snn(ann, neuron=LIF(threshold=0.5))
    train_snn(snn, _tiny_dataset(), config, T=4, alpha=0.1, progress=False)
    assert snn.time_checkpoint is None  # the option is scoped to training
    return {k: v.clone() for k, v in snn.state_dict().items()}


def test_train_snn_with_time_checkpoint_trains_as_plain_bptt():
    """The training loop (RCS recorded, α > 0) reaches the same weights."""
    from spikecut.train import TrainConfig

    base = dict(epochs=1, batch_size=8, lr=0.1)
    plain = _weights_after_training(TrainConfig(**base), bn=False)
    checkpointed = _weights_after_training(TrainConfig(**base, time_checkpoint=3), bn=False)
    for name, value in plain.items():
        torch.testing.assert_close(checkpointed[name], value, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="pool training statistics over all T=4 steps"):
        _weights_after_training(TrainConfig(**base, time_checkpoint=3), bn=True)
    _weights_after_training(
        TrainConfig(**base, time_checkpoint=3, time_checkpoint_norms="chunk"), bn=True
    )


def test_checkpointed_training_at_alpha_zero_keeps_no_rcs_record(monkeypatch):
    """RCS-SNN needs every step's membranes: at α = 0 (a diagnostic only) checkpointed
    training records none, so its memory stays bounded; at α > 0 it records them."""
    from spikecut.train import TrainConfig, train_snn

    recorded = []
    original = LIF._run_autograd  # the per-step path taken while membranes are recorded

    def spy(self, seq, v):
        recorded.append(seq.shape[0])
        return original(self, seq, v)

    monkeypatch.setattr(LIF, "_run_autograd", spy)

    def train(alpha: float, **options):
        torch.manual_seed(0)
        ann = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
        )
        snn = to_trainable_snn(ann, neuron=LIF(threshold=0.5))
        config = TrainConfig(epochs=1, batch_size=8, lr=0.1, **options)
        return train_snn(snn, _tiny_dataset(), config, T=4, alpha=alpha, progress=False)

    result = train(0.0, time_checkpoint=2)
    assert recorded == [] and result.history[0].rcs is None
    assert result.summary()["final_rcs"] is None
    plain = train(0.0)
    assert recorded and plain.history[0].rcs > 0  # without checkpointing: recorded as before
    recorded.clear()
    assert train(0.1, time_checkpoint=2).history[0].rcs > 0 and recorded


def test_config_keys_are_validated_and_exact_checkpointing_keeps_the_fingerprint():
    from spikecut.config import ConfigError, parse_config
    from spikecut.experiment import run_fingerprint

    direct = {"method": "direct", "model": {"name": "mnist-cnn"}}
    with pytest.raises(ConfigError, match="'train.time_checkpoint' must be >= 1 or null, got 0"):
        parse_config({**direct, "train": {"time_checkpoint": 0}})
    with pytest.raises(ConfigError, match="applies to 'method: direct'"):
        parse_config({"train": {"time_checkpoint": 4}})
    with pytest.raises(ConfigError, match="'train.time_checkpoint_norms' is 'fold'; expected"):
        parse_config({**direct, "train": {"time_checkpoint_norms": "fold"}})

    def fingerprint(**train):
        cfg = parse_config({**direct, "train": train})
        return run_fingerprint(cfg, cfg.runs[0], 0)

    # exact checkpointing changes memory, not results: a run can resume with or without it
    assert fingerprint() == fingerprint(time_checkpoint=4)
    assert fingerprint() != fingerprint(time_checkpoint=4, time_checkpoint_norms="chunk")
