"""How many of each episode's first steps are a reset transient in the recorded agent hx? (issue 37, item 9)

The hx analyses leave each episode's first `analysis.reset_steps` steps out of the structure they compare with their
nulls, because a GRU state built up from zeros can put one IC's extremes at the reset. This prints, per episode step
t, the mean over episodes of the largest |z| among the ICs (the fitted basis of `data/analysis/agent_hx_real`) and
the share of IC activations beyond |z| = 5, beside the same for every step from `--settled` on; the ratio of the two
shows where the transient ends. Seconds on 2 cores, after `dvc repro analyse@agent_hx_real`.

    python benchmarks/reset_transient.py [--store data/rollouts.zarr] [--basis data/analysis/agent_hx_real/basis.npz]
"""
from __future__ import annotations

import argparse

import numpy as np

from rlinterp.analysis.decompose import Basis
from rlinterp.store import RolloutStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="data/rollouts.zarr")
    parser.add_argument("--basis", default="data/analysis/agent_hx_real/basis.npz")
    parser.add_argument("--steps", type=int, default=12, help="first episode steps shown one by one")
    parser.add_argument("--settled", type=int, default=12, help="steps from here on are the settled reference")
    args = parser.parse_args()
    store = RolloutStore(args.store)
    sources = Basis.load(args.basis).ica(np.asarray(store["hx"][:]))
    z = np.abs((sources - sources.mean(0)) / sources.std(0))
    _, step, _ = store.positions(np.arange(store.num_steps))

    def row(rows: np.ndarray) -> tuple[float, float]:
        return float(z[rows].max(1).mean()), float((z[rows] > 5).mean())

    settled = row(step >= args.settled)
    print(f"{args.store}: {store.num_episodes} episodes; steps >= {args.settled}: largest |z| {settled[0]:.2f}, "
          f"share beyond 5: {settled[1]:.4f}")
    print("step  episodes  largest |z|  ratio to settled  share |z| > 5  ratio to settled")
    for t in range(args.steps):
        rows = step == t
        largest, beyond = row(rows)
        print(f"{t:4d}  {rows.sum():8d}  {largest:11.2f}  {largest / settled[0]:16.2f}  {beyond:13.4f}  "
              f"{beyond / max(settled[1], 1e-12):16.2f}")


if __name__ == "__main__":
    main()
