"""Dynamics of hidden-state components: how they co-vary over time and how they cause each other.

Definitions (s_i(t) is component i of the agent's state at step t of a rollout, s = U (hx - mean)):

cross-correlation at lag k (the original's "xcorr", with its quirks fixed: each sample is centred on its own
    time-mean, components are scaled by their standard deviation over the whole dataset, and the sum over time
    pairs is divided by the number of pairs T - k, not by the number of components):
        M_k[i, j] = mean over samples of  1/(T-k) sum_{t=0}^{T-1-k} z_i(t) z_j(t+k),   z = (s - mean_t s) / std(s)
Jacobian at lag k (the original's "xcaus"): the effect of nudging component i at step t-k on component j at
    step t, through everything that follows the nudge:
        J_k[i, j] = mean over samples of  d s_j(t) / d e_i(t-k),   hx(t-k) <- hx(t-k) + sum_i e_i d_i
    with d_i the component's direction (u_j . d_i = 1 if i == j else 0). The nudge is added where the agent's
    state is made (`hook_hx`), so the state at step t-k feeds its own heads and everything after; k = 0 is the
    identity by construction (the original read gradients at the state's output, so its k = 0 was trivial too,
    and later steps were zero). Through the agent only (`env_grads=False`: actions detached before they enter
    the simulated environment) or through agent and simulated environment.
consistency at lag k: do correlation and causation agree? The share of (i, j) entries where M_k and J_k have
    the same sign, and the correlation of their magnitudes, beside the same share for shuffled entries.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlinterp.hooks import attached


@dataclass
class DynamicsArrays:
    """dynamics.npz: per group ("all" or a behaviour) and kind ("xcorr", "jacobian_with_env", ...), a
    (max_lag + 1, C, C) array; `arrays` keys are "group/kind"."""
    arrays: dict[str, np.ndarray]

    def save(self, path) -> None:
        np.savez(path, **{key.replace("/", "__"): value for key, value in self.arrays.items()})

    @classmethod
    def load(cls, path) -> DynamicsArrays:
        with np.load(path) as data:
            return cls({key.replace("__", "/"): data[key] for key in data.files})


def cross_correlation(s: np.ndarray, max_lag: int) -> np.ndarray:
    """s (N, T, C) activations -> M (max_lag + 1, C, C), M[k, i, j] = corr of s_i(t) with s_j(t + k)."""
    steps = s.shape[1]
    if max_lag >= steps:
        raise ValueError(f"max_lag {max_lag}: expected fewer than the {steps} steps of each sample")
    z = s - s.mean(1, keepdims=True)
    z = z / z.reshape(-1, s.shape[2]).std(0).clip(1e-12)
    return np.stack([np.einsum("nti,ntj->ij", z[:, :steps - k], z[:, k:]) / (len(s) * (steps - k))
                     for k in range(max_lag + 1)])


def jacobians(simulator, agent, latents: torch.Tensor, steps: int, target_step: int, readout: torch.Tensor,
              directions: torch.Tensor, mean: torch.Tensor, env_grads: bool) -> torch.Tensor:
    """(N, target_step + 1, C, C): J[n, tau, i, j] = d s_j(target_step) / d e_i(tau) for each sample's rollout
    (closed loop, most likely states) from `latents` (N, D)."""
    nudges: list[torch.Tensor] = []

    def nudge(step: int, hx: torch.Tensor) -> torch.Tensor:
        e = torch.zeros(hx.shape[0], directions.shape[0], dtype=hx.dtype, device=hx.device, requires_grad=True)
        nudges.append(e)
        return hx + e @ directions.to(hx)

    with attached(agent, hx=nudge):
        rollout = simulator.rollout(latents, agent, steps, modal=True, env_grads=env_grads)
    target = (rollout.agent_hx[target_step] - mean.to(rollout.agent_hx)) @ readout.to(rollout.agent_hx).T   # (N, C)
    leaves = nudges[:target_step + 1]
    rows = []
    for j in range(target.shape[1]):
        grads = torch.autograd.grad(target[:, j].sum(), leaves, retain_graph=j < target.shape[1] - 1,
                                    allow_unused=True)
        rows.append(torch.stack([g if g is not None else torch.zeros_like(e) for g, e in zip(grads, leaves)], 1))
    return torch.stack(rows, -1).detach()         # (N, tau, i, j)


def lagged(jac: np.ndarray, max_lag: int) -> np.ndarray:
    """Mean Jacobian (tau, C, C) of a target step -> per lag k = target - tau: (max_lag + 1, C, C)."""
    target = jac.shape[0] - 1
    return np.stack([jac[target - k] for k in range(min(max_lag, target) + 1)])


def consistency(xcorr: np.ndarray, jac: np.ndarray, seed: int) -> list[dict[str, float]]:
    """Per lag k >= 1 of both (K, C, C) arrays: sign agreement, magnitude correlation, and the sign agreement of
    shuffled Jacobian entries (what unrelated matrices give)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(1, min(len(xcorr), len(jac))):
        m, j = xcorr[k].ravel(), jac[k].ravel()
        shuffled = rng.permutation(j)
        magnitude = np.corrcoef(np.abs(m), np.abs(j))[0, 1] if np.std(m) > 0 and np.std(j) > 0 else float("nan")
        out.append({"lag": k, "sign_agreement": float((np.sign(m) == np.sign(j)).mean()),
                    "sign_agreement_shuffled": float((np.sign(m) == np.sign(shuffled)).mean()),
                    "magnitude_correlation": float(magnitude)})
    return out
