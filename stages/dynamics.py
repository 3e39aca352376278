"""Stage dynamics: cross-correlation and Jacobians of the agent-hx ICs over simulated samples, with and without
gradients through the simulated environment, and their consistency; overall and per behaviour.

Writes data/dynamics/dynamics.npz, metrics/dynamics.json, and in plots/dynamics/ heat maps (all samples and
the `plotted_behaviours` behaviours with the most Jacobian samples) and the overall consistency curves.
"""
import numpy as np
import torch

from rlinterp import plots
from rlinterp.analysis.decompose import Basis
from rlinterp.config import load_params
from rlinterp.analysis.behaviour import BehaviourLabels
from rlinterp.dynamics import DynamicsArrays, consistency, cross_correlation, jacobians, lagged
from rlinterp.runtime import StageError, setup_torch, stage_main, stage_paths
from rlinterp.files import atomic_directory, write_json
from rlinterp.simulator.checkpoint import load_agent_and_simulator
from rlinterp.store import RolloutStore


def sign_agreement(rows: list[dict], mode: str) -> dict[str, float]:
    """Mean over lags of a consistency list: one number per group and mode, to compare groups at a glance."""
    return {f"sign_agreement_{mode}": float(np.mean([r["sign_agreement"] for r in rows])),
            f"sign_agreement_{mode}_shuffled": float(np.mean([r["sign_agreement_shuffled"] for r in rows]))}


@stage_main
def main() -> None:
    paths = stage_paths("agent", "simulator", "samples", "hx_basis", "behaviours", "out", "metrics", "figures")
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    config = params.dynamics
    agent, simulator = load_agent_and_simulator(paths.agent, paths.simulator, params.agent, params.simulator, device)
    samples = RolloutStore(paths.samples)
    steps = int(samples.episode_ends[0])
    basis = Basis.load(paths.hx_basis)
    hx = np.asarray(samples["hx"][:]).reshape(samples.num_episodes, steps, -1)
    activations = basis.ica(hx.reshape(-1, hx.shape[-1])).reshape(samples.num_episodes, steps, -1)
    behaviour = BehaviourLabels.load(paths.behaviours).behaviour
    prior = np.flatnonzero(samples.rows("source_step", samples.episode_starts) < 0)
    if config.target_step >= steps or len(prior) == 0:
        raise StageError(f"dynamics.target_step = {config.target_step}: expected a step of the {steps}-step prior "
                         f"samples in {paths.samples} ({len(prior)} prior samples found)")
    chosen = prior[:config.samples]
    latents = torch.from_numpy(samples.rows("latent", samples.episode_starts[chosen])).to(device)
    readout, directions, mean = (torch.as_tensor(a, dtype=torch.float32) for a in
                                 (basis.ica_unmixing, basis.ica_directions, basis.mean))
    jac = {}
    for mode, env_grads in (("with_env", True), ("without_env", False)):
        parts = [jacobians(simulator, agent, latents[i:i + config.batch_size], config.target_step + 1,
                           config.target_step, readout, directions, mean, env_grads).cpu().numpy()
                 for i in range(0, len(latents), config.batch_size)]
        jac[mode] = np.concatenate(parts)                                  # (N, tau, C, C)

    groups = {"all": np.arange(samples.num_episodes)}
    groups.update({f"behaviour_{b}": np.flatnonzero(behaviour == b) for b in np.unique(behaviour)})
    report, arrays = {"samples": int(samples.num_episodes), "jacobian_samples": int(len(chosen)),
                      "target_step": config.target_step, "max_lag": config.max_lag, "groups": {}}, {}
    for group, members in groups.items():
        jac_members = np.isin(chosen, members)
        if len(members) < 2 or not jac_members.any():
            continue
        xcorr = cross_correlation(activations[members], config.max_lag)
        entry = {"samples": int(len(members)), "jacobian_samples": int(jac_members.sum())}
        arrays[f"{group}/xcorr"] = xcorr
        for mode in jac:
            per_lag = lagged(jac[mode][jac_members].mean(0), config.max_lag)
            arrays[f"{group}/jacobian_{mode}"] = per_lag
            entry[f"consistency_{mode}"] = consistency(xcorr, per_lag, config.seed)
            entry.update(sign_agreement(entry[f"consistency_{mode}"], mode))
        report["groups"][group] = entry
    overall = report["groups"]["all"]
    for mode in jac:
        report.update(sign_agreement(overall[f"consistency_{mode}"], mode))
    with atomic_directory(paths.out) as out:
        DynamicsArrays(arrays).save(out / "dynamics.npz")
    write_json(paths.metrics, report)
    behaviours = sorted((g for g in report["groups"] if g != "all"),       # the best-estimated ones
                        key=lambda g: -report["groups"][g]["jacobian_samples"])
    for group in ["all", *behaviours[:config.plotted_behaviours]]:
        entry = report["groups"][group]
        plots.matrix_grid({"cross-correlation": arrays[f"{group}/xcorr"],
                           "Jacobian through agent only": arrays[f"{group}/jacobian_without_env"],
                           "Jacobian through agent + environment": arrays[f"{group}/jacobian_with_env"]},
                          f"{paths.figures}/{group}.png", f"{group.replace('_', ' ')}: {entry['samples']} samples, "
                          f"Jacobians of {entry['jacobian_samples']} (target step {config.target_step})")
    plots.consistency_curves({mode: overall[f"consistency_{mode}"] for mode in jac}, f"{paths.figures}/consistency.png")


if __name__ == "__main__":
    main()
