"""Stage validate@NAME: one hidden-state intervention (params validate.interventions), in the real environment
on the same level seeds as an unaltered control, and in the simulator from the same latents.

Beside it runs the same spec in a random basis (directions of the same lengths, random orientations): the
effect an arbitrary edit of that size has. Writes metrics/validation/NAME.json and plots/validation/NAME/.

    python stages/validate.py NAME
"""
import sys

import numpy as np
import torch

from rlinterp import plots
from rlinterp.agent.checkpoint import file_sha256, load_agent
from rlinterp.agent.evaluate import AgentPolicy, level_sets, play_episodes
from rlinterp.analysis.decompose import Basis
from rlinterp.config import load_params
from rlinterp.envs import ACTION_NAMES, NUM_ACTIONS
from rlinterp.interventions import HookedIntervention, Intervention
from rlinterp.runtime import StageError, setup_torch, stage_main, write_json
from rlinterp.simulator.sample import frames_to_obs
from rlinterp.simulator.train import load_simulator
from rlinterp.store import RolloutStore
from rlinterp.validation import action_shift, bootstrap_difference, compare_real, sign_flip_pvalue
from rlinterp.video import write_gif

AGENT = "data/agent/checkpoint.pt"
SIMULATOR = "data/simulator/checkpoint.pt"
SAMPLES = "data/samples.zarr"
HX_BASIS = "data/analysis/agent_hx_real/basis.npz"


class CountingPolicy(AgentPolicy):
    """The agent's sampled policy, counting the actions it takes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counts = np.zeros(NUM_ACTIONS, dtype=np.int64)

    def __call__(self, obs, first):
        actions = super().__call__(obs, first)
        self.counts += np.bincount(actions, minlength=NUM_ACTIONS)
        return actions


def random_basis_like(edit: Intervention, seed: int) -> Intervention:
    """The same spec on random orthogonal directions with the lengths of the real ones (u_k . d_k = 1)."""
    rng = np.random.default_rng(seed)
    count, size = edit.directions.shape
    q = torch.as_tensor(np.linalg.qr(rng.standard_normal((size, size)))[0][:, :count].T, dtype=torch.float32)
    lengths = edit.directions.norm(dim=1, keepdim=True)
    return Intervention(q / lengths, q * lengths, edit.mean, edit.pairs)


@stage_main
def main() -> None:
    name = sys.argv[1]
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    config = params.validate
    spec = config.interventions.get(name)
    if spec is None:
        raise StageError(f"validate {name!r}: no such intervention in params.yaml validate.interventions "
                         f"(expected one of {', '.join(config.interventions)})")
    agent, _ = load_agent(AGENT, device, expected=params.agent)
    basis = Basis.load(HX_BASIS)
    try:
        edit = Intervention.from_spec(basis, config.basis, list(spec.source), list(spec.target))
    except ValueError as err:
        raise StageError(f"validate.interventions {name}: {err}") from err
    runs = {"control": None, "edited": edit, "random_basis": random_basis_like(edit, config.seed)}

    start_level, num_levels = level_sets(params.env, params.evaluate)[f"{config.levels}_levels"]
    real, counts = {}, {}
    for run, intervention in runs.items():
        policy = CountingPolicy(agent, config.seed, device=str(device))
        hooked = HookedIntervention(agent, intervention) if intervention is not None else None
        with hooked if hooked is not None else torch.no_grad():
            real[run] = play_episodes(params.env, policy, config.num_envs, config.episodes_per_env, config.seed,
                                      start_level, num_levels, desc=f"validate {name}: {run}")
        counts[run] = policy.counts
    report = {"intervention": {"name": name, "basis": config.basis, "source": list(spec.source),
                               "target": list(spec.target)},
              "real": {run: compare_real(real[run], real["control"], counts[run], counts["control"],
                                         config.bootstrap_samples, config.seed) for run in ("edited", "random_basis")}}

    simulator, _ = load_simulator(SIMULATOR, agent, file_sha256(AGENT), expected=params.simulator, device=device)
    samples = RolloutStore(SAMPLES)
    count = min(config.sim_samples, samples.num_episodes)
    latents = torch.from_numpy(samples.rows("latent", samples.episode_starts[:count])).to(device)
    steps = params.sample.num_steps
    simulated = {}
    for run, intervention in runs.items():
        with torch.no_grad():
            if intervention is None:
                simulated[run] = simulator.rollout(latents, agent, steps, modal=True)
            else:
                with HookedIntervention(agent, intervention):
                    simulated[run] = simulator.rollout(latents, agent, steps, modal=True)
    readout = torch.as_tensor(basis.ica_unmixing, dtype=torch.float32)
    mean = torch.as_tensor(basis.mean, dtype=torch.float32)

    def ic(rollout):
        return ((rollout.agent_hx - mean) @ readout.T).mean((0, 1)).numpy()

    control_actions = np.bincount(simulated["control"].agent_action.flatten().numpy(), minlength=NUM_ACTIONS)
    report["simulated"] = {}
    for run in ("edited", "random_basis"):
        actions = np.bincount(simulated[run].agent_action.flatten().numpy(), minlength=NUM_ACTIONS)
        value, control_value = (simulated[r].agent_value.mean(0).numpy() for r in (run, "control"))
        report["simulated"][run] = {
            "action_total_variation": action_shift(actions, control_actions),
            "action_agreement_with_control": float((simulated[run].agent_action ==
                                                    simulated["control"].agent_action).float().mean()),
            "value": {**bootstrap_difference(value, control_value, config.bootstrap_samples, config.seed),
                      "p_value": sign_flip_pvalue(value, control_value, config.bootstrap_samples, config.seed)},
            "ic_activation_shift": (ic(simulated[run]) - ic(simulated["control"])).round(4).tolist()}
    write_json(f"metrics/validation/{name}.json", report)

    figures = f"plots/validation/{name}"
    plots.action_distributions({run: counts[run] / max(counts[run].sum(), 1) for run in runs}, ACTION_NAMES,
                               f"{figures}/real_actions.png", f"{name}: actions in the real environment")
    for index in range(min(config.videos, count)):
        left = frames_to_obs(simulated["control"].frames[:, index], simulator)
        right = frames_to_obs(simulated["edited"].frames[:, index], simulator)
        write_gif(f"{figures}/simulated_{index:03d}.gif", np.concatenate([left, right], axis=2), fps=6)


if __name__ == "__main__":
    main()
