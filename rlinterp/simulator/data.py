"""Streaming training windows from a RolloutStore, without loading it into memory.

Each worker reads one random contiguous block of steps (a few compressed chunks, decompressed once), cuts every
valid window that starts in it, and yields them shuffled in batches; then it reads the next block. So every
chunk read serves many windows, and no file is re-read per window (the original re-read whole episodes per item).

A window of c + K - 1 steps is valid where its c context steps lie inside one episode (the simulated part is
cut at the episode's end and masked). Episodes are split once into training and held-out sets.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rlinterp.store import RolloutStore

WINDOW_FIELDS = ["obs", "hx", "action", "reward", "done"]


def split_episodes(num_episodes: int, heldout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) episode indices: a seeded random split with at least one episode in each."""
    if num_episodes < 2:
        raise ValueError(f"the store has {num_episodes} episode(s); expected at least 2 to hold one out")
    order = np.random.default_rng(seed).permutation(num_episodes)
    heldout = min(max(1, round(heldout_fraction * num_episodes)), num_episodes - 1)
    return np.sort(order[heldout:]), np.sort(order[:heldout])


def valid_starts(store: RolloutStore, episodes: np.ndarray, context: int) -> np.ndarray:
    """Global steps where a window may start: its first `context` steps lie inside one of `episodes`."""
    starts = [np.arange(store.episode_starts[e], store.episode_ends[e] - context + 1) for e in episodes]
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


def read_windows(store: RolloutStore, starts: np.ndarray, length: int, block: dict[str, np.ndarray],
                 block_start: int) -> dict[str, np.ndarray]:
    """Windows beginning at `starts` cut out of an in-memory block of steps, zero-padded past episode ends."""
    episode_end = store.episode_ends[np.searchsorted(store.episode_ends, starts, side="right")]
    out = {}
    offsets = np.arange(length)
    index = starts[:, None] + offsets[None, :]
    mask = index < episode_end[:, None]
    local = np.where(mask, index, starts[:, None]) - block_start
    for name, values in block.items():
        x = values[local]
        x[~mask] = 0
        out[name] = x
    out["mask"] = mask
    return out


class WindowStream(IterableDataset):
    """Endless batches of random training windows (numpy dicts as torch tensors), streamed block by block."""

    def __init__(self, path: str, episodes: np.ndarray, context: int, length: int, batch_size: int, seed: int,
                 block_steps: int = 2048):
        self.path, self.episodes, self.context, self.length = path, episodes, context, length
        self.batch_size, self.seed, self.block_steps = batch_size, seed, block_steps

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, worker])
        store = RolloutStore(self.path)
        starts = valid_starts(store, self.episodes, self.context)
        if len(starts) == 0:
            raise ValueError(f"{self.path}: no episode is long enough for a {self.context}-step context")
        if len(starts) < self.batch_size:
            raise ValueError(f"{self.path}: {len(starts)} valid windows, fewer than a batch of {self.batch_size}")
        carry: dict[str, np.ndarray] | None = None        # windows left over from the previous block
        while True:
            begin = int(rng.choice(starts))
            chosen = starts[(starts >= begin) & (starts < begin + self.block_steps)]
            end = min(int(chosen[-1]) + self.length, store.num_steps)
            block = {name: np.asarray(store[name][begin:end]) for name in WINDOW_FIELDS}
            windows = read_windows(store, rng.permutation(chosen), self.length, block, begin)
            if carry is not None:
                windows = {name: np.concatenate([carry[name], x]) for name, x in windows.items()}
            full = len(windows["mask"]) // self.batch_size * self.batch_size
            for i in range(0, full, self.batch_size):
                yield {name: torch.from_numpy(x[i:i + self.batch_size]) for name, x in windows.items()}
            carry = {name: x[full:] for name, x in windows.items()}


def window_loader(path: str, episodes: np.ndarray, context: int, length: int, batch_size: int, seed: int,
                  num_workers: int) -> Iterator[dict[str, torch.Tensor]]:
    """An endless iterator of training batches, read in `num_workers` background processes."""
    stream = WindowStream(path, episodes, context, length, batch_size, seed)
    return iter(DataLoader(stream, batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0))


def heldout_windows(store: RolloutStore, episodes: np.ndarray, context: int, length: int, count: int,
                    seed: int, fields: list[str] | None = None) -> dict[str, torch.Tensor]:
    """A fixed, seeded set of `count` held-out windows (or all there are), for metrics; `start` holds each
    window's first global step."""
    starts = valid_starts(store, episodes, context)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(starts, size=min(count, len(starts)), replace=False))
    batch = store.windows(chosen, length, fields or WINDOW_FIELDS)
    return {"start": torch.from_numpy(chosen), **{name: torch.from_numpy(x) for name, x in batch.items()}}


def batches_of(windows: dict[str, torch.Tensor], batch_size: int, device: str | torch.device = "cpu"
               ) -> list[dict[str, torch.Tensor]]:
    """Split a dict of window arrays into batches on `device`."""
    count = len(windows["mask"])
    return [{k: v[i:i + batch_size].to(device) for k, v in windows.items()} for i in range(0, count, batch_size)]
