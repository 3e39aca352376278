"""The mean of a sample with its 95% t-interval: one definition for every metric that reports one."""
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


def percentile_interval(point: float, resampled: np.ndarray) -> dict[str, float]:
    """A statistic's value with the 95% percentile interval of its bootstrap resamples, in `mean_interval`'s
    keys (`mean` is the statistic on the data itself)."""
    low, high = np.nanpercentile(resampled, [2.5, 97.5]) if len(resampled) else (np.nan, np.nan)
    return {"mean": float(point), "ci95_low": float(low), "ci95_high": float(high)}
