"""Analyses recover planted structure: independent sources, clusters; bases round-trip; baselines show none."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from rlinterp.analysis.behaviour import cluster_behaviours, dynamics_features
from rlinterp.analysis.cluster import cluster, embed
from rlinterp.analysis.decompose import Basis, fit_basis, shuffled_columns
from rlinterp.analysis.states import analyse_states, excess_kurtosis, kurtosis_intervals, silhouette_interval


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
    for null in ("shuffled_columns", "gaussian"):                  # clusters are not a covariance
        assert m["silhouette"]["ci95_low"] > m["nulls"][null]["silhouette"]["ci95_high"] + 0.3, null
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
    assert abs(m["silhouette"]["mean"] - gaussian["silhouette"]["mean"]) < 0.05
    assert abs(m["ica_mean_abs_excess_kurtosis"]["mean"] - gaussian["ica_mean_abs_excess_kurtosis"]["mean"]) < 0.3
    assert m["pca_first_ratio"] > 1.5 * m["nulls"]["shuffled_columns"]["pca_first_ratio"]   # the shuffle cannot tell


def test_an_untrained_null_of_several_draws_spans_every_draw(params):
    """Draws of the untrained-agent null (one per initialisation) pool into one interval from the lowest draw's
    lower bound to the highest's upper one, so states equal to any one draw cannot beat it."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((4, 16)) * 5
    x = centres[rng.integers(4, size=1500)] + rng.standard_normal((1500, 16))
    structureless = rng.standard_normal((1500, 16))
    config = dataclasses.replace(params.analysis, clusters=4, embedding_samples=100, embedding_methods=("tsne",))
    single = analyse_states(x, config, untrained=[structureless]).metrics["nulls"]["untrained_agent"]
    pooled = analyse_states(x, config, untrained=[structureless, x]).metrics
    null = pooled["nulls"]["untrained_agent"]
    for measure in ("silhouette", "ica_mean_abs_excess_kurtosis"):
        assert "draws" not in single[measure]
        assert null[measure]["draws"][0] == single[measure]["mean"]
        assert null[measure]["draws"][1] == pytest.approx(pooled[measure]["mean"], abs=0.05)   # x as its own draw
        assert null[measure]["ci95_low"] <= single[measure]["ci95_low"]
        assert null[measure]["mean"] == pytest.approx(np.mean(null[measure]["draws"]))
    assert single["silhouette"]["ci95_high"] < pooled["silhouette"]["ci95_low"]       # one draw alone is beaten...
    assert null["silhouette"]["ci95_high"] >= pooled["silhouette"]["ci95_low"]        # ...the pool holding x is not
    assert null["pca_components_for_95pct"] == [single["pca_components_for_95pct"], pooled["pca_components_for_95pct"]]


def test_the_reset_transient_is_left_out_and_the_data_is_measured_as_its_nulls_are(params):
    """Episodes of Gaussian states whose first step is a far-off reset state: with those steps measured, the ICs
    look heavy-tailed and beat the Gaussian null; with them left out, the data sits with its null. Either way the
    compared measures are the data's own measured the nulls' way, the silhouette in as many PCs as the nulls'."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3000, 12)) @ rng.standard_normal((12, 12))
    timestep = np.tile(np.arange(30), 100)
    x[timestep == 0] = 40.0                                                            # one reset state per episode
    config = dataclasses.replace(params.analysis, clusters=4, embedding_samples=100, embedding_methods=("tsne",))
    groups = np.repeat(np.arange(100), 30)
    kurtosis = "ica_mean_abs_excess_kurtosis"
    with_reset = analyse_states(x, config, groups=groups).metrics
    assert with_reset["like_for_like"][kurtosis]["ci95_low"] > with_reset["nulls"]["gaussian"][kurtosis]["ci95_high"]
    left_out = analyse_states(x, config, groups=groups, measured=timestep >= 1).metrics
    assert left_out["measured_rows"] == 2900
    assert abs(left_out["like_for_like"][kurtosis]["mean"] - left_out["nulls"]["gaussian"][kurtosis]["mean"]) < 0.3
    dims = {m["silhouette_dims"] for m in (left_out["like_for_like"], *left_out["nulls"].values())}
    assert dims == {left_out["like_for_like"]["silhouette_dims"]}


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
                                                     nulls={"same_states": states, "static": static,
                                                            "static_or_same": [static, states]})
    assert windows.shape == (300, 8)
    assert adjusted_rand_score(kinds, behaviour) > 0.9
    for name in ("shuffled_columns", "gaussian", "static"):        # beaten, each measure by a CI's width
        assert metrics["beats_nulls"][name] == {"silhouette": True, "within_sample_agreement": True}, name
    structureless = metrics["nulls"]["gaussian"]["within_sample_agreement"]
    assert metrics["within_sample_agreement"]["mean"] > structureless["ci95_high"] + 0.3
    # A null that can fail: the same states cluster the same way, and are not beaten.
    assert metrics["nulls"]["same_states"] == {k: metrics[k] for k in ("silhouette", "within_sample_agreement")}
    assert metrics["beats_nulls"]["same_states"] == {"silhouette": False, "within_sample_agreement": False}
    # Draws of one null pool into an interval spanning both: one of them being the states, it is not beaten either.
    pooled, static_quality = metrics["nulls"]["static_or_same"], metrics["nulls"]["static"]
    for measure in ("silhouette", "within_sample_agreement"):
        assert pooled[measure]["draws"] == [static_quality[measure]["mean"], metrics[measure]["mean"]]
        assert pooled[measure]["ci95_low"] == static_quality[measure]["ci95_low"]
    assert metrics["beats_nulls"]["static_or_same"] == {"silhouette": False, "within_sample_agreement": False}


def test_kurtosis_interval_covers_the_truth_and_widens_when_episodes_repeat_their_rows():
    """Laplace sources have excess kurtosis 3. As 20-step episodes of one repeated row, they hold 20x fewer
    independent draws: an interval that resamples episodes must widen about sqrt(20)x; one over rows would not."""
    rng = np.random.default_rng(0)
    independent = rng.laplace(size=(4000, 3))
    intervals = kurtosis_intervals(independent, np.arange(4000), seed=0)
    interval = intervals["ica_mean_abs_excess_kurtosis"]
    assert interval["ci95_low"] < 3 < interval["ci95_high"]
    assert interval["ci95_low"] > 2                                    # ... and tells it from a Gaussian's 0
    assert interval["mean"] == pytest.approx(np.abs(excess_kurtosis(independent)).mean())
    median = intervals["ica_median_abs_excess_kurtosis"]
    assert median["mean"] == pytest.approx(np.median(np.abs(excess_kurtosis(independent))))
    assert median["ci95_low"] < 3 < median["ci95_high"]
    repeated = np.repeat(rng.laplace(size=(200, 3)), 20, axis=0)
    episodes = np.repeat(np.arange(200), 20)
    wide = kurtosis_intervals(repeated, episodes, seed=0)["ica_mean_abs_excess_kurtosis"]
    as_rows = kurtosis_intervals(repeated, np.arange(4000), seed=0)["ica_mean_abs_excess_kurtosis"]
    width = lambda i: i["ci95_high"] - i["ci95_low"]  # noqa: E731
    assert width(wide) > 2.5 * width(as_rows)


def test_silhouette_interval_resamples_episodes():
    """Two planted clusters: the interval contains the point value; rows of 10-step episodes that share one
    offset make the episode interval wider than a row one."""
    rng = np.random.default_rng(1)
    labels = np.repeat(rng.integers(2, size=150), 10)
    x = labels[:, None] * 4.0 + np.repeat(rng.normal(size=(150, 2)), 10, axis=0) + 0.1 * rng.normal(size=(1500, 2))
    episodes = np.repeat(np.arange(150), 10)
    grouped, rows = silhouette_interval(x, labels, episodes, seed=0), silhouette_interval(x, labels, np.arange(1500), 0)
    assert grouped["ci95_low"] < grouped["mean"] < grouped["ci95_high"]
    assert grouped["mean"] == rows["mean"]
    assert grouped["ci95_high"] - grouped["ci95_low"] > 2 * (rows["ci95_high"] - rows["ci95_low"])
