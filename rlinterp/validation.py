"""Measuring what an intervention on the hidden state does to behaviour: statistics that compare an edited run
with its unaltered control on the same level seeds (real environment, read from the runs' RolloutStores) or the
same latents (simulator)."""
from __future__ import annotations

import numpy as np

from rlinterp.agent.evaluate import EvalResult
from rlinterp.analysis.decompose import Basis
from rlinterp.envs import NUM_ACTIONS
from rlinterp.store import RolloutStore

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


def paired_test(edited: np.ndarray, control: np.ndarray, samples: int, seed: int) -> dict[str, float]:
    """Mean difference, its bootstrap interval and its sign-flip p-value."""
    return {**bootstrap_difference(edited, control, samples, seed),
            "p_value": sign_flip_pvalue(edited, control, samples, seed)}


def activation_shift(edited: np.ndarray, control: np.ndarray, samples: int, seed: int) -> list[dict[str, float]]:
    """Per component, the paired test of (N, C) activations (one row per episode or simulated sample)."""
    return [paired_test(edited[:, c], control[:, c], samples, seed) for c in range(edited.shape[1])]


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


def level_order(store: RolloutStore) -> np.ndarray:
    """Episode indices sorted by level seed: a store lists episodes as they finish, so this is what lines two
    runs on the same level seeds up episode by episode."""
    return np.argsort(store.episode_info()["level_seed"], kind="stable")


def episode_outcomes(store: RolloutStore, order: np.ndarray) -> EvalResult:
    """Return, length, completion and level seed of every episode, in `order` (the store's `level_order`)."""
    info = store.episode_info()
    return EvalResult(info["return"][order], info["length"][order], info["completed"][order],
                      info["level_seed"][order], np.bincount(np.asarray(store["action"][:]), minlength=NUM_ACTIONS))


def episode_ic_means(store: RolloutStore, basis: Basis, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E, C) twice, in `order` (the store's `level_order`): each episode's mean IC activation of its recorded hx
    (the edited state in an edited run), and its mean |activation|."""
    ics = basis.ica(np.asarray(store["hx"][:]))
    lengths = store.episode_ends - store.episode_starts

    def episode_means(x: np.ndarray) -> np.ndarray:
        return (np.add.reduceat(x, store.episode_starts, axis=0) / lengths[:, None])[order]
    return episode_means(ics), episode_means(np.abs(ics))


def ic_shifts(edited: tuple[np.ndarray, np.ndarray], control: tuple[np.ndarray, np.ndarray], samples: int,
              seed: int) -> dict[str, list[dict[str, float]]]:
    """Per IC, the paired tests of the (mean, mean |activation|) pairs of `episode_ic_means` or of simulated
    samples. The mean alone is blind to a collapse: an IC held at 0, its mean, keeps a mean activation near
    the control's, while its mean |activation| drops to 0."""
    return {"ic_activation_shift": activation_shift(edited[0], control[0], samples, seed),
            "ic_abs_activation_shift": activation_shift(edited[1], control[1], samples, seed)}


def compare_real(edited_store: RolloutStore, control_store: RolloutStore, basis: Basis, samples: int,
                 seed: int) -> dict:
    """Edited vs control on the same level seeds: return, completion, length, how episodes end, actions, and
    the shift of every IC's mean activation and mean |activation|."""
    edited_order, control_order = level_order(edited_store), level_order(control_store)
    edited, control = episode_outcomes(edited_store, edited_order), episode_outcomes(control_store, control_order)
    if not np.array_equal(edited.level_seeds, control.level_seeds):
        raise ValueError(f"{edited_store.path} and {control_store.path} were played on different level seeds")
    report = {}
    for name, a, b in (("return", edited.returns, control.returns),
                       ("completion", edited.completed, control.completed),
                       ("length", edited.lengths, control.lengths)):
        report[name] = {"edited": float(np.mean(a)), "control": float(np.mean(b)), **paired_test(a, b, samples, seed)}
    report["end_causes"] = {"edited": end_causes(edited), "control": end_causes(control)}
    num_actions = control_store["logits"].shape[1]
    edited_actions, control_actions = (np.bincount(store["action"][:], minlength=num_actions)
                                       for store in (edited_store, control_store))
    report["action_distribution"] = {
        "edited": (edited_actions / max(edited_actions.sum(), 1)).round(4).tolist(),
        "control": (control_actions / max(control_actions.sum(), 1)).round(4).tolist(),
        "total_variation": action_shift(edited_actions, control_actions)}
    report.update(ic_shifts(episode_ic_means(edited_store, basis, edited_order),
                            episode_ic_means(control_store, basis, control_order), samples, seed))
    return report
