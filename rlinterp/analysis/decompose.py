"""Linear decompositions of state vectors (agent hx, simulator state, latents): standardise, PCA, ICA, NMF.

Pure functions on arrays. The original's method (ORIGINAL.md section 6), with its quirks fixed: PCA components are
stored as orthonormal directions (not inverse-transformed), ICA runs on whitened PC loadings and is canonicalised
(components ordered by the variance they explain, signs making each source's skew positive) so runs compare, and
the same whitening is used to fit and to project. Every basis maps raw vectors to loadings and back, so later
stages (saliency, dynamics, interventions) can read directions in the raw state space.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.decomposition import NMF, PCA, FastICA
from sklearn.neighbors import NearestNeighbors

from rlinterp.errors import InputError
from rlinterp.files import read_npz


@dataclass
class Basis:
    """Everything needed to project raw vectors x (N, D) and to read directions in raw space."""
    mean: np.ndarray                  # (D,) standardisation
    scale: np.ndarray                 # (D,)
    pca_components: np.ndarray        # (P, D) orthonormal rows, in standardised space
    pca_variance: np.ndarray          # (P,) variance of each PC loading
    pca_variance_ratio: np.ndarray    # (P,)
    ica_unmixing: np.ndarray          # (C, D) raw x - mean -> independent sources: s = U (x - mean)
    ica_directions: np.ndarray        # (C, D) raw-space direction of each source: x ~ mean + sum_c s_c d_c
    ica_variance_ratio: np.ndarray    # (C,) share of the standardised variance each IC accounts for
    nmf_components: np.ndarray        # (F, D) non-negative factors of x - nmf_offset
    nmf_offset: np.ndarray            # (D,) per-dimension minimum subtracted before NMF

    def pca(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.pca_components.T

    def ica(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) @ self.ica_unmixing.T

    def save(self, path) -> None:
        np.savez(path, **asdict(self))

    @classmethod
    def load(cls, path) -> Basis:
        data = read_npz(path)
        missing = [name for name in cls.__dataclass_fields__ if name not in data]
        if missing:
            raise InputError(f"{path}: no array {missing[0]!r}; expected a basis written by the analyse stage")
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and scale (std, or 1 for a constant dimension)."""
    std = x.std(0)
    return x.mean(0), np.where(std > 1e-8, std, 1.0)


def outlier_mask(z: np.ndarray, k: int = 5, sigma: float = 2.0) -> np.ndarray:
    """True for inliers: rows whose median distance to their k nearest neighbours is below mean + sigma * std
    of those medians (the original's rule, with one k)."""
    if sigma <= 0 or len(z) <= k:
        return np.ones(len(z), dtype=bool)
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    median = np.median(distances[:, 1:], axis=1)
    return median < median.mean() + sigma * median.std()


def canonical_ica(whitened: np.ndarray, root: np.ndarray, seed: int, max_iter: int, tol: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """FastICA on whitened PC loadings (N, C) (loadings / root): unmixing W (C, C) with sources s = W w and mixing
    A = W^-1, ordered by the variance each component explains in the PC space (|root * A_c|^2), signs giving
    every source a positive skew."""
    ica = FastICA(whiten=False, random_state=seed, max_iter=max_iter, tol=tol)
    ica.fit(whitened)
    unmixing = ica.components_
    mixing = np.linalg.pinv(unmixing)
    sources = whitened @ unmixing.T
    skew = ((sources - sources.mean(0)) ** 3).mean(0)
    signs = np.where(skew < 0, -1.0, 1.0)
    unmixing, mixing = unmixing * signs[:, None], mixing * signs[None, :]
    order = np.argsort(-((root[:, None] * mixing) ** 2).sum(0), kind="stable")
    return unmixing[order], mixing[:, order]


def fit_basis(x: np.ndarray, pca_components: int, ica_components: int, nmf_components: int, seed: int,
              ica_max_iter: int = 2000, ica_tol: float = 1e-4, nmf_max_iter: int = 500,
              outlier_sigma: float = 2.0) -> tuple[Basis, np.ndarray]:
    """Fit every decomposition on x (N, D) (outliers excluded from the fits); returns the basis and inlier mask.
    `nmf_components` 0 skips NMF (its factors are then empty), for fits that only measure PCA/ICA structure."""
    mean, scale = standardise(x)
    z = (x - mean) / scale
    inliers = outlier_mask(z, sigma=outlier_sigma)
    p = min(pca_components, x.shape[1], int(inliers.sum()))
    pca = PCA(n_components=p, random_state=seed).fit(z[inliers])
    c = min(ica_components, p)
    loadings = pca.transform(z[inliers])[:, :c]
    root = np.sqrt(pca.explained_variance_[:c])
    unmixing_w, mixing_w = canonical_ica(loadings / root, root, seed, ica_max_iter, ica_tol)
    # sources s = W diag(1/root) P_c (x - mean)/scale ;  x - mean = scale * P_c^T diag(root) A s
    ica_unmixing = (unmixing_w / root[None, :]) @ pca.components_[:c] / scale[None, :]
    directions_z = (pca.components_[:c].T * root[None, :]) @ mixing_w          # (D, C) in standardised space
    total = pca.explained_variance_.sum() / pca.explained_variance_ratio_.sum()
    ica_ratio = (directions_z ** 2).sum(0) / total
    ica_directions = directions_z.T * scale[None, :]
    offset = x.min(0)
    f = min(nmf_components, x.shape[1])
    nmf_factors = (NMF(n_components=f, init="nndsvda", random_state=seed, max_iter=nmf_max_iter).fit(x - offset)
                   .components_ if f else np.zeros((0, x.shape[1])))
    basis = Basis(mean=mean, scale=scale, pca_components=pca.components_, pca_variance=pca.explained_variance_,
                  pca_variance_ratio=pca.explained_variance_ratio_, ica_unmixing=ica_unmixing,
                  ica_directions=ica_directions, ica_variance_ratio=ica_ratio, nmf_components=nmf_factors,
                  nmf_offset=offset)
    return basis, inliers


def components_for(variance_ratio: np.ndarray, share: float = 0.95) -> int:
    """How many leading PCs explain at least `share` of the variance (the count, not the original's index)."""
    return int(min(np.searchsorted(np.cumsum(variance_ratio), share) + 1, len(variance_ratio)))


def shuffled_columns(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each column permuted independently: the same marginals with every dependence between dimensions destroyed
    (the baseline a structureless state would give)."""
    return np.stack([rng.permutation(column) for column in x.T], axis=1)


def data_like_directions(basis: Basis, count: int, seed: int) -> np.ndarray:
    """(count, hidden) random unit directions drawn from the states' own covariance (random mixtures of the PCs,
    each weighted by its standard deviation): directions along which states vary as much as along the edited ones,
    unlike uniformly random directions, along which real states barely vary."""
    rng = np.random.default_rng(seed)
    loadings = rng.standard_normal((count, len(basis.pca_variance))) * np.sqrt(basis.pca_variance)
    directions = (loadings @ basis.pca_components) * basis.scale
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)
