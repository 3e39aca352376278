"""Analysing a million steps of agent hx: wall time and peak memory of `analyse_states` on the default params,
against the targets (5 minutes, 4 GB on 2 cores).

    python benchmarks/analysis_scale.py [--rows 1000000] [--dims 64]

The states are synthetic (clustered, with skewed independent factors) so the benchmark needs no trained agent;
the analysis does the same work on real hx of the same shape.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from rlinterp.analysis.states import analyse_states
from rlinterp.config import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=64)
    args = parser.parse_args()
    config = load_params(args.params).analysis
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, args.dims)) * 2
    x = (centres[rng.integers(20, size=args.rows)] + rng.exponential(1.0, (args.rows, args.dims))).astype(np.float32)
    start = time.perf_counter()
    result = analyse_states(x, config)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"{args.rows} x {args.dims} states; fit on {config.fit_samples}, embedded {config.embedding_samples} "
          f"({', '.join(config.embedding_methods)}), {result.metrics['clusters']} {config.cluster_method} clusters")
    print(f"  wall time   {seconds:7.1f} s   ratio to the 300 s target {seconds / 300:5.2f} (<= 1 meets it)")
    print(f"  peak RSS    {peak_gb:7.2f} GB  ratio to the 4 GB target  {peak_gb / 4:5.2f} (<= 1 meets it)")


if __name__ == "__main__":
    main()
