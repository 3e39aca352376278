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
