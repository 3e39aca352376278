"""PPO training throughput in fp32 and bf16, each against the compute bound of the same network, in one run.

For each network (the CPU profile's, and the original's widths 16/32/32 at 64x64) and each precision:
env steps/s of real training updates (collect in Procgen + PPO update); the compute bound, i.e. the same
network's work per update (step-by-step inference over a rollout, then epochs x minibatches of
forward + backward + Adam) on in-memory data with no environment; their ratio; and bf16 over fp32. Every
measurement is warmed up first, and training and bound updates are interleaved over --updates rounds, so
neither side profits from running first or last.

    python benchmarks/ppo_throughput.py [--updates 3] [--original-steps 64] [--precisions fp32,bf16]

bf16 runs only where the hardware has bf16 units (`rlinterp.runtime.resolve_precision` with `auto`), unless
--precisions names it explicitly. The original's rollouts are 64 envs x --original-steps steps (256 in the
original; throughput per step hardly depends on it, and it keeps this short).
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
from rlinterp.runtime import resolve_precision, setup_torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


class Trainer:
    """Real training updates: collect a rollout in Procgen, then one PPO update."""

    def __init__(self, params, precision: torch.dtype | None):
        train = params.train_agent
        self.config = train
        self.agent = build_agent(params.agent).set_precision(precision)
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=train.learning_rate, eps=train.adam_eps)
        env = VecProcgen(params.env, train.num_envs, seed=0)
        self.collector = RolloutCollector(env, self.agent, train, torch.device("cpu"))

    def update(self) -> None:
        self.agent.eval()
        rollout, _ = self.collector.collect()
        self.agent.train()
        ppo_update(self.agent, self.optimizer, rollout, self.config)


class Bound(Trainer):
    """The same network's work per update with no environment: the most training could reach."""

    def __init__(self, params, precision: torch.dtype | None):
        train = params.train_agent
        self.config = train
        self.agent = build_agent(params.agent).set_precision(precision)
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=train.learning_rate, eps=train.adam_eps)
        T, N = train.num_steps, train.num_envs
        gen = torch.Generator().manual_seed(0)
        self.obs = torch.randint(0, 256, (T, N, *OBS_SHAPE), dtype=torch.uint8, generator=gen)
        self.first = torch.rand(T, N, generator=gen) < 0.01

    def update(self) -> None:
        T, N = self.first.shape
        self.agent.eval()
        with torch.inference_mode():
            hx = self.agent.initial_state(N)
            for t in range(T):
                hx = self.agent.step(self.obs[t], hx, self.first[t]).hx
        rollout = Rollout(obs=self.obs, first=self.first, actions=torch.randint(0, NUM_ACTIONS, (T, N)),
                          logprobs=torch.full((T, N), -np.log(NUM_ACTIONS)), values=torch.zeros(T, N),
                          rewards=torch.rand(T, N), hx_in=torch.zeros(T, N, self.agent.hidden_size),
                          next_value=torch.zeros(N), next_first=torch.zeros(N, dtype=torch.bool))
        self.agent.train()
        ppo_update(self.agent, self.optimizer, rollout, self.config)


def measure(params, precisions: list[str], updates: int) -> dict[tuple[str, str], float]:
    """(precision, 'training' | 'bound') -> env steps/s, all warmed up and interleaved round by round."""
    runners = {(p, kind): cls(params, PRECISIONS[p]) for p in precisions
               for kind, cls in (("training", Trainer), ("bound", Bound))}
    for runner in runners.values():
        runner.update()                              # warm-up: allocations, oneDNN kernels, Procgen start
    seconds = dict.fromkeys(runners, 0.0)
    for _ in range(updates):
        for key, runner in runners.items():
            start = time.perf_counter()
            runner.update()
            seconds[key] += time.perf_counter() - start
    steps = updates * params.train_agent.num_envs * params.train_agent.num_steps
    return {key: steps / s for key, s in seconds.items()}


def report(name: str, params, precisions: list[str], updates: int) -> None:
    a, t = params.agent, params.train_agent
    print(f"{name}: input pool {a.input_pool}, channels {list(a.channels)} x{a.blocks_per_stage} blocks, "
          f"fc {a.fc_size}, GRU {a.hidden_size}; {t.num_envs} envs x {t.num_steps} steps, {t.epochs} epochs, "
          f"{t.minibatches} minibatches, BPTT {t.bptt_steps}; {updates} interleaved updates each")
    rates = measure(params, precisions, updates)
    print(f"  {'precision':10s} {'training':>10s} {'bound':>10s} {'ratio':>7s}   (env steps/s; ratio <= 1)")
    for p in precisions:
        train, bound = rates[(p, "training")], rates[(p, "bound")]
        print(f"  {p:10s} {train:10.0f} {bound:10.0f} {train / bound:7.2f}")
    if len(precisions) == 2:
        print(f"  bf16 / fp32: training {rates[('bf16', 'training')] / rates[('fp32', 'training')]:.2f}x, "
              f"bound {rates[('bf16', 'bound')] / rates[('fp32', 'bound')]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--original-steps", type=int, default=64)
    parser.add_argument("--precisions", default=None, help="comma-separated; default fp32 and, where the "
                        "hardware has bf16 units, bf16")
    args = parser.parse_args()
    params = load_params(args.params)
    device = setup_torch(params.compute)
    if args.precisions:
        precisions = args.precisions.split(",")
    else:
        auto = dataclasses.replace(params.compute, precision="auto")
        precisions = ["fp32"] + (["bf16"] if resolve_precision(auto, device) else [])
        if len(precisions) == 1:
            print("no bf16 units on this machine (auto would choose fp32): measuring fp32 only")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    report("CPU profile (params.yaml)", params, precisions, args.updates)
    original = dataclasses.replace(
        params, agent=dataclasses.replace(params.agent, channels=(16, 32, 32), blocks_per_stage=2, fc_size=64,
                                          hidden_size=64, input_pool=1, input_downsample="average"),
        train_agent=dataclasses.replace(params.train_agent, num_envs=64, num_steps=args.original_steps, epochs=3,
                                        minibatches=8, bptt_steps=min(params.train_agent.bptt_steps,
                                                                      args.original_steps)))
    report("original widths (16/32/32 at 64x64, fc 64)", original, precisions, args.updates)


if __name__ == "__main__":
    main()
