"""Behaviours: clusters of combined agent-and-environment dynamics over short windows of simulated rollouts.

The original's features (ORIGINAL.md section 6.4): the state x_t = [agent hx, leading simulator-state PCs] and
its changes x_t - x_{t+k} for a few lags k, for every step t that has all lags ahead of it. Each window is
clustered; a sample's behaviour is the most common cluster of its windows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from rlinterp.analysis.cluster import cluster, silhouette, subsample
from rlinterp.analysis.decompose import shuffled_columns, standardise


@dataclass
class BehaviourLabels:
    """labels.npz: the cluster of every window (samples, windows) and each sample's behaviour (samples,)."""
    window_labels: np.ndarray
    behaviour: np.ndarray

    def save(self, path) -> None:
        np.savez(path, window_labels=self.window_labels, behaviour=self.behaviour)

    @classmethod
    def load(cls, path) -> BehaviourLabels:
        with np.load(path) as data:
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


def cluster_behaviours(states: np.ndarray, lags: tuple[int, ...], clusters: int, method: str, seed: int,
                       components: int = 32) -> tuple[np.ndarray, np.ndarray, dict]:
    """Window labels (S, W), sample behaviours (S,), and quality metrics beside a column-shuffled baseline."""
    features = dynamics_features(states, lags)
    samples, windows = features.shape[:2]
    flat = features.reshape(samples * windows, -1)
    mean, scale = standardise(flat)
    z = (flat - mean) / scale
    rng = np.random.default_rng(seed)
    k = min(components, z.shape[1], len(z))
    reduced = PCA(n_components=k, random_state=seed).fit_transform(z)
    labels = cluster(reduced, clusters, method, seed, subsample(len(reduced), 20000, rng))
    shuffled = PCA(n_components=k, random_state=seed).fit_transform(shuffled_columns(z, rng))
    shuffled_labels = cluster(shuffled, clusters, method, seed, subsample(len(shuffled), 20000, rng))
    rows = subsample(len(reduced), 2000, rng)
    window_labels = labels.reshape(samples, windows)
    behaviours = sample_modes(window_labels, int(labels.max()) + 1)
    metrics = {"windows": int(len(flat)), "features": int(flat.shape[1]), "clusters": int(labels.max()) + 1,
               "silhouette": silhouette(reduced, labels, rows, seed),
               "silhouette_shuffled": silhouette(shuffled, shuffled_labels, rows, seed),
               "within_sample_agreement": float((window_labels == behaviours[:, None]).mean())}
    permuted = rng.permutation(labels).reshape(samples, windows)     # same cluster sizes, no temporal coherence
    metrics["within_sample_agreement_shuffled"] = float(
        (permuted == sample_modes(permuted, metrics["clusters"])[:, None]).mean())
    return window_labels, behaviours, metrics
