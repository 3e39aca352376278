"""Record real agent-environment rollouts into a RolloutStore.

Each of `num_envs` environments records its first `episodes_per_env` complete episodes, so the recorded
episodes are not biased towards short ones (stopping at the first N finished episodes would be), and the
recorded levels do not depend on the agent.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from rlinterp.agent.model import RecurrentAgent, sample_actions
from rlinterp.config import EnvConfig
from rlinterp.envs import VecProcgen
from rlinterp.store import RolloutWriter


class EpisodeBuffers:
    """Per-env episode buffers, filled for all envs at once: one vectorised write per field per step.

    Arrays are (num_envs, capacity, ...) and grow (doubling) when an episode outlasts the capacity; a finished
    episode is one slice of its env's row.
    """

    def __init__(self, num_envs: int, capacity: int = 128):
        self.num_envs, self.capacity = num_envs, capacity
        self.arrays: dict[str, np.ndarray] = {}
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def append(self, step: dict[str, np.ndarray]) -> None:
        if not self.arrays:
            self.arrays = {name: np.empty((self.num_envs, self.capacity, *v.shape[1:]), v.dtype)
                           for name, v in step.items()}
        if self.lengths.max() == self.capacity:
            self.capacity *= 2
            for name, old in self.arrays.items():
                self.arrays[name] = np.empty((self.num_envs, self.capacity, *old.shape[2:]), old.dtype)
                self.arrays[name][:, :old.shape[1]] = old
        rows = np.arange(self.num_envs)
        for name, values in step.items():
            self.arrays[name][rows, self.lengths] = values
        self.lengths += 1

    def pop(self, env_index: int) -> dict[str, np.ndarray]:
        length, self.lengths[env_index] = self.lengths[env_index], 0
        return {name: values[env_index, :length].copy() for name, values in self.arrays.items()}


@torch.inference_mode()
def record_rollouts(env_config: EnvConfig, agent: RecurrentAgent, writer: RolloutWriter, num_envs: int,
                    episodes_per_env: int, seed: int, start_level: int | None = None, num_levels: int | None = None,
                    device: str | torch.device = "cpu", progress: bool = True) -> int:
    """Run the agent, sampling its actions, and write every env's first `episodes_per_env` episodes.

    Returns the number of environment steps taken (recorded or not).
    """
    device = torch.device(device)
    env = VecProcgen(env_config, num_envs, seed, start_level=start_level, num_levels=num_levels)
    generator = torch.Generator(device=device).manual_seed(seed)
    buffers = EpisodeBuffers(num_envs)
    recorded = np.zeros(num_envs, dtype=np.int64)
    hx = agent.initial_state(num_envs, device)
    levels = env.level_seeds()
    steps = 0
    bar = tqdm(total=num_envs * episodes_per_env, desc="record", unit="episode", disable=not progress)
    while recorded.min() < episodes_per_env:
        _, obs, first = env.observe()
        out = agent.step(torch.from_numpy(obs).to(device), hx, torch.from_numpy(first).to(device))
        hx = out.hx
        action = sample_actions(out.logits, generator)
        action_np = action.cpu().numpy()
        finished = env.act(action_np)
        reward, _, done = env.observe()
        steps += num_envs
        buffers.append({"obs": obs, "hx": out.hx.cpu().numpy(), "logits": out.logits.cpu().numpy(),
                        "value": out.value.cpu().numpy(), "action": action_np.astype(np.int32),
                        "reward": reward, "done": done, "level_seed": levels})
        for episode in finished:
            i = episode.env_index
            record = buffers.pop(i)
            if recorded[i] < episodes_per_env:
                assert record["level_seed"][0] == episode.level_seed and len(record["obs"]) == episode.length
                writer.add_episode(record, **{"return": episode.ret, "level_seed": episode.level_seed,
                                              "completed": episode.completed})
                bar.update(1)
            recorded[i] += 1
        if finished:
            levels = env.level_seeds()
    bar.close()
    return steps
