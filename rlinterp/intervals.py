"""The mean of a sample with its 95% t-interval: one definition for every metric that reports one; bootstrap
intervals over groups; and the envelope of several draws of a null."""
from __future__ import annotations

import numpy as np
from scipy import stats


def mean_interval(values: np.ndarray) -> dict[str, float]:
    """Mean of `values` (e.g. paired differences, or per-sample shares) with its 95% t-interval; the bounds are NaN
    for fewer than 2 values, and the mean too for none."""
    values = np.asarray(values)
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def group_bootstrap_weights(groups: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A bootstrap over the groups rows belong to (e.g. their episodes, whose steps are not independent): each
    row's group index (N,) into 0..G-1, and (resamples, G) counts of how often each group is drawn."""
    _, index = np.unique(groups, return_inverse=True)
    count = int(index.max()) + 1 if len(index) else 0
    draws = np.random.default_rng(seed).integers(count, size=(resamples, count))
    return index, np.stack([np.bincount(row, minlength=count) for row in draws]).astype(np.float64)


def resampled_means(values: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mean of `values` (N,) in each resample of `group_bootstrap_weights` (its `index`, `weights`): (R,)."""
    return (weights @ np.bincount(index, weights=values, minlength=weights.shape[1])) / \
        (weights @ np.bincount(index, minlength=weights.shape[1]))


def percentile_interval(point: float, resampled: np.ndarray) -> dict[str, float]:
    """A statistic's value with the 95% percentile interval of its bootstrap resamples, in `mean_interval`'s
    keys (`mean` is the statistic on the data itself)."""
    low, high = np.nanpercentile(resampled, [2.5, 97.5]) if len(resampled) else (np.nan, np.nan)
    return {"mean": float(point), "ci95_low": float(low), "ci95_high": float(high)}


def envelope(intervals: list[dict[str, float]]) -> dict:
    """One null from several draws of it (e.g. untrained agents of other initialisations), each a `mean_interval`-
    keyed dict: the mean of their means, an interval from the lowest lower to the highest upper bound, and each
    draw's mean. A single draw is returned as it is. Why: one random initialisation's interval leaves out how much
    the null moves with the initialisation (`benchmarks/results/analysis_refits.txt`: up to 3x that interval)."""
    if len(intervals) == 1:
        return intervals[0]
    return {"mean": float(np.mean([i["mean"] for i in intervals])),
            "ci95_low": float(min(i["ci95_low"] for i in intervals)),
            "ci95_high": float(max(i["ci95_high"] for i in intervals)),
            "draws": [float(i["mean"]) for i in intervals]}
