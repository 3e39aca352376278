"""UMAP embedding of `analysis.embedding_samples` rows: `rlinterp.analysis.cluster.embed` (exact distances from
sklearn, passed as precomputed) against UMAP's own small-data path on the same rows, in one run.

    python benchmarks/umap_embedding.py [--rows N] [--dims 64]

Below 4,096 rows UMAP itself finds exact neighbours from all pairwise distances, calling its numba metric once
per pair from Python. Both paths build the same fuzzy neighbour graph (printed: the largest difference of its
weights); numba compiles each path's functions before the timed runs.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import umap
from sklearn.metrics import pairwise_distances

from rlinterp.analysis.cluster import embed
from rlinterp.config import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--rows", type=int, default=None, help="default: analysis.embedding_samples")
    parser.add_argument("--dims", type=int, default=64)
    args = parser.parse_args()
    rows = args.rows or load_params(args.params).analysis.embedding_samples
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, args.dims)) * 2
    x = (centres[rng.integers(20, size=rows)] + rng.exponential(1.0, (rows, args.dims))).astype(np.float32)

    def umap_default() -> np.ndarray:
        return umap.UMAP(n_components=2, n_neighbors=15, random_state=0).fit_transform(x)

    def ours() -> np.ndarray:
        return embed(x, "umap", seed=0)

    timings = {}
    for name, run in (("umap default", umap_default), ("rlinterp embed", ours)):
        run()                                                 # numba compilation
        start = time.perf_counter()
        run()
        timings[name] = time.perf_counter() - start
        print(f"  {name:15s} {timings[name]:6.1f} s")
    graphs = [umap.UMAP(n_neighbors=15, random_state=0).fit(x).graph_,
              umap.UMAP(n_neighbors=15, random_state=0, metric="precomputed").fit(pairwise_distances(x)).graph_]
    print(f"{rows} x {args.dims} rows: speed-up {timings['umap default'] / timings['rlinterp embed']:.1f}x; "
          f"largest neighbour-graph weight difference {abs(graphs[0] - graphs[1]).max():.1e}")


if __name__ == "__main__":
    main()
