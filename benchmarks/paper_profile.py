"""What the paper profile costs on this machine: each heavy stage's measured throughput, extrapolated to the
profile's full budget, with peak memory.

On the profile's device (profiles/paper.yaml: cuda), from nothing:
  train_agent      PPO updates of the original's shapes (256 envs x 256 steps, IMPALA 16/32/32, GRU 64)
  record           the (untrained) agent's rollouts into a temporary RolloutStore
  train_simulator  batches of the original-size simulator trained on that store
and for each the time the profile's budget would take at the measured rate. The record estimate uses
--mean-length steps per episode (a trained CoinRun agent's episodes are far shorter than a random one's).

    python benchmarks/paper_profile.py [--params profiles/paper.yaml] [--agent-updates 2] [--sim-batches 40]
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import torch

from rlinterp.agent.checkpoint import build_agent
from rlinterp.agent.ppo import RolloutCollector, ppo_update
from rlinterp.config import load_params
from rlinterp.envs import NUM_ACTIONS, VecProcgen
from rlinterp.record import record_rollouts
from rlinterp.runtime import setup_torch
from rlinterp.simulator.train import train_simulator
from rlinterp.store import RolloutStore, RolloutWriter, real_rollout_fields


def peak_memory(device: torch.device) -> str:
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device.type != "cuda":
        return f"host peak {host:.1f} GiB"
    gpu = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return f"host peak {host:.1f} GiB, GPU peak {gpu:.1f} GiB"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:7.1f} h"


def measure_agent(params, device: torch.device, updates: int) -> float:
    train = params.train_agent
    agent = build_agent(params.agent).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=train.learning_rate, eps=train.adam_eps)
    collector = RolloutCollector(VecProcgen(params.env, train.num_envs, seed=0), agent, train, device)
    collect_s = update_s = 0.0
    for index in range(updates + 1):                      # the first update warms up and is not timed
        tic = time.perf_counter()
        rollout, _ = collector.collect()
        synchronize(device)
        toc = time.perf_counter()
        ppo_update(agent, optimizer, rollout, train)
        synchronize(device)
        if index:
            collect_s += toc - tic
            update_s += time.perf_counter() - toc
    steps = updates * train.num_envs * train.num_steps
    rate = steps / (collect_s + update_s)
    print(f"train_agent      {rate:9.0f} env steps/s ({collect_s / (collect_s + update_s):.0%} collecting); "
          f"{train.total_steps / 1e6:.0f}M steps: {hours(train.total_steps / rate)}; {peak_memory(device)}")
    return rate


def measure_record(params, device: torch.device, store: Path, episodes_per_env: int, mean_length: float) -> None:
    agent = build_agent(params.agent).to(device).eval()
    fields = real_rollout_fields(params.agent.hidden_size, NUM_ACTIONS)
    tic = time.perf_counter()
    with RolloutWriter(store, fields, {"agent_sha256": "untrained"}, params.record.chunk_steps,
                       params.record.shard_steps) as writer:
        steps = record_rollouts(params.env, agent, writer, params.record.num_envs, episodes_per_env, seed=0,
                                device=device, progress=False)
    rate = steps / (time.perf_counter() - tic)
    budget = params.record.episodes * mean_length
    print(f"record           {rate:9.0f} env steps/s; {params.record.episodes} episodes x {mean_length:.0f} steps: "
          f"{hours(budget / rate)}; recorded {RolloutStore(store).num_steps} steps; {peak_memory(device)}")


def measure_simulator(params, device: torch.device, store: Path, batches: int, tmp: Path) -> None:
    agent = build_agent(params.agent).to(device)
    config = params.train_simulator
    for name, count in (("warmup", 2), ("timed", batches)):   # cuDNN autotuning and loader start-up first
        run = dataclasses.replace(config, total_windows=count * config.batch_size, log_every=10**9,
                                  checkpoint_every=10**9)
        synchronize(device)
        tic = time.perf_counter()
        train_simulator(params.simulator, run, store, agent, "untrained", tmp / f"{name}.pt", device=str(device),
                        progress=False)
        synchronize(device)
        seconds = time.perf_counter() - tic
    rate = batches * config.batch_size / seconds
    print(f"train_simulator  {rate:9.1f} windows/s ({config.batch_size} per batch, {params.simulator.num_sim_steps} "
          f"steps each); {config.total_windows / 1e6:.1f}M windows: {hours(config.total_windows / rate)}; "
          f"{peak_memory(device)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="profiles/paper.yaml")
    parser.add_argument("--device", help="override compute.device")
    parser.add_argument("--agent-updates", type=int, default=2)
    parser.add_argument("--record-episodes-per-env", type=int, default=1)
    parser.add_argument("--mean-length", type=float, default=100.0, help="steps per recorded episode, trained agent")
    parser.add_argument("--sim-batches", type=int, default=40)
    args = parser.parse_args()
    params = load_params(args.params)
    if args.device:
        params = dataclasses.replace(params, compute=dataclasses.replace(params.compute, device=args.device))
    device = setup_torch(params.compute)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.params} on {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    measure_agent(params, device, args.agent_updates)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        measure_record(params, device, tmp / "rollouts.zarr", args.record_episodes_per_env, args.mean_length)
        measure_simulator(params, device, tmp / "rollouts.zarr", args.sim_batches, tmp)


if __name__ == "__main__":
    main()
