"""Vectorised Procgen through the gym3 API, with per-episode bookkeeping (return, length, level, completion).

gym3 convention, used throughout the project: `observe()` gives (reward, obs, first) where `reward` is the
reward of the previous action and `first[i]` says that `obs[i]` is the first frame of a new episode, so
the previous episode of env i ended with the previous action.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from rlinterp.config import EnvConfig

NUM_ACTIONS = 15
# Procgen's button combinations, in action-index order (the same for every game; unused keys are no-ops).
ACTION_NAMES = ("LEFT+DOWN", "LEFT", "LEFT+UP", "DOWN", "NOOP", "UP", "RIGHT+DOWN", "RIGHT", "RIGHT+UP",
                "D", "A", "W", "S", "Q", "E")
OBS_SHAPE = (64, 64, 3)


def _procgen_env_class():
    """Import procgen with gym's 'unmaintained' banner (printed to stderr by gym 0.26) kept out of sight."""
    with contextlib.redirect_stderr(io.StringIO()):
        from procgen import ProcgenGym3Env
    return ProcgenGym3Env


@dataclass
class Episode:
    """One finished episode."""
    env_index: int
    level_seed: int
    ret: float
    length: int
    completed: bool


class VecProcgen:
    """`num_envs` Procgen games stepped together; `observe()` returns numpy arrays without copies.

    `num_levels`/`start_level` default to the config's training levels; evaluation on unseen levels passes
    its own range. Each env draws its k-th level from its own seeded generator, so for a fixed seed the
    sequence of levels an env plays does not depend on the policy.
    """

    def __init__(self, config: EnvConfig, num_envs: int, seed: int, *, start_level: int | None = None,
                 num_levels: int | None = None, num_threads: int = 2):
        env_class = _procgen_env_class()
        self.num_envs = num_envs
        self.config = config
        self._env = env_class(
            num=num_envs, env_name=config.name, distribution_mode=config.distribution_mode,
            num_levels=config.num_levels if num_levels is None else num_levels,
            start_level=config.start_level if start_level is None else start_level,
            use_backgrounds=config.use_backgrounds, restrict_themes=config.restrict_themes,
            use_monochrome_assets=config.use_monochrome_assets, center_agent=config.center_agent,
            paint_vel_info=config.paint_vel_info, use_sequential_levels=config.use_sequential_levels,
            rand_seed=seed, num_threads=num_threads)
        self.num_actions = int(self._env.ac_space.eltype.n)
        self._returns = np.zeros(num_envs, dtype=np.float64)
        self._lengths = np.zeros(num_envs, dtype=np.int64)

    def level_seeds(self) -> np.ndarray:
        """The level each env is playing now."""
        return np.array([info["level_seed"] for info in self._env.get_info()], dtype=np.int64)

    def observe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reward (N,) float32, obs (N,64,64,3) uint8, first (N,) bool)."""
        reward, obs, first = self._env.observe()
        return reward, obs["rgb"], first

    def act(self, actions: np.ndarray) -> list[Episode]:
        """Take one step; return the episodes that this step ended."""
        self._env.act(np.asarray(actions, dtype=np.int32))
        reward, _, first = self._env.observe()
        self._returns += reward
        self._lengths += 1
        finished = []
        if first.any():
            infos = self._env.get_info()
            for i in np.flatnonzero(first):
                finished.append(Episode(int(i), int(infos[i]["prev_level_seed"]), float(self._returns[i]),
                                        int(self._lengths[i]), bool(infos[i]["prev_level_complete"])))
            self._returns[first] = 0.0
            self._lengths[first] = 0
        return finished
