"""Streaming training windows from a RolloutStore, without loading it into memory.

The training windows' start steps are cut into contiguous blocks of about `block_steps` steps; each epoch visits
every block once, in a new random order. A worker holds `pool_blocks` blocks in memory (raw steps, decompressed
once) and draws every batch uniformly, without replacement, from the windows still unserved in all of them; an
exhausted block is replaced by the next. So each epoch serves every training window exactly once, consecutive
batches mix `pool_blocks` distant parts of the store, and no chunk is read more than once per epoch (the
original re-read whole episodes per item).

A window of c + K - 1 steps is valid where its c context steps lie inside one episode (the simulated part is
cut at the episode's end and masked). Episodes are split once, by level, into training, validation and test sets.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rlinterp.config import TrainSimulatorConfig
from rlinterp.errors import InputError
from rlinterp.store import RolloutStore

WINDOW_FIELDS = ["obs", "hx", "value", "action", "reward", "done"]


@dataclass(frozen=True)
class Split:
    """Episode indices of three level-disjoint sets: training, validation (where designs and params are chosen)
    and test (where the reported numbers are measured, and nothing is chosen)."""
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def of(self, name: str) -> np.ndarray:
        """The episodes of set `name`: train, validation or test."""
        return getattr(self, name)


def split_episodes(store: RolloutStore, test_fraction: float, validation_fraction: float, seed: int) -> Split:
    """Split episodes by level: of the store's distinct level seeds in a seeded random order, the first
    `validation_fraction` (at least one) are validation levels, the last `test_fraction` (at least one) test
    levels, the rest training levels (at least one), each with every episode played on it. So no training window
    comes from a level either is measured on, and choosing on more or fewer validation levels never moves the test
    set. (The validation levels are those the simulator's params were chosen on before the split had three parts:
    the test levels are ones no choice has read.)"""
    levels = store.episode_info()["level_seed"]
    distinct = np.unique(levels)
    validation_count = max(1, round(validation_fraction * len(distinct)))
    test_count = max(1, round(test_fraction * len(distinct)))
    if validation_count + test_count >= len(distinct):
        raise InputError(f"{store.path}: its {store.num_episodes} episode(s) play {len(distinct)} level(s), too few "
                         f"for {validation_count} validation and {test_count} test level(s) and at least one to "
                         f"train on (record more episodes, or lower the fractions)")
    order = np.random.default_rng(seed).permutation(distinct)
    validation, test = np.isin(levels, order[:validation_count]), np.isin(levels, order[-test_count:])
    return Split(np.flatnonzero(~(validation | test)), np.flatnonzero(validation), np.flatnonzero(test))


def simulator_split(store: RolloutStore, config: TrainSimulatorConfig) -> Split:
    """The simulator's level split: drawn with `split_seed`, never with the training draw's `seed`, so every stage
    and benchmark measures another training draw on the same levels."""
    return split_episodes(store, config.test_fraction, config.validation_fraction, config.split_seed)


def describe_split(store: RolloutStore, split: Split) -> dict:
    """What metrics record of a split: episode and level counts, and the validation and test level seeds."""
    levels = store.episode_info()["level_seed"]
    return {"train_episodes": len(split.train), "train_levels": len(np.unique(levels[split.train])),
            **{f"{name}_episodes": len(split.of(name)) for name in ("validation", "test")},
            **{f"{name}_level_seeds": np.unique(levels[split.of(name)]).tolist() for name in ("validation", "test")}}


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


def start_blocks(starts: np.ndarray, block_steps: int) -> list[np.ndarray]:
    """Sorted valid starts cut where they cross a multiple of `block_steps` (counted from the first): contiguous
    runs that each span fewer than `block_steps` steps."""
    bins = (starts - starts[0]) // block_steps
    return np.split(starts, np.flatnonzero(np.diff(bins)) + 1)


@dataclass
class PooledBlock:
    """A block in a worker's pool: its steps [begin, end), the window starts it has not served yet, and its raw
    steps, read once, when it first serves a window."""
    begin: int
    end: int
    unserved: np.ndarray
    _steps: dict[str, np.ndarray] | None = None

    def steps(self, store: RolloutStore) -> dict[str, np.ndarray]:
        if self._steps is None:
            self._steps = {name: np.asarray(store[name][self.begin:self.end]) for name in WINDOW_FIELDS}
        return self._steps


class WindowStream(IterableDataset):
    """Endless batches of training windows (numpy dicts as torch tensors; `start` is each window's first global
    step), every window once per epoch, each batch drawn across `pool_blocks` blocks of the store. The stream is a
    function of its seed alone: `skip` batches are passed over by drawing their windows without reading them, so a
    resumed run continues with the very batches an uninterrupted one would have seen. Each rank of a distributed
    run (`rank`) and each reader process draws its own stream."""

    def __init__(self, path: str, episodes: np.ndarray, context: int, length: int, batch_size: int, seed: int,
                 block_steps: int = 2048, pool_blocks: int = 8, skip: int = 0, rank: int = 0):
        self.path, self.episodes, self.context, self.length = path, episodes, context, length
        self.batch_size, self.seed, self.block_steps, self.pool_blocks = batch_size, seed, block_steps, pool_blocks
        self.skip, self.rank = skip, rank

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.rank * workers + worker])
        store = RolloutStore(self.path)
        starts = valid_starts(store, self.episodes, self.context)
        if len(starts) == 0:
            raise ValueError(f"{self.path}: no episode is long enough for a {self.context}-step context")
        if len(starts) < self.batch_size:
            raise ValueError(f"{self.path}: {len(starts)} valid windows, fewer than a batch of {self.batch_size}")
        blocks = start_blocks(starts, self.block_steps)
        queue: list[np.ndarray] = []              # this epoch's blocks not yet drawn from
        pool: list[PooledBlock] = []
        skip = self.skip // workers + (worker < self.skip % workers)   # the DataLoader takes workers in turn
        while True:
            drawn, need = [], self.batch_size    # (block, starts) that make up this batch
            while need:
                while len(pool) < min(self.pool_blocks, len(blocks)):
                    queue = queue or [blocks[i] for i in rng.permutation(len(blocks))]
                    chosen = queue.pop()
                    pool.append(PooledBlock(int(chosen[0]), min(int(chosen[-1]) + self.length, store.num_steps),
                                            chosen))
                unserved = np.array([len(block.unserved) for block in pool])
                picks = rng.choice(unserved.sum(), size=min(need, unserved.sum()), replace=False)
                owner = np.searchsorted(np.cumsum(unserved), picks, side="right")
                offset = picks - (np.cumsum(unserved) - unserved)[owner]
                for k in np.unique(owner):
                    drawn.append((pool[k], pool[k].unserved[offset[owner == k]]))
                    pool[k].unserved = np.delete(pool[k].unserved, offset[owner == k])
                pool = [block for block in pool if len(block.unserved)]
                need -= len(picks)
            order = rng.permutation(self.batch_size)
            if skip:
                skip -= 1
                continue
            parts = [{"start": taken, **read_windows(store, taken, self.length, block.steps(store), block.begin)}
                     for block, taken in drawn]
            yield {name: torch.from_numpy(np.concatenate([part[name] for part in parts])[order])
                   for name in parts[0]}


def window_loader(path: str, episodes: np.ndarray, context: int, length: int, batch_size: int, seed: int,
                  num_workers: int, skip: int = 0, rank: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """An endless iterator of training batches from batch `skip` on, read in `num_workers` background processes;
    each rank of a distributed run reads its own."""
    stream = WindowStream(path, episodes, context, length, batch_size, seed, skip=skip, rank=rank)
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
