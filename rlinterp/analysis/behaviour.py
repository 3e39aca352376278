"""Behaviours: clusters of combined agent-and-environment dynamics over short windows of simulated rollouts.

The original's features (ORIGINAL.md section 6.4): the state x_t = [agent hx, leading simulator-state PCs] and
its changes x_t - x_{t+k} for a few lags k, for every step t that has all lags ahead of it. Each window is
clustered; a sample's behaviour is the most common cluster of its windows. The same clustering of null states
(structureless ones, and untrained agents' on the same frames) says whether the behaviours are more than what
any states would give.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_samples

from rlinterp.analysis.cluster import cluster, subsample
from rlinterp.analysis.decompose import shuffled_columns, standardise
from rlinterp.analysis.states import gaussian_like, pooled_structure
from rlinterp.files import read_npz
from rlinterp.intervals import mean_interval


@dataclass
class BehaviourLabels:
    """labels.npz: the cluster of every window (samples, windows) and each sample's behaviour (samples,)."""
    window_labels: np.ndarray
    behaviour: np.ndarray

    def save(self, path) -> None:
        np.savez(path, window_labels=self.window_labels, behaviour=self.behaviour)

    @classmethod
    def load(cls, path) -> BehaviourLabels:
        data = read_npz(path)
        return cls(data["window_labels"], data["behaviour"])


def dynamics_features(states: np.ndarray, lags: tuple[int, ...]) -> np.ndarray:
    """states (S, T, D) -> (S, T - max(lags), D * (1 + len(lags))): [x_t, x_t - x_{t+k} for each lag k]."""
    keep = states.shape[1] - max(lags)
    if keep < 1:
        raise ValueError(f"samples of {states.shape[1]} steps are too short for lags {list(lags)}")
    parts = [states[:, :keep]] + [states[:, :keep] - states[:, k:k + keep] for k in lags]
    return np.concatenate(parts, axis=-1)


def sample_modes(labels: np.ndarray, clusters: int) -> np.ndarray:
    """labels (S, W) -> (S,) most common label per sample (ties to the lower label)."""
    counts = np.stack([np.bincount(row, minlength=clusters) for row in labels])
    return counts.argmax(1)


MAX_SCORED_WINDOWS = 6000   # silhouettes cost windows^2 distances: whole samples are scored up to this many windows


def behaviour_quality(reduced: np.ndarray, labels: np.ndarray, samples: int, seed: int) -> dict:
    """Silhouette and within-sample agreement (the share of a sample's windows in its behaviour), each a mean
    over samples with its 95% CI, so clusterings of different states compare by their intervals."""
    windows = len(labels) // samples
    window_labels = labels.reshape(samples, windows)
    agreement = (window_labels == sample_modes(window_labels, int(labels.max()) + 1)[:, None]).mean(1)
    scored = subsample(samples, max(2, MAX_SCORED_WINDOWS // windows), np.random.default_rng(seed))
    rows = (scored[:, None] * windows + np.arange(windows)).ravel()
    per_window = (silhouette_samples(reduced[rows], labels[rows]) if len(np.unique(labels[rows])) > 1
                  else np.full(len(rows), np.nan))
    return {"silhouette": mean_interval(per_window.reshape(len(scored), windows).mean(1)),
            "within_sample_agreement": mean_interval(agreement)}


def _cluster_windows(states: np.ndarray, lags: tuple[int, ...], clusters: int, method: str, seed: int,
                     components: int) -> tuple[np.ndarray, dict, int]:
    """Window labels (S * W,), their quality and the feature count."""
    features = dynamics_features(states, lags)
    flat = features.reshape(-1, features.shape[-1])
    mean, scale = standardise(flat)
    z = (flat - mean) / scale
    reduced = PCA(n_components=min(components, z.shape[1], len(z)), random_state=seed).fit_transform(z)
    labels = cluster(reduced, clusters, method, seed, subsample(len(reduced), 20000, np.random.default_rng(seed)))
    return labels, behaviour_quality(reduced, labels, len(states), seed), flat.shape[1]


def cluster_behaviours(states: np.ndarray, lags: tuple[int, ...], clusters: int, method: str, seed: int,
                       nulls: dict[str, np.ndarray | list[np.ndarray]] | None = None, components: int = 32
                       ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Window labels (S, W), sample behaviours (S,), and the clustering's quality beside the same clustering of
    null states of the same shape: `nulls` given by the caller (e.g. untrained agents' hx on the same frames; a
    list holds draws of one null, e.g. one per initialisation, pooled by `envelope`), and always every state
    dimension shuffled independently over all steps (`shuffled_columns`) and a Gaussian with the states'
    covariance (`gaussian`): both keep no order in time, so they also give the agreement a clustering of
    structureless windows reaches. `beats_nulls` says, per null and measure, whether the lower CI
    bound of the states' value lies above the null's upper bound."""
    rng = np.random.default_rng(seed)
    rows = states.reshape(-1, states.shape[-1])
    nulls = {"shuffled_columns": shuffled_columns(rows, rng).reshape(states.shape),
             "gaussian": gaussian_like(rows, rng).reshape(states.shape), **(nulls or {})}
    labels, quality, features = _cluster_windows(states, lags, clusters, method, seed, components)
    null_quality = {name: pooled_structure([_cluster_windows(draw, lags, clusters, method, seed, components)[1]
                                            for draw in (null if isinstance(null, list) else [null])])
                    for name, null in nulls.items()}
    window_labels = labels.reshape(len(states), -1)
    metrics = {"windows": int(len(labels)), "features": features, "clusters": int(labels.max()) + 1, **quality,
               "nulls": null_quality,
               "beats_nulls": {name: {measure: bool(quality[measure]["ci95_low"] > null[measure]["ci95_high"])
                                      for measure in quality} for name, null in null_quality.items()}}
    return window_labels, sample_modes(window_labels, metrics["clusters"]), metrics
