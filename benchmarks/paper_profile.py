"""What the paper profile costs on this machine: each heavy stage's measured throughput, extrapolated to the
profile's full budget, with peak memory.

On the profile's device (profiles/paper.yaml: cuda), from nothing:
  train_agent      PPO updates of the original's shapes (256 envs x 256 steps, IMPALA 16/32/32, GRU 64)
  record           the (untrained) agent's rollouts into a temporary RolloutStore
  train_simulator  batches of the original-size simulator trained on that store
and for each the time the profile's budget would take at the measured rate, the GPU's mean utilisation while
measured (nvidia-smi), and peak memory. The record estimate uses --mean-length steps per episode (a trained
CoinRun agent's episodes are far shorter than a random one's). `--sim-batch-sizes 16,64,256` measures the
simulator at each batch size (how far a larger batch fills the GPU); `--ranks N` measures both training stages
again with N DDP ranks (torchrun, one GPU each) and prints the scaling efficiency against one rank, or says why not.

    python benchmarks/paper_profile.py [--params profiles/paper.yaml] [--agent-updates 2] [--sim-batches 40]
                                       [--sim-batch-sizes 16] [--ranks 1]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from rlinterp import distributed
from rlinterp.agent.checkpoint import build_agent
from rlinterp.agent.ppo import RolloutCollector, policy_and_value, ppo_update
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


@contextlib.contextmanager
def gpu_utilisation(device: torch.device) -> Iterator[list[float]]:
    """Samples of the GPU's utilisation (%) every 200 ms while inside (nvidia-smi); none on a CPU."""
    samples: list[float] = []
    if device.type != "cuda":
        yield samples
        return
    query = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                              "-i", str(device.index or 0), "-lms", "200"], stdout=subprocess.PIPE, text=True)
    try:
        yield samples
    finally:
        query.terminate()
        samples += [float(line) for line in query.communicate()[0].split() if line.strip().isdigit()]


def utilisation(samples: list[float]) -> str:
    return f"GPU busy {sum(samples) / len(samples):.0f}%" if samples else "GPU utilisation n/a"


def measure_agent(params, device: torch.device, updates: int, shard: distributed.Shard = distributed.Shard()
                  ) -> float:
    train = params.train_agent
    agent = build_agent(params.agent).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=train.learning_rate, eps=train.adam_eps)
    env = VecProcgen(params.env, shard.share(train.num_envs, "train_agent.num_envs"), seed=shard.rank)
    collector = RolloutCollector(env, agent, train, device, shard)
    policy = distributed.data_parallel(agent, policy_and_value, shard)
    generator = torch.Generator().manual_seed(0)
    collect_s = update_s = 0.0
    with gpu_utilisation(device) as busy:
        for index in range(updates + 1):                      # the first update warms up and is not timed
            tic = time.perf_counter()
            rollout, _ = collector.collect()
            synchronize(device)
            toc = time.perf_counter()
            ppo_update(agent, optimizer, rollout, train, generator, shard, policy)
            synchronize(device)
            if index:
                collect_s += toc - tic
                update_s += time.perf_counter() - toc
    steps = updates * train.num_envs * train.num_steps
    rate = steps / (collect_s + update_s)
    if shard.main:
        print(f"train_agent      {rate:9.0f} env steps/s ({collect_s / (collect_s + update_s):.0%} collecting) x "
              f"{shard.world} rank(s); {train.total_steps / 1e6:.0f}M steps: {hours(train.total_steps / rate)}; "
              f"{utilisation(busy)}; {peak_memory(device)}")
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


def measure_simulator(params, device: torch.device, store: Path, batches: int, tmp: Path, batch_size: int,
                      shard: distributed.Shard = distributed.Shard()) -> float:
    agent = build_agent(params.agent).to(device)
    config = dataclasses.replace(params.train_simulator, batch_size=batch_size)
    for name, count in (("warmup", 2), ("timed", batches)):   # cuDNN autotuning and loader start-up first
        run = dataclasses.replace(config, total_windows=count * config.batch_size, log_every=10**9,
                                  checkpoint_every=10**9)
        synchronize(device)
        tic = time.perf_counter()
        with gpu_utilisation(device) as busy:
            train_simulator(params.simulator, run, store, agent, "untrained", tmp / f"{name}{shard.rank}.pt",
                            device=str(device), progress=False)
            synchronize(device)
        seconds = time.perf_counter() - tic
    rate = batches * config.batch_size / seconds
    if shard.main:
        print(f"train_simulator  {rate:9.1f} windows/s ({config.batch_size} per batch, {params.simulator.num_sim_steps}"
              f" steps each) x {shard.world} rank(s); {config.total_windows / 1e6:.1f}M windows: "
              f"{hours(config.total_windows / rate)}; {utilisation(busy)}; {peak_memory(device)}")
    return rate


def batch_sizes(args: argparse.Namespace, params) -> list[int]:
    return [int(size) for size in args.sim_batch_sizes.split(",") if size] or [params.train_simulator.batch_size]


def ranks_available(device: torch.device, ranks: int) -> str | None:
    """Why `ranks` ranks cannot be measured here, or None."""
    if ranks > 1 and device.type == "cuda" and torch.cuda.device_count() < ranks:
        return f"only {torch.cuda.device_count()} GPU(s) here: {ranks}-rank scaling not measured, 1 rank reported"
    return None


def measure_ranks(args: argparse.Namespace, store: Path, tmp: Path, single: dict[str, float]) -> None:
    """Both training stages again under torchrun with `args.ranks` ranks, and their scaling efficiency."""
    out = tmp / "ranks.json"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}",
                    __file__, *sys.argv[1:], "--rank-store", str(store), "--rank-out", str(out)], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    rates = json.loads(out.read_text())
    for name, rate in rates.items():
        print(f"{name:16s} {args.ranks} ranks: {rate / single[name]:.2f}x one rank, scaling efficiency "
              f"{rate / (args.ranks * single[name]):.0%}")


def rank_main(args: argparse.Namespace, params, device: torch.device) -> None:
    """One rank of `measure_ranks`: rank 0 writes the measured rates."""
    shard, device = distributed.start(device)
    rates = {"train_agent": measure_agent(params, device, args.agent_updates, shard)}
    with tempfile.TemporaryDirectory() as tmp:
        rates["train_simulator"] = measure_simulator(params, device, Path(args.rank_store), args.sim_batches, Path(tmp),
                                                     batch_sizes(args, params)[-1], shard)
    if shard.main:
        Path(args.rank_out).write_text(json.dumps(rates))
    distributed.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="profiles/paper.yaml")
    parser.add_argument("--device", help="override compute.device")
    parser.add_argument("--agent-updates", type=int, default=2)
    parser.add_argument("--record-episodes-per-env", type=int, default=1)
    parser.add_argument("--mean-length", type=float, default=100.0, help="steps per recorded episode, trained agent")
    parser.add_argument("--sim-batches", type=int, default=40)
    parser.add_argument("--sim-batch-sizes", default="", help="comma-separated simulator batch sizes to measure "
                        "(default: the profile's)")
    parser.add_argument("--ranks", type=int, default=1, help="also measure the training stages with this many ranks")
    parser.add_argument("--rank-store", help=argparse.SUPPRESS)   # set for the ranks measure_ranks starts
    parser.add_argument("--rank-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    params = load_params(args.params)
    if args.device:
        params = dataclasses.replace(params, compute=dataclasses.replace(params.compute, device=args.device))
    device = setup_torch(params.compute)
    if args.rank_out:
        return rank_main(args, params, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{args.params} on {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    single = {"train_agent": measure_agent(params, device, args.agent_updates)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        measure_record(params, device, tmp / "rollouts.zarr", args.record_episodes_per_env, args.mean_length)
        for size in batch_sizes(args, params):   # the last is the one N ranks are compared at
            single["train_simulator"] = measure_simulator(params, device, tmp / "rollouts.zarr", args.sim_batches,
                                                          tmp, size)
        if args.ranks > 1:
            reason = ranks_available(device, args.ranks)
            if reason:
                print(reason)
            else:
                measure_ranks(args, tmp / "rollouts.zarr", tmp, single)


if __name__ == "__main__":
    main()
