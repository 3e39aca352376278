"""A vectorised cue-memory task with the VecProcgen interface: solvable only by an agent with memory."""
from __future__ import annotations

import numpy as np

from rlinterp.envs import Episode


class CueMemoryEnv:
    """Step 0 shows a red or green frame (the cue), the next `delay` frames are black; the action at the last
    step earns 1 if it names the cue (0 = red, 1 = green). A memoryless policy earns 0.5 at best."""

    num_actions = 2
    obs_shape = (8, 8, 3)

    def __init__(self, num_envs: int, delay: int = 2, seed: int = 0):
        self.num_envs, self.delay = num_envs, delay
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.cue = self.rng.integers(2, size=num_envs)
        self.reward = np.zeros(num_envs, dtype=np.float32)
        self.first = np.ones(num_envs, dtype=bool)

    def observe(self):
        obs = np.zeros((self.num_envs, *self.obs_shape), dtype=np.uint8)
        showing = self.t == 0
        obs[showing, :, :, 0] = np.where(self.cue[showing] == 0, 255, 0)[:, None, None]
        obs[showing, :, :, 1] = np.where(self.cue[showing] == 1, 255, 0)[:, None, None]
        return self.reward.copy(), obs, self.first.copy()

    def act(self, actions) -> list[Episode]:
        actions = np.asarray(actions)
        last = self.t == self.delay
        self.reward = np.where(last & (actions == self.cue), 1.0, 0.0).astype(np.float32)
        episodes = [Episode(int(i), 0, float(self.reward[i]), self.delay + 1, bool(self.reward[i]))
                    for i in np.flatnonzero(last)]
        self.t += 1
        self.first = last
        self.t[last] = 0
        self.cue[last] = self.rng.integers(2, size=int(last.sum()))
        return episodes
