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
consistency at lag k: do correlation and causation agree? Over the off-diagonal (i != j) entries only (a
    component's own persistence fills the diagonal of both, which alone can make them agree): the share where M_k
    and J_k have the same sign and the correlation of their magnitudes, with a permutation test: the Jacobian's
    off-diagonal entries shuffled `permutations` times give the null distribution of the share, and the p-value
    (one-sided: agreement at least as high) per lag.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlinterp.analysis.decompose import Basis
from rlinterp.files import read_npz
from rlinterp.hooks import attached

MODES = {"with_env": True, "without_env": False}   # Jacobians through agent and simulated environment, or agent only


@dataclass
class DynamicsArrays:
    """dynamics.npz: per group ("all" or a behaviour) and kind ("xcorr", "jacobian_with_env", ...), a
    (max_lag + 1, C, C) array; `arrays` keys are "group/kind"."""
    arrays: dict[str, np.ndarray]

    def save(self, path) -> None:
        np.savez(path, **{key.replace("/", "__"): value for key, value in self.arrays.items()})

    @classmethod
    def load(cls, path) -> DynamicsArrays:
        return cls({key.replace("__", "/"): value for key, value in read_npz(path).items()})


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


def consistency(xcorr: np.ndarray, jac: np.ndarray, seed: int, permutations: int = 1000) -> list[dict[str, float]]:
    """Per lag k >= 1 of both (K, C, C) arrays, over off-diagonal entries: sign agreement, magnitude correlation,
    the mean agreement of `permutations` shuffles of the Jacobian's entries, and the permutation p-value."""
    rng = np.random.default_rng(seed)
    off = ~np.eye(xcorr.shape[-1], dtype=bool)
    out = []
    for k in range(1, min(len(xcorr), len(jac))):
        m, j = np.sign(xcorr[k][off]), jac[k][off]
        agreement = float((m == np.sign(j)).mean())
        shuffled = (m == np.sign(rng.permuted(np.tile(j, (permutations, 1)), axis=1))).mean(1)
        m_abs, j_abs = np.abs(xcorr[k][off]), np.abs(j)
        magnitude = np.corrcoef(m_abs, j_abs)[0, 1] if m_abs.std() > 0 and j_abs.std() > 0 else float("nan")
        out.append({"lag": k, "sign_agreement": agreement, "sign_agreement_shuffled": float(shuffled.mean()),
                    "p_value": float((1 + (shuffled >= agreement - 1e-12).sum()) / (permutations + 1)),
                    "magnitude_correlation": float(magnitude)})
    return out

def ic_jacobians(simulator, agent, latents: torch.Tensor, basis: Basis, target_step: int,
                 batch_size: int) -> dict[str, np.ndarray]:
    """mode -> (N, target_step + 1, C, C) Jacobians of the basis's ICs (see `jacobians`), `batch_size` latents at
    a time."""
    readout, directions, mean = (torch.as_tensor(a, dtype=torch.float32) for a in
                                 (basis.ica_unmixing, basis.ica_directions, basis.mean))
    return {mode: np.concatenate([jacobians(simulator, agent, latents[i:i + batch_size], target_step + 1,
                                            target_step, readout, directions, mean, env_grads).cpu().numpy()
                                  for i in range(0, len(latents), batch_size)])
            for mode, env_grads in MODES.items()}


def sign_agreement(rows: list[dict], mode: str) -> dict[str, float]:
    """Mean over lags of a consistency list: one number per group and mode, to compare groups at a glance."""
    return {f"sign_agreement_{mode}": float(np.mean([r["sign_agreement"] for r in rows])),
            f"sign_agreement_{mode}_shuffled": float(np.mean([r["sign_agreement_shuffled"] for r in rows]))}


def compare_groups(activations: np.ndarray, jac: dict[str, np.ndarray], jacobian_rows: np.ndarray,
                   groups: dict[str, np.ndarray], max_lag: int, seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Correlation against causation, per group of samples (e.g. all, or one behaviour).

    activations (N, T, C) are every sample's ICs; `jac` holds the Jacobians of the samples `jacobian_rows`. For each
    group with at least 2 Jacobian samples: the cross-correlation over those same samples (so correlation and
    causation describe the same rollouts), each mode's mean lagged Jacobian, and their consistency. Returns
    (group -> report entry, "group/kind" -> (max_lag + 1, C, C) arrays).
    """
    report, arrays = {}, {}
    for group, members in groups.items():
        in_group = np.isin(jacobian_rows, members)
        if in_group.sum() < 2:
            continue
        xcorr = cross_correlation(activations[jacobian_rows[in_group]], max_lag)   # the Jacobians' own samples
        entry = {"samples": int(len(members)), "jacobian_samples": int(in_group.sum())}
        arrays[f"{group}/xcorr"] = xcorr
        for mode in jac:
            per_lag = lagged(jac[mode][in_group].mean(0), max_lag)
            arrays[f"{group}/jacobian_{mode}"] = per_lag
            entry[f"consistency_{mode}"] = consistency(xcorr, per_lag, seed)
            entry.update(sign_agreement(entry[f"consistency_{mode}"], mode))
        report[group] = entry
    return report, arrays
