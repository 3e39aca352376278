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
from rlinterp.dynamics import DynamicsArrays, compare_groups, ic_jacobians, sign_agreement
from rlinterp.runtime import StageError, setup_torch, stage_main, stage_paths
from rlinterp.files import atomic_directory, write_json
from rlinterp.simulator.checkpoint import load_agent_and_simulator
from rlinterp.store import RolloutStore


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
    jac = ic_jacobians(simulator, agent, latents, basis, config.target_step, config.batch_size)
    groups = {"all": np.arange(samples.num_episodes),
              **{f"behaviour_{b}": np.flatnonzero(behaviour == b) for b in np.unique(behaviour)}}
    compared, arrays = compare_groups(activations, jac, chosen, groups, config.max_lag, config.seed)
    report = {"samples": int(samples.num_episodes), "jacobian_samples": int(len(chosen)),
              "target_step": config.target_step, "max_lag": config.max_lag, "groups": compared}
    overall = compared["all"]
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
