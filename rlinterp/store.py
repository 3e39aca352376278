"""RolloutStore: the one on-disk format for real and simulated agent-environment rollouts (Zarr v3).

Layout of a store (a directory; open it with plain `zarr.open_group(path, mode="r")`):

    /                      attrs: schema_version, stage, params_hash, agent_sha256, env (config dict),
                                  num_steps, num_episodes, complete (always true in a readable store)
    /obs      (T, 64, 64, 3) uint8    the frame the agent saw at this step
    /hx       (T, H) float32          the agent's GRU state AFTER seeing this frame: the state its logits and
                                      value (and so this step's action) were computed from. At an episode's
                                      first step the state fed to the GRU was zero.
    /logits   (T, A) float32          the agent's unnormalised action log-probabilities
    /value    (T,) float32            the agent's value estimate
    /action   (T,) int32              the action taken at this step
    /reward   (T,) float32            the reward received FOR this action (the transition out of this step)
    /done     (T,) bool               the episode ended with this action (true on each episode's last step)
    /level_seed (T,) int64            the Procgen level being played
    (simulated stores add their own per-step arrays, e.g. the simulator state, with the same time axis)
    /meta/episode_ends (E,) int64     cumulative episode ends: episode e is steps [ends[e-1], ends[e])
    /meta/return, /meta/length, /meta/level_seed, /meta/completed (E,)   per-episode summaries

All episodes are concatenated along time. Arrays are Zstd-compressed in chunks of `chunk_steps` steps,
grouped into shards of `shard_steps` steps (one file per shard per array), and written in whole shards.
A store is built under a hidden temporary name and renamed into place only when complete, so a store at
its final path is always whole; the reader still checks schema version, completeness and lengths.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from rlinterp.errors import InputError
from rlinterp.files import replace_directory, temporary_sibling

SCHEMA_VERSION = 2   # 2: the meta arrays carry Zstd checksums too
EPISODE_FIELDS = ("return", "length", "level_seed", "completed")
# Write blocks even when they hold only the fill value (zarr skips those by default), so a block missing on
# disk always means damage; `missing_blocks` relies on it.
EVERY_BLOCK = {"write_empty_chunks": True}
EPISODE_DTYPES = {"return": np.float32, "length": np.int64, "level_seed": np.int64, "completed": np.bool_}
# dtype and number of dimensions (time included) of every array whose name the schema fixes: a store rewritten
# with other types (frames as floats in [0, 1], say) would be read as something else.
SCHEMA_ARRAYS = {"obs": (np.uint8, 4), "hx": (np.float32, 2), "logits": (np.float32, 2), "value": (np.float32, 1),
                 "action": (np.int32, 1), "reward": (np.float32, 1), "done": (np.bool_, 1),
                 "level_seed": (np.int64, 1), "meta/episode_ends": (np.int64, 1),
                 **{f"meta/{name}": (dtype, 1) for name, dtype in EPISODE_DTYPES.items()}}


class StoreError(InputError):
    """A store is missing, incomplete, of another schema version, or inconsistent."""


@dataclass(frozen=True)
class FieldSpec:
    """A per-step array: its shape after the time axis, and its dtype."""
    shape: tuple[int, ...]
    dtype: Any


def real_rollout_fields(hidden_size: int, num_actions: int, obs_shape: tuple[int, ...] = (64, 64, 3)
                        ) -> dict[str, FieldSpec]:
    """The per-step arrays of a real (or simulated) agent-environment rollout."""
    return {"obs": FieldSpec(tuple(obs_shape), np.uint8), "hx": FieldSpec((hidden_size,), np.float32),
            "logits": FieldSpec((num_actions,), np.float32), "value": FieldSpec((), np.float32),
            "action": FieldSpec((), np.int32), "reward": FieldSpec((), np.float32),
            "done": FieldSpec((), np.bool_), "level_seed": FieldSpec((), np.int64)}


class RolloutWriter:
    """Appends whole episodes and writes them in whole shards; the store appears at `path` on `close()`.

    Use as a context manager: an exception (or a kill) leaves only the hidden temporary directory, never a
    store at `path`.
    """

    def __init__(self, path: str | Path, fields: Mapping[str, FieldSpec], attrs: Mapping[str, Any],
                 chunk_steps: int = 256, shard_steps: int = 8192, compression_level: int = 3):
        if shard_steps % chunk_steps:
            raise ValueError(f"shard_steps = {shard_steps}: expected a multiple of chunk_steps = {chunk_steps}")
        self.path = Path(path)
        self.fields = dict(fields)
        self.shard_steps = shard_steps
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_path = temporary_sibling(self.path, "incomplete")
        self.group = zarr.open_group(self.tmp_path, mode="w")
        self.group.attrs.update({**attrs, "schema_version": SCHEMA_VERSION, "complete": False})
        self.compressor = ZstdCodec(level=compression_level, checksum=True)   # a flipped bit fails the read
        self.arrays = {
            name: self.group.create_array(name, shape=(0, *spec.shape), dtype=spec.dtype,
                                          chunks=(chunk_steps, *spec.shape), shards=(shard_steps, *spec.shape),
                                          compressors=self.compressor, fill_value=0, config=EVERY_BLOCK)
            for name, spec in self.fields.items()}
        self.pending: list[dict[str, np.ndarray]] = []
        self.pending_steps = 0
        self.written = 0
        self.episodes: dict[str, list] = {name: [] for name in EPISODE_FIELDS}
        self.episode_ends: list[int] = []
        self.closed = False

    def add_episode(self, steps: Mapping[str, np.ndarray], **summary: Any) -> None:
        """One episode: every field as an array with a leading time axis; summary: return, level_seed, completed."""
        length = len(steps["obs"] if "obs" in steps else next(iter(steps.values())))
        if set(steps) != set(self.fields):
            raise ValueError(f"episode has fields {sorted(steps)}, expected {sorted(self.fields)}")
        for name, spec in self.fields.items():
            if steps[name].shape != (length, *spec.shape):
                raise ValueError(f"episode field {name} has shape {steps[name].shape}, expected "
                                 f"{(length, *spec.shape)}")
        self.pending.append({name: np.asarray(steps[name], dtype=self.fields[name].dtype) for name in self.fields})
        self.pending_steps += length
        total = (self.episode_ends[-1] if self.episode_ends else 0) + length
        self.episode_ends.append(total)
        self.episodes["length"].append(length)
        for name in ("return", "level_seed", "completed"):
            self.episodes[name].append(summary[name])
        if self.pending_steps >= self.shard_steps:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write the pending steps in whole shards (all of them when `final`), keeping the rest pending."""
        if not self.pending:
            return
        block = {name: np.concatenate([ep[name] for ep in self.pending]) for name in self.fields}
        count = self.pending_steps if final else (self.pending_steps // self.shard_steps) * self.shard_steps
        start, end = self.written, self.written + count
        for name, array in self.arrays.items():
            array.resize((end, *self.fields[name].shape))
            array[start:end] = block[name][:count]
        self.written = end
        rest = {name: values[count:] for name, values in block.items()}
        self.pending_steps -= count
        self.pending = [rest] if self.pending_steps else []

    def close(self) -> Path:
        """Write the remainder and the episode index, mark complete, and move the store into place."""
        self._flush(final=True)
        meta = self.group.create_group("meta")
        meta_arrays = {"episode_ends": np.asarray(self.episode_ends, dtype=np.int64),
                       **{name: np.asarray(self.episodes[name], dtype=EPISODE_DTYPES[name]) for name in EPISODE_FIELDS}}
        for name, data in meta_arrays.items():
            meta.create_array(name, data=data, compressors=self.compressor, config=EVERY_BLOCK)
        self.group.attrs.update({"num_steps": self.written, "num_episodes": len(self.episode_ends),
                                 "complete": True})
        replace_directory(self.tmp_path, self.path)
        self.closed = True
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp_path, ignore_errors=True)

    def __enter__(self) -> RolloutWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.close()


class CheckedArray:
    """A per-step Zarr array whose reads fail with a StoreError naming the array and the rows, instead of a
    codec or checksum traceback from inside zarr's event loop; everything else is the zarr array's."""

    def __init__(self, array: zarr.Array, where: str):
        self.array, self.where = array, where

    def __getattr__(self, name: str) -> Any:
        return getattr(self.array, name)

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, selection: Any) -> np.ndarray:
        return self._read(self.array.__getitem__, selection)

    def get_orthogonal_selection(self, selection: Any) -> np.ndarray:
        return self._read(self.array.get_orthogonal_selection, selection)

    def _read(self, read, selection: Any) -> np.ndarray:
        try:
            return read(selection)
        except Exception as err:  # zarr and its codecs raise many types for a damaged shard
            raise StoreError(f"{self.where}: rows {selection!r} cannot be read ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else 'no message'}); the store is damaged, "
                             f"re-run the stage that produces it") from None


def block_steps(array: zarr.Array) -> int:
    """Steps per file of an array: its shard, or its chunk if unsharded."""
    return (array.shards or array.chunks)[0]


def missing_blocks(path: Path, array: zarr.Array) -> list[int]:
    """Indices (along time) of the shards (or chunks, for unsharded arrays) that have no file on disk.

    Zarr reads a missing block back as its fill value, so a deleted shard would silently become zeros."""
    expected = -(-array.shape[0] // block_steps(array))
    root = path / "c"
    present = {int(p.relative_to(root).parts[0]) for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()
    return [i for i in range(expected) if i not in present]


class RolloutStore:
    """Read access to a complete store: per-step arrays (lazy), episodes, and fixed-length windows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no rollout store here (expected a Zarr directory written by rlinterp)")
        try:
            self.group = zarr.open_group(self.path, mode="r")
        except Exception as err:  # zarr raises several types for a broken directory
            raise StoreError(f"{self.path}: not a readable Zarr group ({type(err).__name__}: {err})") from err
        attrs = dict(self.group.attrs)
        version = attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema_version {version!r}, expected {SCHEMA_VERSION}; re-create "
                             f"it with this version of rlinterp")
        if attrs.get("complete") is not True:
            raise StoreError(f"{self.path}: store is incomplete (its writer did not finish); re-run the stage "
                             f"that produces it")
        self.attrs = attrs
        self.num_steps = int(attrs["num_steps"])
        self.fields = sorted(name for name, _ in self.group.arrays())
        meta = {}
        for name in ("episode_ends", *EPISODE_FIELDS):
            if not (self.path / "meta" / name / "zarr.json").is_file():
                raise StoreError(f"{self.path}: store has no meta/{name} (expected the per-episode index)")
            meta[name] = self.group[f"meta/{name}"]
        for name, array in [*((n, self.group[n]) for n in self.fields), *((f"meta/{n}", a) for n, a in meta.items())]:
            gone = missing_blocks(self.path / name, array)
            if gone:
                raise StoreError(f"{self.path}: {name} is missing {len(gone)} of its blocks (first: {gone[0]}); "
                                 f"the store is damaged, re-run the stage that produces it")
        self._check_types(meta)
        self.episode_ends = np.asarray(CheckedArray(meta["episode_ends"], f"{self.path}/meta/episode_ends")[:])
        self.num_episodes = len(self.episode_ends)
        if self.num_episodes == 0:
            raise StoreError(f"{self.path}: store holds no episodes; expected at least one (re-run the stage that "
                             f"produces it with more episodes)")
        self._check_lengths(meta)
        self.episode_starts = np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    def _check_types(self, meta: dict[str, zarr.Array]) -> None:
        """Every array the schema names has its dtype and number of dimensions."""
        arrays = {**{name: self.group[name] for name in self.fields}, **{f"meta/{n}": a for n, a in meta.items()}}
        for name, array in arrays.items():
            if name in SCHEMA_ARRAYS:
                dtype, ndim = SCHEMA_ARRAYS[name]
                if array.dtype != dtype or array.ndim != ndim:
                    raise StoreError(f"{self.path}: {name} is {array.dtype} with shape {array.shape}, expected "
                                     f"{np.dtype(dtype)} with {ndim} dimension(s); the store is not one rlinterp "
                                     f"wrote, re-run the stage that produces it")

    def _check_lengths(self, meta: dict[str, zarr.Array]) -> None:
        """Episode ends rise strictly to num_steps; every array has num_steps rows, every summary one per episode."""
        if self.num_episodes != self.attrs.get("num_episodes") or (self.num_episodes and
                                                                   self.episode_ends[-1] != self.num_steps):
            raise StoreError(f"{self.path}: episode index ends at {self.episode_ends[-1:]} for "
                             f"{self.num_episodes} episodes, expected {self.attrs.get('num_episodes')} episodes "
                             f"ending at step {self.num_steps}")
        not_rising = np.diff(self.episode_ends, prepend=0) <= 0
        if not_rising.any():
            bad = int(np.argmax(not_rising))
            raise StoreError(f"{self.path}: meta/episode_ends is not strictly increasing from 0 (entry {bad} = "
                             f"{self.episode_ends[bad]}); expected cumulative episode ends")
        wrong = {name: self.group[name].shape[0] for name in self.fields
                 if self.group[name].shape[0] != self.num_steps}
        if wrong:
            raise StoreError(f"{self.path}: arrays disagree in length: {wrong}, expected {self.num_steps} steps")
        for name in EPISODE_FIELDS:
            if meta[name].shape[0] != self.num_episodes:
                raise StoreError(f"{self.path}: meta/{name} has {meta[name].shape[0]} entries, "
                                 f"expected {self.num_episodes}")

    def verify(self) -> RolloutStore:
        """Read every block of every array once (Zstd checksums catch damaged bytes): for a stage that will
        read the whole store anyway, to fail before it touches its outputs rather than midway."""
        for name in self.fields:
            array, block = self[name], block_steps(self.group[name])
            for start in range(0, self.num_steps, block):
                array[start:start + block]
        self._check_episodes(self.episode_info())
        return self

    def _check_episodes(self, info: dict[str, np.ndarray]) -> None:
        """The per-episode summaries agree with the per-step arrays they summarise: lengths with the episode
        index, level seeds with each episode's first step, returns with the summed rewards."""
        lengths = np.diff(self.episode_ends, prepend=0)
        checks = [("length", info["length"] != lengths, "the episode index's lengths")]
        if "level_seed" in self.fields:
            first = self.rows("level_seed", self.episode_starts)
            checks.append(("level_seed", info["level_seed"] != first, "the level seed at each episode's first step"))
        if "reward" in self.fields:
            sums = np.add.reduceat(np.asarray(self["reward"][:], dtype=np.float64), self.episode_starts)
            checks.append(("return", ~np.isclose(info["return"], sums, rtol=1e-5, atol=1e-3),
                           "the sum of each episode's rewards"))
        for name, wrong, expected in checks:
            if wrong.any():
                bad = int(np.argmax(wrong))
                raise StoreError(f"{self.path}: meta/{name} disagrees with {expected} in {int(wrong.sum())} "
                                 f"episode(s) (first: episode {bad}); the store is damaged, re-run the stage that "
                                 f"produces it")

    def __getitem__(self, name: str) -> CheckedArray:
        """A per-step array, lazily: index it to read (e.g. `store['hx'][1000:2000]`)."""
        if name not in self.fields:
            raise StoreError(f"{self.path}: no per-step array {name!r}; it has {', '.join(self.fields)}")
        return CheckedArray(self.group[name], f"{self.path}/{name}")

    def rows(self, name: str, steps: np.ndarray) -> np.ndarray:
        """The per-step array `name` at the global steps `steps` (reads only the chunks that hold them)."""
        return np.asarray(self[name].get_orthogonal_selection((np.asarray(steps),)))

    def episode_steps(self, episodes) -> np.ndarray:
        """Every global step of `episodes` (indices, in the order given), concatenated."""
        return np.concatenate([np.arange(self.episode_starts[e], self.episode_ends[e]) for e in episodes]
                              or [np.zeros(0, np.int64)])

    def positions(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For global steps: the episode each belongs to, its step within that episode, and the episode's length."""
        episode = np.searchsorted(self.episode_ends, steps, side="right")
        start = self.episode_starts[episode]
        return episode, steps - start, self.episode_ends[episode] - start

    def episode_info(self) -> dict[str, np.ndarray]:
        """Per-episode return, length, level_seed and completed."""
        return {name: np.asarray(CheckedArray(self.group[f"meta/{name}"], f"{self.path}/meta/{name}")[:])
                for name in EPISODE_FIELDS}

    def episode(self, index: int, fields: list[str] | None = None) -> dict[str, np.ndarray]:
        if not -self.num_episodes <= index < self.num_episodes:
            raise IndexError(f"episode {index} out of range: the store has {self.num_episodes}")
        start, end = self.episode_starts[index], self.episode_ends[index]
        return {name: np.asarray(self[name][start:end]) for name in (fields or self.fields)}

    def episodes(self, fields: list[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
        for index in range(self.num_episodes):
            yield self.episode(index, fields)

    def windows(self, starts: np.ndarray, length: int, fields: list[str] | None = None) -> dict[str, np.ndarray]:
        """Windows of `length` steps beginning at global steps `starts`, each cut at its episode's end.

        Returns every field as (B, length, ...), zero-padded past the episode's end, and `mask` (B, length):
        true on real steps of the episode the window starts in.
        """
        starts = np.asarray(starts, dtype=np.int64)
        episode_of = np.searchsorted(self.episode_ends, starts, side="right")
        ends = np.minimum(starts + length, self.episode_ends[episode_of])
        fields = fields or self.fields
        out = {name: np.zeros((len(starts), length, *self[name].shape[1:]), dtype=self[name].dtype)
               for name in fields}
        mask = np.zeros((len(starts), length), dtype=bool)
        for i, (start, end) in enumerate(zip(starts, ends)):
            for name in fields:
                out[name][i, :end - start] = self[name][start:end]
            mask[i, :end - start] = True
        out["mask"] = mask
        return out


def store_size(path: str | Path) -> dict[str, int]:
    """Bytes on disk and number of files of a store directory."""
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return {"bytes": sum(p.stat().st_size for p in files), "files": len(files)}
