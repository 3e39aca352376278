"""One training run in several processes (torchrun, DistributedDataParallel): which share of the work this process
has, and the few collectives the training loops need beyond DDP's gradient averaging.

Every rank holds an equal share of each batch, so a local mean is an equal-weighted part of the global one and
DDP's averaged gradient is the gradient of the global mean. With one process every helper is the identity or
torch's (numpy's) own reduction, so world size 1 computes bit for bit what a run without this module did.
"""
from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from rlinterp.config import ConfigError


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: rank `rank` of `world` (and its GPU index on its node)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes checkpoints, curves and metrics."""
        return self.rank == 0

    def share(self, total: int, what: str) -> int:
        """This rank's equal part of `total` (a global batch or env count); a clear error if it does not divide."""
        if total % self.world:
            raise ConfigError(f"params.yaml: {what} = {total} cannot be split evenly over {self.world} processes "
                              f"(compute.nproc_per_node x nodes); expected a multiple of {self.world}")
        return total // self.world


def start(device: torch.device) -> tuple[Shard, torch.device]:
    """Join the process group torchrun describes in the environment (NCCL on GPUs, gloo on CPU) and return this
    rank's place and device: its node-local GPU, or the CPU with the node's threads shared among its ranks. One
    process, `device` unchanged, when torchrun describes no group."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Shard(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    shard = current()
    if device.type == "cuda":
        device = torch.device("cuda", shard.local_rank)
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    return shard, device


def current() -> Shard:
    if not (dist.is_available() and dist.is_initialized()):
        return Shard()
    return Shard(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def finish() -> None:
    """Leave the process group (after training: what follows runs on rank 0 alone). Every rank first waits for
    the others: a rank that tears gloo down while another's last collective is still in flight can abort it
    ("terminate called without an active exception"). DDP wrappers left in reference cycles are collected first:
    one whose reducer outlived the group aborted its process at exit (about one run in eight)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def _device() -> torch.device:
    """Where collectives take their tensors: the rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    out = values.to(_device())
    dist.all_reduce(out)
    return out.to(values.device)


class _Call(nn.Module):
    """`fn(module, *args)` as a module's forward, so DistributedDataParallel can hook it."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]):
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(self.module, *args, **kwargs)


def data_parallel(module: nn.Module, fn: Callable[..., Any], shard: Shard) -> Callable[..., Any]:
    """`fn(module, ...)` whose backward averages `module`'s gradients over the ranks (DDP); just `fn` on one.
    Parameters a loss does not reach (the GRU of an agent whose heads read its features) get no gradient."""
    if shard.world == 1:
        return functools.partial(fn, module)
    device_ids = [shard.local_rank] if next(module.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(_Call(module, fn), device_ids=device_ids,
                                               find_unused_parameters=True)


def _spread(x: torch.Tensor, shard: Shard) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Global mean, summed squared deviation from it, and count of every rank's equal-sized `x` (two all-reduces:
    the deviations are taken from the global mean, which is numerically safer than summing raw squares)."""
    mean = _all_reduce_sum(x.mean().reshape(1))[0] / shard.world
    squares = _all_reduce_sum((x - mean).pow(2).sum().reshape(1))[0]
    return mean, squares, x.numel() * shard.world


def mean_std(x: torch.Tensor, shard: Shard) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) standard deviation of every rank's equal-sized `x` together."""
    if shard.world == 1:
        return x.mean(), x.std()
    mean, squares, count = _spread(x, shard)
    return mean, (squares / (count - 1)).sqrt()


def moments(x: np.ndarray, shard: Shard) -> tuple[float, float, int]:
    """Mean, (population) variance and count of every rank's equal-sized array `x` together."""
    if shard.world == 1:
        return x.mean(), x.var(), x.size
    mean, squares, count = _spread(torch.from_numpy(np.asarray(x, dtype=np.float64)), shard)
    return float(mean), float(squares) / count, count


def mean_over_ranks(stats: dict[str, float], shard: Shard) -> dict[str, float]:
    """Per-rank statistics (means over equal shares) -> their global means."""
    if shard.world == 1 or not stats:
        return stats
    names = sorted(stats)
    total = _all_reduce_sum(torch.tensor([stats[name] for name in names], dtype=torch.float64))
    return {name: float(value) / shard.world for name, value in zip(names, total)}


class _GatherRows(torch.autograd.Function):
    """All ranks' rows, concatenated; backward sums every rank's gradient of them and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_rows(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    """Every rank's rows of `x`, in rank order, with gradients flowing back to each rank's own rows: a loss every
    rank computes on all rows (so DDP's average of the ranks' gradients is its gradient in one process)."""
    if shard.world == 1:
        return x
    return _GatherRows.apply(x)


def draw_rows(draw: Callable[..., torch.Tensor], shape: tuple[int, ...], shard: Shard, **kwargs: Any
              ) -> torch.Tensor:
    """This rank's rows of `draw((world x shape[0], ...))`: with a generator every rank holds in the same state,
    a sharded batch gets the very random numbers the whole batch would get in one process."""
    rows = shape[0]
    full = draw((rows * shard.world, *shape[1:]), **kwargs)
    return full[shard.rank * rows:(shard.rank + 1) * rows]


def gather_objects(items: list, shard: Shard) -> list:
    """Every rank's list of picklable items, concatenated in rank order (on every rank)."""
    if shard.world == 1:
        return items
    parts: list = [None] * shard.world
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def barrier(shard: Shard) -> None:
    if shard.world > 1:
        dist.barrier()
