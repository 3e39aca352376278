"""How much do the hx analyses' headline numbers move when the fit itself is redrawn? (issue 23)

`metrics/analysis/*.json` give the ICs' kurtosis and the clusters' silhouette with a bootstrap interval over
episodes that holds the fitted ICs and clusters fixed. This refits them (`rlinterp.analysis.states.structure`: the
fit subsample, FastICA's start and k-means' start all follow the seed) with several `analysis.seed` values on the
same recorded hx, its untrained-agent null and its Gaussian null, and also redraws the untrained agent itself
(another random initialisation, fit seed 0). It prints each number per seed, and the ratio of the refits' spread
(max - min) to the width of one bootstrap interval: below 1, the intervals already cover the fit's own variability;
above, read the intervals as too narrow by about that much. About 6 minutes on 2 cores.

    python benchmarks/analysis_refits.py [--seeds 0,1,2,3,4] [--store data/rollouts.zarr]
"""
from __future__ import annotations

import argparse
import numpy as np

from rlinterp.agent.acting import untrained_hidden_state_draws
from rlinterp.analysis.states import gaussian_like, structure
from rlinterp.config import load_params
from rlinterp.store import RolloutStore

MEASURES = ("ica_mean_abs_excess_kurtosis", "silhouette")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--store", default="data/rollouts.zarr")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="analysis.seed values to refit with")
    args = parser.parse_args()
    params = load_params(args.params)
    config = params.analysis
    seeds = [int(s) for s in args.seeds.split(",")]
    store = RolloutStore(args.store)
    hx = np.asarray(store["hx"][:], dtype=np.float64)
    episodes = store.positions(np.arange(store.num_steps))[0]
    untrained = [np.asarray(x, np.float64) for x in untrained_hidden_state_draws(params.agent, store, 0, len(seeds))]
    states = {"recorded hx": (hx, episodes),
              "untrained agent (init seed 0)": (untrained[0], episodes),
              "gaussian": (gaussian_like(hx, np.random.default_rng(0)), np.arange(len(hx)))}
    results: dict[str, dict[str, list[dict]]] = {}

    def measure_into(name: str, x: np.ndarray, groups: np.ndarray, seed: int) -> None:
        measured, _ = structure(x, groups, config, seed)
        for measure in MEASURES:
            results.setdefault(measure, {}).setdefault(name, []).append(measured[measure])

    for name, (x, groups) in states.items():
        for seed in seeds:
            measure_into(name, x, groups, seed)
    for x in untrained[1:]:
        measure_into(f"untrained agent, fit seed 0, init seed 1-{len(seeds) - 1}", x, episodes, 0)

    print(f"{len(hx)} recorded steps of {store.num_episodes} episodes; fit seeds {seeds}, {config.fit_samples} "
          f"fit rows; each cell: mean (bootstrap 95% interval)")
    for measure, rows in results.items():
        print(f"\n{measure}")
        for name, values in rows.items():
            means = np.array([v["mean"] for v in values])
            width = np.mean([v["ci95_high"] - v["ci95_low"] for v in values])
            cells = "  ".join(f"{v['mean']:.3f} ({v['ci95_low']:.3f}-{v['ci95_high']:.3f})" for v in values)
            print(f"  {name:44s} {cells}")
            print(f"  {'':44s} refit spread {np.ptp(means):.3f} / interval width {width:.3f} = "
                  f"{np.ptp(means) / width:.2f}")


if __name__ == "__main__":
    main()
