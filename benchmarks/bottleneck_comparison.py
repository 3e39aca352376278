"""Which bottleneck gives better samples: the original's unit sphere or a VAE? Trains the simulator both ways
with the same budget, data and seed, and prints for each: held-out open-loop frame MSE (informed samples)
relative to copy-last-frame, and how far random-prior rollouts' agent hx and frames lie from real ones
(nearest-neighbour distance relative to held-out real steps; 1 = as close as unseen real data).

    python benchmarks/bottleneck_comparison.py [--windows 8000] [--store data/rollouts.zarr]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path


from rlinterp.agent.checkpoint import load_agent
from rlinterp.files import file_sha256
from rlinterp.config import load_params
from rlinterp.runtime import setup_torch
from rlinterp.simulator.data import batches_of, heldout_windows, simulator_split
from rlinterp.simulator.evaluate import evaluate_simulator, prior_realism
from rlinterp.simulator.train import real_steps, train_simulator
from rlinterp.store import RolloutStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--agent", default="data/agent/checkpoint.pt")
    parser.add_argument("--store", default="data/rollouts.zarr")
    parser.add_argument("--windows", type=int, default=8000)
    args = parser.parse_args()
    params = load_params(args.params)
    setup_torch(params.compute)
    agent, _ = load_agent(args.agent, expected=params.agent)
    sha = file_sha256(args.agent)
    store = RolloutStore(args.store)
    config = dataclasses.replace(params.train_simulator, total_windows=args.windows)
    split = simulator_split(store, config)
    rows = []
    for bottleneck in ("sphere", "vae"):
        sim_config = dataclasses.replace(params.simulator, bottleneck=bottleneck)
        with tempfile.TemporaryDirectory() as tmp:
            simulator, _ = train_simulator(sim_config, config, args.store, agent, sha, Path(tmp) / "sim.pt")
        length = sim_config.num_init_steps + sim_config.num_sim_steps - 1
        windows = heldout_windows(store, split.validation, sim_config.num_init_steps, length, config.eval_windows,
                                  config.split_seed)
        reference = real_steps(store, split.train, simulator)
        report = evaluate_simulator(simulator, agent, batches_of(windows, config.batch_size), config,
                                    reference["frames"].mean(0))
        realism = prior_realism(simulator, agent, reference, real_steps(store, split.validation, simulator, 1024),
                                samples=64, steps=sim_config.num_sim_steps, seed=config.seed)
        rows.append((bottleneck, report["obs_mse_ratio_to_copy_last_frame"], realism["prior_hx_nn_ratio"],
                     realism["prior_frames_nn_ratio"]))
    print(f"{args.windows} training windows each; lower is better in every column")
    print(f"{'bottleneck':>10}  {'open-loop MSE / copy-last':>26}  {'prior hx NN ratio':>18}  {'prior frame NN ratio':>21}")
    for name, mse, hx, frames in rows:
        print(f"{name:>10}  {mse:26.3f}  {hx:18.2f}  {frames:21.2f}")


if __name__ == "__main__":
    main()
