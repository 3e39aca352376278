"""Recording throughput and store footprint, measured in one run.

Prints: recording env steps/s; the bound, i.e. the same agent inference + env stepping with nothing
stored, and their ratio (target >= 0.85); bytes per step and the obs compression ratio of the store
(target >= 12x); and the number of files of stores holding 1,000 and 10,000 episodes' worth of steps (it
grows with shards, not episodes; the original wrote >= 3 files per episode).

    python benchmarks/record_throughput.py [--episodes 512] [--bound-steps 300]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rlinterp.agent.checkpoint import build_agent, load_agent
from rlinterp.agent.model import sample_actions
from rlinterp.config import load_params
from rlinterp.runtime import setup_torch
from rlinterp.envs import NUM_ACTIONS, VecProcgen
from rlinterp.record import record_rollouts
from rlinterp.store import RolloutStore, RolloutWriter, real_rollout_fields, store_size


@torch.inference_mode()
def measure_bound(params, agent, num_envs: int, steps: int) -> float:
    start = time.perf_counter()                   # like recording, the bound includes building the envs
    env = VecProcgen(params.env, num_envs, seed=0)
    hx = agent.initial_state(num_envs)
    for _ in range(steps):
        _, obs, first = env.observe()
        out = agent.step(torch.from_numpy(obs), hx, torch.from_numpy(first))
        hx = out.hx
        env.act(sample_actions(out.logits).numpy())
        env.observe()
    return steps * num_envs / (time.perf_counter() - start)


def file_count(params, episodes: int, mean_length: int, tmp: Path) -> int:
    """Files of a store of `episodes` episodes of `mean_length` steps.

    The data are ones: the layout depends on shapes only, and Zarr skips writing chunks that equal the fill
    value (zeros), which would hide the files a real store has."""
    fields = real_rollout_fields(params.agent.hidden_size, NUM_ACTIONS)
    episode = {name: np.ones((mean_length, *spec.shape), dtype=spec.dtype) for name, spec in fields.items()}
    path = tmp / f"files_{episodes}.zarr"
    with RolloutWriter(path, fields, {}, params.record.chunk_steps, params.record.shard_steps) as writer:
        for _ in range(episodes):
            writer.add_episode(episode, **{"return": 0.0, "level_seed": 0, "completed": False})
    return store_size(path)["files"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--checkpoint", default="data/agent/checkpoint.pt")
    parser.add_argument("--episodes", type=int, default=512, help="episodes to record (a multiple of num_envs)")
    parser.add_argument("--bound-steps", type=int, default=300)
    args = parser.parse_args()
    params = load_params(args.params)
    setup_torch(params.compute)
    if Path(args.checkpoint).exists():
        agent, _ = load_agent(args.checkpoint, expected=params.agent)
        print(f"agent: {args.checkpoint}")
    else:
        agent = build_agent(params.agent).eval()
        print("agent: untrained (no checkpoint found)")
    num_envs = params.record.num_envs
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bound = measure_bound(params, agent, num_envs, args.bound_steps)
        fields = real_rollout_fields(params.agent.hidden_size, NUM_ACTIONS)
        start = time.perf_counter()
        with RolloutWriter(tmp / "r.zarr", fields, {}, params.record.chunk_steps, params.record.shard_steps) as w:
            env_steps = record_rollouts(params.env, agent, w, num_envs, args.episodes // num_envs, seed=0,
                                        progress=False)
        recording = env_steps / (time.perf_counter() - start)
        store = RolloutStore(tmp / "r.zarr")
        size = store_size(tmp / "r.zarr")
        mean_length = int(round(store.num_steps / store.num_episodes))
        print(f"recorded {store.num_episodes} episodes, {store.num_steps} steps ({num_envs} envs)")
        print(f"  recording          {recording:8.0f} env steps/s")
        print(f"  bound              {bound:8.0f} env steps/s (agent inference + env, nothing stored)")
        print(f"  ratio              {recording / bound:8.2f}   (target >= 0.85)")
        print(f"  bytes per step     {size['bytes'] / store.num_steps:8.0f}   (raw obs alone: {64 * 64 * 3})")
        print(f"  obs compression    {store['obs'].nbytes / store['obs'].nbytes_stored():8.1f}x  (target >= 12x)")
        for episodes in (1_000, 10_000):
            files = file_count(params, episodes, mean_length, tmp)
            print(f"  files for {episodes:6d} episodes of {mean_length} steps: {files:5d} "
                  f"(one file per episode per array would be {episodes * len(fields)})")


if __name__ == "__main__":
    main()
