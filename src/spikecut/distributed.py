"""Multi-process training on PyTorch's distributed engine (``torchrun``), and its pieces.

``torchrun --nproc_per_node=N -m spikecut run CONFIG`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`setup` joins them into one process group (NCCL
on GPUs, gloo on CPUs). A single process without those variables is a world of one, and
every helper here is then a no-op, so the same code path serves both.

* :class:`ShardedSampler` gives each rank its share of one seeded permutation per epoch, so N
  ranks with batch B/N see, together, exactly the batches of one process with batch B.
* :func:`gather_samples` puts per-rank evaluation outputs back in dataset order.
* :class:`CrossRankBatchNorm` pools BatchNorm statistics over all ranks (on CPU and GPU).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler

from ._modules import replace_children

__all__ = [
    "World",
    "setup",
    "teardown",
    "ShardedSampler",
    "shard_indices",
    "gather_samples",
    "all_reduce_sum",
    "broadcast_state",
    "CrossRankBatchNorm",
    "sync_batchnorm",
    "unsync_batchnorm",
    "epoch_seed",
]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes results and checkpoints; the others only compute."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The world torchrun describes in the environment (a world of one without it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ValueError(f"malformed torchrun environment: {err}") from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"malformed torchrun environment: RANK={rank}, WORLD_SIZE={size}")
    return World(rank=rank, size=size, local_rank=local)


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun set up; return the world and this rank's device.

    On CUDA each rank takes ``cuda:LOCAL_RANK`` and NCCL; on CPU the backend is gloo.
    """
    world = world_from_env()
    if not world.distributed:
        return world, device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world, device


def teardown(synchronise: bool = True) -> None:
    """Leave the process group (if one was joined).

    ``synchronise`` first waits for every rank, so that none closes its connections while
    another still uses them (gloo aborts the process then). Skip it after an error: the other
    ranks may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if synchronise and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch on one rank: a run's randomness at epoch e depends on (seed, e)
    only, so a resumed run repeats exactly what an uninterrupted one would have done."""
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101) % (2**63 - 1)


class ShardedSampler(Sampler[int]):
    """Seeded per-epoch permutation, cut into global batches and dealt out to the ranks.

    Global batch ``k`` is ``perm[k·B : (k+1)·B]``; rank ``r`` of ``W`` takes every W-th
    element of it starting at ``r`` (its local batch of B/W). Only whole global batches are
    used (drop-last), so every rank runs the same number of steps. With ``W = 1`` this is a
    plain seeded shuffle.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        world: World | None = None,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        world = world or World()
        if global_batch % world.size:
            raise ValueError(
                f"the global batch size {global_batch} must be divisible by the number of "
                f"processes {world.size}"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.world = world
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def batches(self) -> int:
        """Steps per epoch (global batches)."""
        return self.num_samples // self.global_batch

    def __len__(self) -> int:
        return self.batches * self.global_batch // self.world.size

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        used = order[: self.batches * self.global_batch]
        return iter(used[self.world.rank :: self.world.size].tolist())


def shard_indices(n: int, world: World) -> range:
    """The samples one rank evaluates: every W-th, starting at its rank."""
    return range(world.rank, n, world.size)


def gather_samples(local: Tensor, total: int, world: World, dim: int = 0) -> Tensor:
    """Concatenate per-rank results of :func:`shard_indices` shards back into sample order.

    ``local`` holds this rank's samples along ``dim``; the result holds all ``total``
    samples in dataset order, on every rank.
    """
    if not world.distributed:
        return local
    home = local.device
    if dist.get_backend() == "nccl":  # NCCL moves CUDA tensors only
        local = local.to(torch.device("cuda", torch.cuda.current_device()))
    moved = local.movedim(dim, 0)
    width = -(-total // world.size)
    padded = moved.new_zeros((width, *moved.shape[1:]))
    padded[: moved.shape[0]] = moved
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded.contiguous())
    # parts[r][i] is sample i·W + r: interleave, then drop the padding at the end.
    merged = torch.stack(parts, dim=1).flatten(0, 1)[:total]
    return merged.movedim(0, dim).to(home)


def all_reduce_sum(values: Tensor) -> Tensor:
    """Sum a tensor over all ranks (returned; the input is left alone)."""
    if not _active():
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out


def broadcast_state(model: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (e.g. before evaluating)."""
    if not _active():
        return
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every rank's loss
    depends on every rank's contribution to the sum."""

    @staticmethod
    def forward(ctx, values: Tensor) -> Tensor:
        out = values.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CrossRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics pool over the batches of all ranks.

    Works for any input ``[N, C, ...]`` on CPU (gloo) and GPU (NCCL): one autograd-aware
    all-reduce of the per-channel sums per call. With one process it is plain BatchNorm.
    ``plain_type`` is the BatchNorm class it replaced (see :func:`unsync_batchnorm`).
    """

    plain_type: type = nn.BatchNorm2d

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected input [N, C, ...], got shape {tuple(input.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and _active()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device).expand(
            x.shape[1]
        )
        stats = torch.cat([x.float().sum(dims), (x.float() ** 2).sum(dims), count])
        total = _SumOverRanks.apply(stats)
        channels = x.shape[1]
        sums, squares, n = total[:channels], total[channels : 2 * channels], total[2 * channels :]
        mean = sums / n
        var = (squares / n - mean**2).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum
                if momentum is None:  # cumulative average, as BatchNorm does
                    momentum = 1.0 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape).to(x.dtype)) * torch.rsqrt(var + self.eps).view(shape).to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm (1d/2d/3d, also inside TEBN) by :class:`CrossRankBatchNorm`
    in place, keeping parameters, running statistics and state-dict keys; returns ``model``.
    :func:`unsync_batchnorm` puts the original classes back after training."""
    return _swap_batchnorm(model, to_cross_rank=True)


def unsync_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`sync_batchnorm` in place (conversion and BN folding expect plain BN)."""
    return _swap_batchnorm(model, to_cross_rank=False)


def _swap_batchnorm(model: nn.Module, to_cross_rank: bool) -> nn.Module:
    def swap(child: nn.Module) -> nn.Module | None:
        if not isinstance(child, nn.modules.batchnorm._BatchNorm):
            return None
        crossed = isinstance(child, CrossRankBatchNorm)
        if to_cross_rank and not crossed:
            return _copy_batchnorm(child, CrossRankBatchNorm, type(child))
        if crossed and not to_cross_rank:
            return _copy_batchnorm(child, child.plain_type, None)
        return None

    replace_children(model, swap)
    return model


def _copy_batchnorm(bn: nn.Module, cls: type, plain_type: type | None) -> nn.Module:
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if plain_type is not None:
        new.plain_type = plain_type
    reference = next(iter(bn.state_dict().values()), None)
    if reference is not None:
        new = new.to(reference.device)
    new.load_state_dict(bn.state_dict())
    return new.train(bn.training)
