"""Analyses recover planted structure: independent sources, clusters; bases round-trip; baselines show none."""
from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.metrics import adjusted_rand_score

from rlinterp.analysis.behaviour import cluster_behaviours, dynamics_features
from rlinterp.analysis.cluster import cluster, embed
from rlinterp.analysis.decompose import Basis, fit_basis, shuffled_columns
from rlinterp.analysis.states import analyse_states


def mixture(n=6000, seed=0):
    """Four independent, non-Gaussian sources (skewed, of different scales) linearly mixed into 10 dims + noise."""
    rng = np.random.default_rng(seed)
    sources = np.stack([rng.exponential(1.0, n) - 1, rng.laplace(0, 1, n), rng.uniform(-1.7, 1.7, n),
                        rng.exponential(1.0, n) - 1], axis=1) * np.array([4.0, 3.0, 2.0, 1.0])
    mixing = rng.standard_normal((4, 10))
    return sources, sources @ mixing + 0.01 * rng.standard_normal((n, 10)) + 5.0


def test_ica_recovers_independent_sources():
    sources, x = mixture()
    basis, _ = fit_basis(x, pca_components=10, ica_components=4, nmf_components=2, seed=0, outlier_sigma=0)
    recovered = basis.ica(x)
    corr = np.abs(np.corrcoef(sources.T, recovered.T)[:4, 4:])
    assert (corr.max(axis=1) > 0.95).all(), corr
    assert sorted(corr.argmax(axis=1)) == [0, 1, 2, 3]           # one recovered component per source
    # the raw-space directions reconstruct the data from the sources
    reconstruction = basis.mean + recovered @ basis.ica_directions
    assert np.abs(reconstruction - x).mean() < 0.05 * np.abs(x - x.mean(0)).mean()
    assert np.all(np.diff(basis.ica_variance_ratio) <= 1e-12)     # ordered by variance explained


def test_canonical_components_do_not_depend_on_the_seed():
    _, x = mixture()
    first, _ = fit_basis(x, 10, 4, 2, seed=0, outlier_sigma=0)
    second, _ = fit_basis(x, 10, 4, 2, seed=7, outlier_sigma=0)
    a = first.ica_directions / np.linalg.norm(first.ica_directions, axis=1, keepdims=True)
    b = second.ica_directions / np.linalg.norm(second.ica_directions, axis=1, keepdims=True)
    assert (np.sum(a * b, axis=1) > 0.99).all()                    # same order, same signs


def test_clustering_recovers_planted_clusters_and_shuffling_destroys_them():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 12)) * 6
    truth = rng.integers(5, size=3000)
    x = centres[truth] + rng.standard_normal((3000, 12))
    for method in ("kmeans", "ward"):
        labels = cluster(x, 5, method, seed=0, fit_rows=np.arange(0, 3000, 3))
        assert adjusted_rand_score(truth, labels) > 0.95, method
        assert np.all(np.diff(np.bincount(labels)) <= 0)           # numbered by decreasing size


def test_umap_embedding_keeps_planted_clusters_apart_and_is_reproducible():
    """The exact small-data path (sklearn distances, precomputed for UMAP) still embeds the neighbour graph."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, (3, 12))
    labels = np.repeat(np.arange(3), 150)
    x = centres[labels] + rng.normal(size=(450, 12))
    points = embed(x, "umap", seed=0)
    assert points.shape == (450, 2)
    np.testing.assert_array_equal(points, embed(x, "umap", seed=0))
    means = np.stack([points[labels == k].mean(0) for k in range(3)])
    nearest = np.linalg.norm(points[:, None] - means[None], axis=-1).argmin(1)
    assert (nearest == labels).mean() > 0.99
    assert (nearest == rng.permutation(labels)).mean() < 0.5      # shuffled labels: chance


def test_state_analysis_beats_its_shuffled_baseline(params):
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((4, 16)) * 5
    x = centres[rng.integers(4, size=2000)] + rng.standard_normal((2000, 16))
    config = dataclasses.replace(params.analysis, clusters=4, embedding_samples=150)
    result = analyse_states(x, config, must_embed=np.arange(10))
    m = result.metrics
    assert m["silhouette"] > m["nulls"]["shuffled_columns"]["silhouette"] + 0.3
    assert m["silhouette"] > m["nulls"]["gaussian"]["silhouette"] + 0.3          # clusters are not a covariance
    assert m["pca_first_ratio"] > 2 * m["nulls"]["shuffled_columns"]["pca_first_ratio"]
    assert m["pca_components_for_95pct"] == m["nulls"]["gaussian"]["pca_components_for_95pct"]   # same covariance
    assert set(range(10)) <= set(result.embedding_rows)
    assert result.embeddings["tsne"].shape == (len(result.embedding_rows), 2)
    structureless = shuffled_columns(x, rng)
    assert abs(np.corrcoef(structureless.T)[np.triu_indices(16, 1)]).max() < 0.15


def test_a_gaussian_with_the_datas_covariance_passes_as_its_own_null(params):
    """States that are only a correlated Gaussian: every measure sits with the Gaussian null, none beats it."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3000, 12)) @ rng.standard_normal((12, 12))
    config = dataclasses.replace(params.analysis, clusters=4, embedding_samples=100)
    m = analyse_states(x, config).metrics
    gaussian = m["nulls"]["gaussian"]
    assert abs(m["silhouette"] - gaussian["silhouette"]) < 0.05
    assert abs(m["ica_mean_abs_excess_kurtosis"] - gaussian["ica_mean_abs_excess_kurtosis"]) < 0.3
    assert m["pca_first_ratio"] > 1.5 * m["nulls"]["shuffled_columns"]["pca_first_ratio"]   # the shuffle cannot tell


def test_stored_basis_reproduces_projections(tmp_path):
    _, x = mixture(2000)
    basis, _ = fit_basis(x, 8, 4, 3, seed=0, outlier_sigma=2.0)
    basis.save(tmp_path / "basis.npz")
    loaded = Basis.load(tmp_path / "basis.npz")
    np.testing.assert_allclose(loaded.pca(x), basis.pca(x))
    np.testing.assert_allclose(loaded.ica(x), basis.ica(x))
    assert (loaded.nmf_components >= 0).all()


def test_dynamics_features_stack_states_and_their_changes():
    states = np.arange(2 * 7 * 3, dtype=float).reshape(2, 7, 3)
    features = dynamics_features(states, (2, 4))
    assert features.shape == (2, 3, 9)
    np.testing.assert_array_equal(features[1, 2, :3], states[1, 2])
    np.testing.assert_array_equal(features[1, 2, 3:6], states[1, 2] - states[1, 4])
    np.testing.assert_array_equal(features[0, 0, 6:], states[0, 0] - states[0, 4])


def test_behaviours_recover_planted_dynamics():
    rng = np.random.default_rng(0)
    kinds = rng.integers(3, size=300)
    drift = rng.standard_normal((3, 10)) * 2                        # each behaviour moves the state its own way
    steps = np.arange(12)[None, :, None]
    states = rng.standard_normal((300, 1, 10)) * 0.3 + drift[kinds][:, None, :] * steps / 4
    states = states + 0.1 * rng.standard_normal(states.shape)
    static = rng.standard_normal((300, 1, 10)) + 0.1 * rng.standard_normal(states.shape)   # no dynamics at all
    windows, behaviour, metrics = cluster_behaviours(states, (2, 4), clusters=3, method="kmeans", seed=0,
                                                     nulls={"same_states": states, "static": static})
    assert windows.shape == (300, 8)
    assert adjusted_rand_score(kinds, behaviour) > 0.9
    for name in ("shuffled_columns", "gaussian", "static"):        # beaten, each measure by a CI's width
        assert metrics["beats_nulls"][name] == {"silhouette": True, "within_sample_agreement": True}, name
    structureless = metrics["nulls"]["gaussian"]["within_sample_agreement"]
    assert metrics["within_sample_agreement"]["mean"] > structureless["ci95_high"] + 0.3
    # A null that can fail: the same states cluster the same way, and are not beaten.
    assert metrics["nulls"]["same_states"] == {k: metrics[k] for k in ("silhouette", "within_sample_agreement")}
    assert metrics["beats_nulls"]["same_states"] == {"silhouette": False, "within_sample_agreement": False}
