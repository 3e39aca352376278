"""Simulator training throughput (windows/s) against the compute bound of the same model, measured in one run.

Every variant runs the training objective (`window_loss`: teacher-forced and open-loop rollouts) with its backward
pass and Adam step, on the trained agent's config:
  streamed  batches read from the store by the window loader, as the train_simulator stage does
  bound     one batch held in memory, repeated: no data loading (the ratio streamed / bound says what loading costs)
  stepped   the bound's batch with the decoder and the agent's CNN stepped inside the simulated loop
            (`rollout(batched=False)`), as before they ran once over all steps where actions are recorded
  fp32      the bound's batch with the agent's encoder in fp32, where `compute.precision` gives bf16
The variants are interleaved, round by round, so a change in machine load hits all alike; each reports its best
round.

    python benchmarks/simulator_throughput.py [--batches 20] [--rounds 3] [--store data/rollouts.zarr]
"""
from __future__ import annotations

import argparse
import functools
import time

import torch

from rlinterp.agent.checkpoint import build_agent
from rlinterp.config import load_params
from rlinterp.runtime import describe_precision, resolve_precision, setup_torch
from rlinterp.simulator.checkpoint import build_simulator
from rlinterp.simulator.data import simulator_split, window_loader
from rlinterp.simulator.losses import window_from_batch, window_loss
from rlinterp.simulator.model import Simulator
from rlinterp.simulator.train import train_step
from rlinterp.store import RolloutStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--store", default="data/rollouts.zarr")
    parser.add_argument("--batches", type=int, default=10, help="batches per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    params = load_params(args.params)
    device = setup_torch(params.compute)
    sim, config = params.simulator, params.train_simulator
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(sim, agent)
    optimizer = torch.optim.Adam(simulator.parameters(), lr=config.learning_rate)
    store = RolloutStore(args.store)
    length = sim.num_init_steps + sim.num_sim_steps - 1
    loader = window_loader(args.store, simulator_split(store, config).train, sim.num_init_steps, length,
                           config.batch_size, 0, config.num_workers)

    def step(batch: dict[str, torch.Tensor]) -> None:
        train_step(lambda window: window_loss(simulator, agent, window, config), simulator, optimizer,
                   window_from_batch(batch, simulator), config.max_grad_norm)

    precision = resolve_precision(params.compute, device)

    def windows_per_s(next_batch, batched: bool = True, dtype: torch.dtype | None = precision) -> float:
        simulator.rollout = functools.partial(Simulator.rollout, simulator, batched=batched)
        agent.set_precision(dtype)
        start = time.perf_counter()
        for _ in range(args.batches):
            step(next_batch())
        return args.batches * config.batch_size / (time.perf_counter() - start)

    fixed = next(loader)
    step(fixed)                                         # warm-up
    variants = {"bound": {}, "stepped": {"batched": False}, "streamed": {}}
    if precision is not None:
        variants["fp32"] = {"dtype": None}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, options in variants.items():
            rates[name].append(windows_per_s((lambda: next(loader)) if name == "streamed" else (lambda: fixed),
                                             **options))
    best = {name: max(values) for name, values in rates.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads on {device}, agent encoder "
          f"{describe_precision(precision)}, {config.num_workers} loader workers; batch {config.batch_size} windows x "
          f"{sim.num_sim_steps} simulated steps (open_loop_weight {config.open_loop_weight}: "
          f"{'two rollouts' if config.open_loop_weight > 0 else 'one rollout'} per window), "
          f"frames {64 // sim.image_pool}px; best of {args.rounds} rounds of {args.batches} batches")
    print(f"  streamed (the stage)                  {best['streamed']:7.1f} windows/s")
    print(f"  bound (batch in memory)               {best['bound']:7.1f} windows/s")
    print(f"  stepped decoder and CNN (in memory)   {best['stepped']:7.1f} windows/s")
    print(f"  streamed / bound                      {best['streamed'] / best['bound']:7.2f}   (target >= 0.80)")
    print(f"  batched over time / stepped           {best['bound'] / best['stepped']:7.2f}")
    if precision is not None:
        print(f"  fp32 agent encoder (in memory)        {best['fp32']:7.1f} windows/s")
        print(f"  bf16 / fp32                           {best['bound'] / best['fp32']:7.2f}")


if __name__ == "__main__":
    main()
