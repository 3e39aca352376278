"""PPO training throughput against the compute bound of the same network, measured in one run.

For each profile: env steps/s of real training updates; the bound, i.e. the same network's work per update
(batched inference over the rollout, then epochs x minibatches of forward+backward+Adam on whole sequences)
on in-memory data with no environment; their ratio (target >= 0.7); and env-only steps/s with random actions.

    python benchmarks/ppo_throughput.py [--updates 2] [--original-steps 64]

The original's widths (16/32/32, 3 epochs, 8 minibatches) are measured with 64 envs x --original-steps
steps per rollout (256 in the original; throughput per step hardly depends on it, and it keeps this short).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from rlinterp.agent.checkpoint import build_agent
from rlinterp.agent.ppo import Rollout, RolloutCollector, ppo_update
from rlinterp.config import load_params
from rlinterp.envs import NUM_ACTIONS, OBS_SHAPE, VecProcgen


def measure_training(params, updates: int) -> float:
    env_cfg, train = params.env, params.train_agent
    agent = build_agent(params.agent)
    optimizer = torch.optim.Adam(agent.parameters(), lr=train.learning_rate, eps=train.adam_eps)
    collector = RolloutCollector(VecProcgen(env_cfg, train.num_envs, seed=0), agent, train, torch.device("cpu"))
    rollout, _ = collector.collect()               # warm-up
    ppo_update(agent, optimizer, rollout, train)
    start = time.perf_counter()
    for _ in range(updates):
        rollout, _ = collector.collect()
        ppo_update(agent, optimizer, rollout, train)
    return updates * train.num_envs * train.num_steps / (time.perf_counter() - start)


def measure_bound(params, updates: int) -> float:
    train = params.train_agent
    agent = build_agent(params.agent)
    optimizer = torch.optim.Adam(agent.parameters(), lr=train.learning_rate, eps=train.adam_eps)
    T, N = train.num_steps, train.num_envs
    obs = torch.randint(0, 256, (T, N, *OBS_SHAPE), dtype=torch.uint8)
    first = torch.rand(T, N) < 0.01

    def one_update() -> None:
        with torch.inference_mode():
            hx = agent.initial_state(N)
            for t in range(T):
                out = agent.step(obs[t], hx, first[t])
                hx = out.hx
        rollout = Rollout(obs=obs, first=first, actions=torch.randint(0, NUM_ACTIONS, (T, N)),
                          logprobs=torch.full((T, N), -np.log(NUM_ACTIONS)), values=torch.zeros(T, N),
                          rewards=torch.rand(T, N), hx_in=torch.zeros(T, N, agent.hidden_size), next_value=torch.zeros(N),
                          next_first=torch.zeros(N, dtype=torch.bool))
        ppo_update(agent, optimizer, rollout, train)

    one_update()
    start = time.perf_counter()
    for _ in range(updates):
        one_update()
    return updates * T * N / (time.perf_counter() - start)


def measure_env(params, steps: int = 200) -> float:
    env = VecProcgen(params.env, params.train_agent.num_envs, seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        env.act(rng.integers(NUM_ACTIONS, size=env.num_envs))
        env.observe()
    return steps * env.num_envs / (time.perf_counter() - start)


def report(name: str, params, updates: int) -> None:
    torch.manual_seed(0)
    bound = measure_bound(params, updates)
    actual = measure_training(params, updates)
    env_only = measure_env(params)
    a, t = params.agent, params.train_agent
    print(f"{name}: input pool {a.input_pool}, channels {list(a.channels)} x{a.blocks_per_stage} blocks, "
          f"fc {a.fc_size}, GRU {a.hidden_size}; "
          f"{t.num_envs} envs x {t.num_steps} steps, {t.epochs} epochs, {t.minibatches} minibatches")
    print(f"  training        {actual:8.0f} env steps/s")
    print(f"  compute bound   {bound:8.0f} env steps/s (same network and batch shapes, no env)")
    print(f"  ratio           {actual / bound:8.2f}   (target >= 0.70)")
    print(f"  env only        {env_only:8.0f} env steps/s (random actions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--original-steps", type=int, default=64)
    args = parser.parse_args()
    params = load_params(args.params)
    if params.compute.num_threads:
        torch.set_num_threads(params.compute.num_threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    report("CPU profile (params.yaml)", params, args.updates)
    original = dataclasses.replace(
        params, agent=dataclasses.replace(params.agent, channels=(16, 32, 32), blocks_per_stage=2, fc_size=64,
                                          hidden_size=64, input_pool=1, input_downsample="average"),
        train_agent=dataclasses.replace(params.train_agent, num_envs=64, num_steps=args.original_steps, epochs=3,
                                        minibatches=8))
    report("original widths", original, args.updates)


if __name__ == "__main__":
    main()
