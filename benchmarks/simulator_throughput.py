"""Simulator training throughput against the compute bound of the same model, measured in one run.

Training: real batches streamed from the store by the window loader (as the train_simulator stage does).
Bound: the same forward + backward + Adam step on one batch already in memory, repeated (no data loading).
The ratio says how much data loading costs (target >= 0.8).

    python benchmarks/simulator_throughput.py [--batches 20] [--store data/rollouts.zarr]
"""
from __future__ import annotations

import argparse
import time

import torch

from rlinterp.agent.checkpoint import build_agent
from rlinterp.config import load_params
from rlinterp.runtime import setup_torch
from rlinterp.simulator.data import simulator_split, window_loader
from rlinterp.simulator.losses import simulator_loss, window_from_batch
from rlinterp.simulator.checkpoint import build_simulator
from rlinterp.store import RolloutStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--store", default="data/rollouts.zarr")
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    params = load_params(args.params)
    setup_torch(params.compute)
    sim, config = params.simulator, params.train_simulator
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(sim, agent)
    optimizer = torch.optim.Adam(simulator.parameters(), lr=config.learning_rate)
    store = RolloutStore(args.store)
    train, _ = simulator_split(store, config)
    length = sim.num_init_steps + sim.num_sim_steps - 1
    loader = window_loader(args.store, train, sim.num_init_steps, length, config.batch_size, 0, config.num_workers)

    def train_step(batch: dict[str, torch.Tensor]) -> None:
        window = window_from_batch(batch, simulator)
        latent = simulator.encode(window.context)
        rollout = simulator.rollout(latent.value, agent, sim.num_sim_steps, frames=window.frames,
                                    actions=window.action, agent_hx=window.hx_prev, action_prev=window.action_prev)
        loss, _ = simulator_loss(simulator, latent, rollout, window, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(simulator.parameters(), config.max_grad_norm)
        optimizer.step()

    fixed = next(loader)
    train_step(fixed)                                   # warm-up
    steps = args.batches * config.batch_size * sim.num_sim_steps
    start = time.perf_counter()
    for _ in range(args.batches):
        train_step(fixed)
    bound = steps / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(args.batches):
        train_step(next(loader))
    actual = steps / (time.perf_counter() - start)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {config.num_workers} loader workers; "
          f"batch {config.batch_size} x {sim.num_sim_steps} simulated steps, frames {64 // sim.image_pool}px")
    print(f"  training (streamed windows)   {actual:8.0f} simulated steps/s")
    print(f"  compute bound (batch in RAM)  {bound:8.0f} simulated steps/s")
    print(f"  ratio                         {actual / bound:8.2f}   (target >= 0.80)")


if __name__ == "__main__":
    main()
