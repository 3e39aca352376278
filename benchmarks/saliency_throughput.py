"""Saliency maps per second over a 28-step simulated sample, against the naive way in the same run.

Ours: one forward pass of the SmoothGrad batch, then one backward per target (`rlinterp.saliency.saliency`).
Naive (the original's loop): a fresh forward + backward for every target. Both compute the same maps; the ratio
is the speed-up from sharing the forward pass across targets.

    python benchmarks/saliency_throughput.py [--targets 18] [--steps 28] [--checkpoint data/simulator/checkpoint.pt]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from rlinterp.agent.checkpoint import build_agent, load_agent
from rlinterp.files import file_sha256
from rlinterp.config import load_params
from rlinterp.runtime import setup_torch
from rlinterp.saliency import direction_target, saliency, value_target
from rlinterp.simulator.checkpoint import build_simulator, load_simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--agent", default="data/agent/checkpoint.pt")
    parser.add_argument("--checkpoint", default="data/simulator/checkpoint.pt")
    parser.add_argument("--targets", type=int, default=18)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = load_params(args.params)
    setup_torch(params.compute)
    torch.manual_seed(0)
    if Path(args.checkpoint).exists():
        agent, _ = load_agent(args.agent, expected=params.agent)
        simulator, _ = load_simulator(args.checkpoint, agent, file_sha256(args.agent))
    else:                                            # an untrained model does the same work
        agent = build_agent(params.agent).eval()
        simulator = build_simulator(params.simulator, agent).eval()
    agent.requires_grad_(False)
    rng = np.random.default_rng(0)
    targets = {"value": value_target, **{f"direction_{k}": direction_target(rng.standard_normal(agent.hidden_size),
                                                                            np.zeros(agent.hidden_size))
                                         for k in range(args.targets - 1)}}
    t = args.steps - 1
    latent = simulator.prior_latent(1)[0]
    cfg = params.saliency
    kwargs = dict(noise_samples=cfg.noise_samples, noise_scale=cfg.noise_scale)
    saliency(simulator, agent, latent, args.steps, {"value": value_target}, [t], **kwargs)   # warm-up
    start = time.perf_counter()
    for _ in range(args.repeats):
        saliency(simulator, agent, latent, args.steps, targets, [t], **kwargs)
    shared = args.repeats * len(targets) / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(args.repeats):
        for name, target in targets.items():
            saliency(simulator, agent, latent, args.steps, {name: target}, [t], **kwargs)
    naive = args.repeats * len(targets) / (time.perf_counter() - start)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps}-step sample, "
          f"{cfg.noise_samples} SmoothGrad copies, {len(targets)} targets at step {t}")
    print(f"  shared forward pass   {shared:7.2f} maps/s")
    print(f"  forward per target    {naive:7.2f} maps/s (the original's loop)")
    print(f"  ratio                 {shared / naive:7.2f}")


if __name__ == "__main__":
    main()
