"""One analysis of a set of state vectors (agent hx, simulator state or latents), beside nulls that can fail.

`analyse_states` fits the decompositions on a subsample, projects every row, clusters, embeds a subsample in 2-D,
and measures the same structure (`structure`: PCs for 95% of the variance, the first PC's share, the ICs' excess
kurtosis (mean and median over ICs), the clusters' silhouette) on nulls, each analysed afresh. What is compared with
the nulls is `like_for_like`: the data measured exactly as the nulls are (no outlier exclusion, the same rows, the
silhouette in the same number of PCs), on the rows `measured` leaves in (the stage leaves out each episode's first
steps, the reset transient, where one IC's extremes sit). The kurtosis and the silhouette carry a 95%
bootstrap interval over the episodes the rows come from (rows of a Gaussian or shuffled null are independent):
what another draw of episodes would give, with the fitted basis and clusters held fixed, so not the fits' own
variability (on the recorded hx, refits move the silhouette by about one interval's width, the kurtosis by far less:
`benchmarks/analysis_refits.py`).
    shuffled_columns  every dimension keeps its values, every dependence between dimensions is destroyed
    gaussian          a Gaussian with the data's mean and covariance: the same PCs by construction, so what beats it
                      is non-Gaussian structure (heavy-tailed ICs, clusters)
    untrained_agent   (agent hx only, given by the caller) the states randomly initialised agents of the same
                      network have on the same frames: what the architecture gives before any learning. Each
                      initialisation is one draw; the null is their `envelope` (its interval spans every draw's)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import silhouette_samples

from rlinterp.analysis.cluster import cluster, embed, subsample
from rlinterp.analysis.decompose import Basis, components_for, fit_basis, shuffled_columns
from rlinterp.config import AnalysisConfig
from rlinterp.files import read_npz
from rlinterp.intervals import envelope, group_bootstrap_weights, percentile_interval, resampled_means

BOOTSTRAP_RESAMPLES = 1000   # resamples of the groups (episodes) behind the kurtosis and silhouette intervals
SILHOUETTE_ROWS = 2000       # rows the silhouette is scored on (it costs rows^2 distances)


@dataclass
class Projections:
    """projections.npz: every analysed row (`rows`, step indices into its store), its leading PCs, IC
    activations and cluster, and the 2-D embedding of the subsample `embedding_rows` (positions into `rows`)
    per method. The one place that knows the file's keys."""
    rows: np.ndarray
    pca: np.ndarray
    ica: np.ndarray
    labels: np.ndarray
    embedding_rows: np.ndarray
    embeddings: dict[str, np.ndarray]

    def save(self, path) -> None:
        np.savez(path, rows=self.rows, pca=self.pca, ica=self.ica, labels=self.labels,
                 embedding_rows=self.embedding_rows, **{f"embedding_{m}": e for m, e in self.embeddings.items()})

    @classmethod
    def load(cls, path) -> Projections:
        data = read_npz(path)
        embeddings = {k.removeprefix("embedding_"): v for k, v in data.items()
                      if k.startswith("embedding_") and k != "embedding_rows"}
        return cls(data["rows"], data["pca"], data["ica"], data["labels"], data["embedding_rows"], embeddings)


@dataclass
class StateAnalysis:
    basis: Basis
    pca: np.ndarray             # (N, P) PC loadings of every row
    ica: np.ndarray             # (N, C) independent-component activations of every row
    labels: np.ndarray          # (N,) cluster of every row
    embedding_rows: np.ndarray  # (M,) rows embedded in 2-D
    embeddings: dict[str, np.ndarray]   # method -> (M, 2)
    shuffled_variance_ratio: np.ndarray  # PCA explained-variance ratios of the column-shuffled baseline
    metrics: dict


    def cluster_summary(self, cluster_id: int, context: dict[str, np.ndarray], exemplars: int,
                        num_actions: int) -> dict:
        """One cluster's size, mean value and reward, action shares (from `context`, per-row arrays), and its
        `exemplars` rows nearest the centre in the leading 8 PCs: what the cluster looks like."""
        members = np.flatnonzero(self.labels == cluster_id)
        centre = self.pca[members, :8].mean(0)
        nearest = members[np.argsort(((self.pca[members, :8] - centre) ** 2).sum(1))[:exemplars]]
        return {"cluster": cluster_id, "size": len(members), "exemplars": np.sort(nearest),
                "value": float(context["value"][members].mean()), "reward": float(context["reward"][members].mean()),
                "actions": np.bincount(context["action"][members], minlength=num_actions) / len(members)}


def excess_kurtosis(s: np.ndarray) -> np.ndarray:
    s = (s - s.mean(0)) / s.std(0).clip(1e-12)
    return (s ** 4).mean(0) - 3.0


def kurtosis_intervals(sources: np.ndarray, groups: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
    """The ICs' absolute excess kurtosis (sources (N, C)), its mean and its median over ICs (one heavy IC can carry
    the mean), each with its bootstrap interval over `groups` (N,)."""
    index, weights = group_bootstrap_weights(groups, BOOTSTRAP_RESAMPLES, seed)
    s = (sources - sources.mean(0)) / sources.std(0).clip(1e-12)
    # raw moments 1-4 summed per group, so a resample's moments are its group counts times these sums
    sums = np.stack([np.stack([np.bincount(index, s[:, c] ** p) for c in range(s.shape[1])], 1)
                     for p in range(5)])                                            # (5, G, C)
    m = np.einsum("rg,pgc->prc", weights, sums) / (weights @ sums[0][:, :1])[None]  # (5, R, C) raw moments
    var = m[2] - m[1] ** 2
    central4 = m[4] - 4 * m[1] * m[3] + 6 * m[1] ** 2 * m[2] - 3 * m[1] ** 4
    resampled = np.abs(central4 / var.clip(1e-12) ** 2 - 3)                          # (R, C)
    per_ic = np.abs(excess_kurtosis(sources))
    return {"ica_mean_abs_excess_kurtosis": percentile_interval(per_ic.mean(), resampled.mean(-1)),
            "ica_median_abs_excess_kurtosis": percentile_interval(np.median(per_ic), np.median(resampled, -1))}


def silhouette_interval(x: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int) -> dict[str, float]:
    """The mean silhouette of up to SILHOUETTE_ROWS rows of x (NaN with fewer than two clusters among them), with
    its bootstrap interval over the rows' `groups`."""
    rows = subsample(len(x), SILHOUETTE_ROWS, np.random.default_rng(seed))
    if len(np.unique(labels[rows])) < 2:
        return percentile_interval(float("nan"), np.zeros(0))
    per_row = silhouette_samples(x[rows], labels[rows])
    index, weights = group_bootstrap_weights(groups[rows], BOOTSTRAP_RESAMPLES, seed)
    resampled = resampled_means(per_row, index, weights)
    return percentile_interval(per_row.mean(), resampled)


def structure(x: np.ndarray, groups: np.ndarray, config: AnalysisConfig, seed: int,
              dims: int | None = None) -> tuple[dict, Basis]:
    """The structure measures of states x (N, D) from `groups` (N,) (episodes), each computed on a subsample of
    `config.fit_samples` rows with every row kept in the fit, the silhouette in the leading `dims` PCs (default:
    as many as hold 95% of x's variance, at least 2); and the basis fitted to measure them."""
    rng = np.random.default_rng(seed)
    rows = subsample(len(x), config.fit_samples, rng)
    basis, _ = fit_basis(x[rows], config.pca_components, config.ica_components, 0, seed, config.ica_max_iter,
                         config.ica_tol, outlier_sigma=0)
    n95 = components_for(basis.pca_variance_ratio)
    features = basis.pca(x[rows])[:, :dims or max(n95, 2)]
    labels = cluster(features, config.clusters, config.cluster_method, seed, np.arange(len(rows)))
    return {"pca_components_for_95pct": n95, "pca_first_ratio": float(basis.pca_variance_ratio[0]),
            **kurtosis_intervals(basis.ica(x[rows]), groups[rows], seed), "silhouette_dims": features.shape[1],
            "silhouette": silhouette_interval(features, labels, groups[rows], seed)}, basis


def pooled_structure(draws: list[dict]) -> dict:
    """The structure measures of several draws of one null: intervals pooled by `envelope`, counts and ratios
    listed per draw. A single draw is returned as it is."""
    if len(draws) == 1:
        return draws[0]
    return {name: envelope([d[name] for d in draws]) if isinstance(draws[0][name], dict)
            else [d[name] for d in draws] for name in draws[0]}


def gaussian_like(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """As many rows from a Gaussian with x's mean and covariance."""
    return rng.multivariate_normal(x.mean(0), np.cov(x, rowvar=False), size=len(x), method="svd")


def analyse_states(x: np.ndarray, config: AnalysisConfig, must_embed: np.ndarray | None = None,
                   untrained: list[np.ndarray] | None = None, groups: np.ndarray | None = None,
                   measured: np.ndarray | None = None) -> StateAnalysis:
    """Analyse x (N, D). Rows in `must_embed` (e.g. whole example episodes, drawn as paths) join the embedding;
    `untrained` [(N, D), ...] are the same kind of states from untrained agents (one per initialisation) on the
    same steps, analysed as one more null; `groups` (N,) the episode of each row (default: every row its own),
    which the intervals resample; `measured` (N,) bool, the rows the structure comparisons read (default all)."""
    rng = np.random.default_rng(config.seed)
    x = np.asarray(x, dtype=np.float64)
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    measured = np.ones(len(x), bool) if measured is None else np.asarray(measured, bool)
    fit_rows = subsample(len(x), config.fit_samples, rng)
    basis, inliers = fit_basis(x[fit_rows], config.pca_components, config.ica_components, config.nmf_components,
                               config.seed, config.ica_max_iter, config.ica_tol, config.nmf_max_iter,
                               config.outlier_sigma)
    pca, ica = basis.pca(x), basis.ica(x)
    n95 = components_for(basis.pca_variance_ratio)
    features = pca[:, :max(n95, 2)]
    labels = cluster(features, config.clusters, config.cluster_method, config.seed, fit_rows)
    like_for_like, _ = structure(x[measured], groups[measured], config, config.seed)
    dims = like_for_like["silhouette_dims"]
    compared = x[measured][subsample(int(measured.sum()), config.fit_samples, rng)]
    nulls = {"shuffled_columns": shuffled_columns(compared, rng), "gaussian": gaussian_like(compared, rng)}
    measured_nulls = {name: structure(states, np.arange(len(states)), config, config.seed, dims)
                      for name, states in nulls.items()}
    null_structure = {name: measures for name, (measures, _) in measured_nulls.items()}
    if untrained:
        null_structure["untrained_agent"] = pooled_structure(
            [structure(np.asarray(states, dtype=np.float64)[measured], groups[measured], config, config.seed,
                       dims)[0] for states in untrained])
    extra = np.unique(np.concatenate([subsample(len(x), config.embedding_samples, rng),
                                      must_embed if must_embed is not None else np.zeros(0, np.int64)]))
    embeddings = {method: embed(features[extra], method, config.seed) for method in config.embedding_methods}
    sizes = np.bincount(labels, minlength=int(labels.max()) + 1)
    metrics = {
        "rows": len(x), "dims": x.shape[1], "fit_rows": len(fit_rows), "inlier_fraction": float(inliers.mean()),
        "pca_components_for_95pct": n95, "pca_first_ratio": float(basis.pca_variance_ratio[0]),
        "ica_components": int(ica.shape[1]),
        **kurtosis_intervals(ica[fit_rows], groups[fit_rows], config.seed),
        "ica_variance_ratio": [float(v) for v in basis.ica_variance_ratio],
        "clusters": int(len(sizes)), "cluster_method": config.cluster_method,
        "cluster_sizes": [int(s) for s in sizes],
        "silhouette": silhouette_interval(features, labels, groups, config.seed),
        "measured_rows": int(measured.sum()), "like_for_like": like_for_like,
        "nulls": null_structure,
    }
    return StateAnalysis(basis, pca, ica, labels, extra, embeddings,
                         measured_nulls["shuffled_columns"][1].pca_variance_ratio, metrics)
