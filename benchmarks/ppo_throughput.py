"""PPO training throughput of each candidate speed-up, against the compute bound of the same network, in one run.

For each network (the CPU profile's: full width at 32x32 input; the same at 64x64; the original's widths with
fc 64 and GRU 64 at 64x64) and each variant -- fp32, bf16 (where the CPU has bf16 units), channels_last convolution
weights, a torch.compile'd encoder, one torch thread instead of the profile's -- env steps/s of real training
updates (collect in Procgen + PPO update); and for fp32 and bf16 the compute bound, i.e. the same network's work
per update (step-by-step inference over a rollout, then epochs x minibatches of forward + backward + Adam) on
in-memory data with no environment. Printed: steps/s, the ratio to the bound of the variant's precision, and the
ratio to plain fp32 training. Every measurement is warmed up first, and all of one network's runners are
interleaved round by round over --updates rounds, so none profits from running first or last.

    python benchmarks/ppo_throughput.py [--updates 2] [--steps 64] [--networks profile,profile_64px,original]
                                        [--variants fp32,bf16,fp32_channels_last,bf16_channels_last,bf16_compiled,
                                         bf16_1_thread]

Rollouts are --envs x --steps (64 x 64 by default; throughput per step hardly depends on the rollout length, and
it keeps this short); PPO's epochs and minibatches are the profile's. A variant naming bf16 is skipped where the
CPU has no bf16 units (`rlinterp.runtime.resolve_precision` with `auto`).
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


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to run the same training: precision, memory format, compilation, threads."""
    precision: str = "fp32"
    channels_last: bool = False
    compiled: bool = False
    threads: int | None = None           # None: compute.num_threads

    @classmethod
    def parse(cls, name: str) -> Variant:
        """'bf16_channels_last' -> Variant('bf16', channels_last=True); also '_compiled', '_1_thread'."""
        precision, _, rest = name.partition("_")
        if precision not in PRECISIONS or rest not in ("", "channels_last", "compiled", "1_thread"):
            raise SystemExit(f"--variants: {name!r} is not <fp32|bf16>[_channels_last|_compiled|_1_thread]")
        return cls(precision, rest == "channels_last", rest == "compiled", 1 if rest == "1_thread" else None)

    @property
    def name(self) -> str:
        """The name `parse` reads."""
        return self.precision + ("_channels_last" if self.channels_last else "") + \
            ("_compiled" if self.compiled else "") + ("_1_thread" if self.threads == 1 else "")


def original_network(agent):
    """`agent` (an AgentConfig) with the original's network: IMPALA 16/32/32 at 64x64, fc 64, GRU 64."""
    return dataclasses.replace(agent, channels=(16, 32, 32), blocks_per_stage=2, fc_size=64, hidden_size=64,
                               input_pool=1, input_downsample="average")


def build(params, variant: Variant):
    """The agent and optimiser a variant trains."""
    agent = build_agent(params.agent).set_precision(PRECISIONS[variant.precision])
    if variant.channels_last:
        agent.encoder.to(memory_format=torch.channels_last)
    if variant.compiled:
        agent.encoder = torch.compile(agent.encoder)
    train = params.train_agent
    return agent, torch.optim.Adam(agent.parameters(), lr=train.learning_rate, eps=train.adam_eps)


class Trainer:
    """Real training updates: collect a rollout in Procgen, then one PPO update."""

    def __init__(self, params, variant: Variant):
        train = params.train_agent
        self.config, self.variant = train, variant
        self.agent, self.optimizer = build(params, variant)
        env = VecProcgen(params.env, train.num_envs, seed=0)
        self.collector = RolloutCollector(env, self.agent, train, torch.device("cpu"))

    def update(self) -> None:
        self.agent.eval()
        rollout, _ = self.collector.collect()
        self.agent.train()
        ppo_update(self.agent, self.optimizer, rollout, self.config)


class Bound(Trainer):
    """The same network's work per update with no environment: the most training could reach."""

    def __init__(self, params, variant: Variant):
        train = params.train_agent
        self.config, self.variant = train, variant
        self.agent, self.optimizer = build(params, variant)
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


def measure(params, variants: list[Variant], updates: int) -> dict[tuple[Variant, str], float]:
    """(variant, 'training' | 'bound') -> env steps/s, all warmed up and interleaved round by round. Bounds are
    measured for the plain fp32 and bf16 variants only."""
    runners = {(v, "training"): Trainer(params, v) for v in variants}
    runners.update({(v, "bound"): Bound(params, v) for v in variants if v == Variant(v.precision)})
    threads = torch.get_num_threads()
    seconds = dict.fromkeys(runners, 0.0)
    for round_ in range(updates + 1):                # round 0 warms up: allocations, kernels, compilation, Procgen
        for key, runner in runners.items():
            torch.set_num_threads(runner.variant.threads or threads)
            start = time.perf_counter()
            runner.update()
            if round_:
                seconds[key] += time.perf_counter() - start
    torch.set_num_threads(threads)
    steps = updates * params.train_agent.num_envs * params.train_agent.num_steps
    return {key: steps / s for key, s in seconds.items()}


def report(name: str, params, variants: list[Variant], updates: int) -> None:
    a, t = params.agent, params.train_agent
    print(f"{name}: input pool {a.input_pool}, channels {list(a.channels)} x{a.blocks_per_stage} blocks, "
          f"fc {a.fc_size}, GRU {a.hidden_size}; {t.num_envs} envs x {t.num_steps} steps, {t.epochs} epochs, "
          f"{t.minibatches} minibatches, BPTT {t.bptt_steps}; {updates} interleaved updates each")
    rates = measure(params, variants, updates)
    plain = rates.get((Variant("fp32"), "training"))
    print(f"  {'variant':22s} {'training':>9s} {'bound':>9s} {'/ bound':>8s} {'/ fp32':>7s}   (env steps/s)")
    for v in variants:
        train, bound = rates[(v, "training")], rates.get((Variant(v.precision), "bound"))
        print(f"  {v.name:22s} {train:9.0f} {bound or float('nan'):9.0f} "
              f"{train / bound if bound else float('nan'):8.2f} {train / plain if plain else float('nan'):7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--networks", default="profile,profile_64px,original")
    parser.add_argument("--variants", default="fp32,bf16,fp32_channels_last,bf16_channels_last,bf16_compiled,"
                                              "bf16_1_thread")
    args = parser.parse_args()
    params = load_params(args.params)
    device = setup_torch(params.compute)
    variants = [Variant.parse(name) for name in args.variants.split(",")]
    if resolve_precision(dataclasses.replace(params.compute, precision="auto"), device) is None:
        print("no bf16 units on this machine (auto would choose fp32): bf16 variants skipped")
        variants = [v for v in variants if v.precision == "fp32"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    params = dataclasses.replace(params, train_agent=dataclasses.replace(
        params.train_agent, num_envs=args.envs, num_steps=args.steps,
        bptt_steps=min(params.train_agent.bptt_steps, args.steps)))
    networks = {
        "profile": ("CPU profile (params.yaml)", params.agent),
        "profile_64px": ("CPU profile at 64x64 input", dataclasses.replace(params.agent, input_pool=1)),
        "original": ("original widths (16/32/32 at 64x64, fc 64, GRU 64)", original_network(params.agent))}
    for key in args.networks.split(","):
        name, agent = networks[key]
        simulator = dataclasses.replace(params.simulator, image_pool=agent.input_pool)   # only to pass validation
        report(name, dataclasses.replace(params, agent=agent, simulator=simulator), variants, args.updates)


if __name__ == "__main__":
    main()
