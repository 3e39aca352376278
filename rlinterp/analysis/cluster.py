"""Clustering and 2-D embeddings of PCA loadings. Pure functions on arrays.

Super-linear methods (t-SNE, UMAP, Ward) run on an explicit subsample; k-means is fitted on a subsample too
and then labels every row (linear in the number of rows), so a million steps stay cheap.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.manifold import TSNE
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import KNeighborsClassifier


def subsample(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of min(size, count) rows drawn without replacement."""
    return np.sort(rng.choice(count, size=min(size, count), replace=False))


def cluster(x: np.ndarray, k: int, method: str, seed: int, fit_rows: np.ndarray) -> np.ndarray:
    """Labels (N,) of every row of x: k-means, or Ward agglomeration on the `fit_rows` subsample extended to all
    rows by their nearest clustered neighbour. Labels are renumbered by decreasing cluster size."""
    k = min(k, len(fit_rows))
    if method == "kmeans":
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x[fit_rows]).predict(x)
    elif method == "ward":
        fitted = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(x[fit_rows])
        labels = KNeighborsClassifier(n_neighbors=1).fit(x[fit_rows], fitted).predict(x)
    else:
        raise ValueError(f"cluster method {method!r}: expected kmeans or ward")
    sizes = np.bincount(labels, minlength=k)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(k)
    return rank[labels]


UMAP_EXACT_ROWS = 4096   # UMAP's own threshold for exact (all-pairs) nearest neighbours


def embed(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    """2-D embedding (N, 2) of x (already subsampled): t-SNE (PCA init) or UMAP."""
    if method == "tsne":
        perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    if method == "umap":
        import umap   # imported here: numba compiles on first import, which costs a minute
        # Below UMAP_EXACT_ROWS UMAP finds exact neighbours from all pairwise distances, which it computes by
        # calling its numba metric once per pair from Python (~20 s for 3,000 rows); the same exact distances
        # from sklearn take a blink.
        exact = len(x) < UMAP_EXACT_ROWS
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed,
                            metric="precomputed" if exact else "euclidean")
        return reducer.fit_transform(pairwise_distances(x) if exact else x)
    raise ValueError(f"embedding method {method!r}: expected tsne or umap")
