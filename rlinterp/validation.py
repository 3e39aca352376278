"""Measuring what an intervention on the hidden state does to behaviour: statistics that compare an edited run
with its unaltered control on the same level seeds (real environment) or the same latents (simulator)."""
from __future__ import annotations

import numpy as np

from rlinterp.agent.evaluate import EvalResult

TIMEOUT_STEPS = 1000   # Procgen ends an episode after 1000 steps


def bootstrap_difference(edited: np.ndarray, control: np.ndarray, samples: int, seed: int) -> dict[str, float]:
    """Mean of edited - control with a 95% percentile-bootstrap interval; paired when the arrays align (same
    level seeds, same latents), as they do here."""
    rng = np.random.default_rng(seed)
    diff = np.asarray(edited, dtype=np.float64) - np.asarray(control, dtype=np.float64)
    means = diff[rng.integers(len(diff), size=(samples, len(diff)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"difference": float(diff.mean()), "ci95_low": float(lo), "ci95_high": float(hi)}


def sign_flip_pvalue(edited: np.ndarray, control: np.ndarray, samples: int, seed: int) -> float:
    """Two-sided p-value of a paired permutation (sign-flip) test of zero mean difference."""
    rng = np.random.default_rng(seed)
    diff = np.asarray(edited, dtype=np.float64) - np.asarray(control, dtype=np.float64)
    observed = abs(diff.mean())
    flips = rng.choice([-1.0, 1.0], size=(samples, len(diff)))
    null = np.abs((flips * diff).mean(1))
    return float((1 + (null >= observed - 1e-12).sum()) / (samples + 1))


def end_causes(result: EvalResult) -> dict[str, float]:
    """Share of episodes that reached the coin, timed out, or ended otherwise (the agent died)."""
    coin = result.completed
    timeout = ~coin & (result.lengths >= TIMEOUT_STEPS)
    return {"coin": float(coin.mean()), "timeout": float(timeout.mean()), "died": float((~coin & ~timeout).mean())}


def action_shift(edited_counts: np.ndarray, control_counts: np.ndarray) -> float:
    """Total-variation distance between two action distributions given as counts."""
    p = edited_counts / max(edited_counts.sum(), 1)
    q = control_counts / max(control_counts.sum(), 1)
    return float(0.5 * np.abs(p - q).sum())


def compare_real(edited: EvalResult, control: EvalResult, edited_actions: np.ndarray, control_actions: np.ndarray,
                 samples: int, seed: int) -> dict:
    """Edited vs control on the same level seeds: return, completion, length, how episodes end, actions."""
    if not np.array_equal(edited.level_seeds, control.level_seeds):
        raise ValueError("edited and control runs were played on different level seeds")
    report = {}
    for name, a, b in (("return", edited.returns, control.returns),
                       ("completion", edited.completed, control.completed),
                       ("length", edited.lengths, control.lengths)):
        report[name] = {"edited": float(np.mean(a)), "control": float(np.mean(b)),
                        **bootstrap_difference(a, b, samples, seed), "p_value": sign_flip_pvalue(a, b, samples, seed)}
    report["end_causes"] = {"edited": end_causes(edited), "control": end_causes(control)}
    report["action_distribution"] = {
        "edited": (edited_actions / max(edited_actions.sum(), 1)).round(4).tolist(),
        "control": (control_actions / max(control_actions.sum(), 1)).round(4).tolist(),
        "total_variation": action_shift(edited_actions, control_actions)}
    return report
