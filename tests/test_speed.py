"""CPU speed settings: freed large blocks stay for reuse; channels-last conv weights."""

import json
import subprocess
import sys

import torch
from torch import nn

from spikecut.speed import channels_last_convolutions, prepare_for_training

# Allocate and free 64 MiB, then report how much of it the process still holds (VmRSS).
_PROBE = """
import json, sys, torch
from spikecut.speed import keep_large_allocations

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))

kept = keep_large_allocations() if sys.argv[1] == "keep" else False
before = rss_mb()
block = torch.ones(64 * 2**20 // 4)
del block
print(json.dumps({"kept": kept, "held_mb": rss_mb() - before}))
"""


def _probe(mode: str, env: dict | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(done.stdout)


def test_freed_large_blocks_stay_in_the_process_only_when_asked():
    default, kept = _probe("default"), _probe("keep")
    assert default["held_mb"] < 8  # glibc unmapped the 64 MiB block when it was freed
    assert kept["kept"] is True
    assert kept["held_mb"] > 56  # kept for the next allocation of that size


def test_the_setting_can_be_switched_off(monkeypatch):
    import os

    env = {**os.environ, "SPIKECUT_KEEP_ALLOCATIONS": "0"}
    off = _probe("keep", env)
    assert off["kept"] is False and off["held_mb"] < 8


def test_channels_last_weights_compute_the_same_function():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 25, 2)
    )
    x = torch.randn(4, 3, 5, 5)
    expected = model(x)
    assert channels_last_convolutions(model) is model
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    assert torch.allclose(model(x), expected, atol=1e-6)
    grey = channels_last_convolutions(nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2)))
    out = grey[0](torch.randn(2, 1, 6, 6))  # one input channel: laid out channels-last too
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    other = nn.Sequential(nn.Conv2d(3, 8, 3))
    prepare_for_training(other, "meta")  # not the CPU: nothing changes
    assert other[0].weight.is_contiguous()


def test_the_gradient_through_a_flatten_comes_back_channels_last():
    """Flattening a channels-last map copies it to NCHW; without the flatten's hook its
    gradient came back NCHW and the pooling before it converted both ways."""
    torch.manual_seed(0)

    def net():
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 9, 2)
        )

    plain, fast = net(), net()
    fast.load_state_dict(plain.state_dict())
    channels_last_convolutions(fast)
    channels_last_convolutions(fast)  # applied twice: one hook
    assert len(fast[2]._forward_pre_hooks) == 1
    x = torch.randn(4, 3, 6, 6)
    seen = []
    pooled = fast[1](fast[0](x))
    pooled.register_hook(seen.append)
    fast[3](fast[2](pooled)).square().sum().backward()
    plain(x).square().sum().backward()
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    for a, b in zip(fast.parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)
    with torch.no_grad():  # no gradient, no hook's function: the flatten's own output
        assert torch.allclose(fast(x), plain(x), atol=1e-6)
