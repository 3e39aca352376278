"""Stage validate@NAME: one hidden-state intervention (params validate.interventions), in the real environment
on the same level seeds as an unaltered control, and in the simulator from the same latents.

Beside it runs the same spec in a random basis (directions of the same lengths, random orientations): the
effect an arbitrary edit of that size has. The real runs are recorded into data/validation/NAME/RUN.zarr (RUN:
control, edited, random_basis; their hx is the state after the edit, the one the agent acted on) and compared
from there. Writes metrics/validation/NAME.json and plots/validation/NAME/ (actions, IC shifts, control | edited
GIFs of real episodes on the same level and of simulated rollouts from the same latent).

    python stages/validate.py NAME
"""
import dataclasses

import numpy as np
import torch

from rlinterp import plots
from rlinterp.agent.checkpoint import load_agent
from rlinterp.files import file_sha256
from rlinterp.agent.evaluate import level_sets
from rlinterp.analysis.decompose import Basis
from rlinterp.config import config_hash, load_params, to_dict
from rlinterp.envs import ACTION_NAMES, NUM_ACTIONS
from rlinterp.interventions import intervene, Intervention
from rlinterp.record import record_rollouts
from rlinterp.runtime import StageError, setup_torch, stage_main, stage_paths
from rlinterp.files import atomic_directory, write_json
from rlinterp.simulator.sample import frames_to_obs
from rlinterp.simulator.checkpoint import load_simulator
from rlinterp.store import RolloutStore, RolloutWriter, real_rollout_fields
from rlinterp.validation import action_shift, compare_real, ic_shifts, level_order, paired_test
from rlinterp.video import side_by_side, write_gif


def random_basis_like(edit: Intervention, seed: int) -> Intervention:
    """The same spec on random orthogonal directions with the lengths of the real ones (u_k . d_k = 1)."""
    rng = np.random.default_rng(seed)
    count, size = edit.directions.shape
    q = torch.as_tensor(np.linalg.qr(rng.standard_normal((size, size)))[0][:, :count].T, dtype=torch.float32)
    lengths = edit.directions.norm(dim=1, keepdim=True)
    return Intervention(q / lengths, q * lengths, edit.mean, edit.pairs)


@stage_main
def main() -> None:
    paths = stage_paths("agent", "simulator", "samples", "hx_basis", "out", "metrics", "figures", positional=("name",))
    name = paths.name
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    config = params.validate
    spec = config.interventions.get(name)
    if spec is None:
        raise StageError(f"validate {name!r}: no such intervention in params.yaml validate.interventions "
                         f"(expected one of {', '.join(config.interventions)})")
    agent, _ = load_agent(paths.agent, device, expected=params.agent)
    basis = Basis.load(paths.hx_basis)
    try:
        edit = Intervention.from_spec(basis, config.basis, list(spec.source), list(spec.target))
    except ValueError as err:
        raise StageError(f"validate.interventions {name}: {err}") from err
    # The control runs through the same hook with an empty edit, which returns the state untouched.
    runs = {"control": dataclasses.replace(edit, pairs=()), "edited": edit,
            "random_basis": random_basis_like(edit, config.seed)}
    intervention = {"name": name, "basis": config.basis, "source": list(spec.source), "target": list(spec.target)}

    start_level, num_levels = level_sets(params.env, params.evaluate)[f"{config.levels}_levels"]
    attrs = {"stage": "validate", "intervention": intervention, "agent_sha256": file_sha256(paths.agent),
             "params_hash": config_hash(params.env, params.agent, config), "env": to_dict(params.env),
             "levels": {"start_level": start_level, "num_levels": num_levels}}
    fields = real_rollout_fields(params.agent.hidden_size, NUM_ACTIONS)
    folder = paths.out
    with atomic_directory(folder) as tmp:
        for run, hook in runs.items():
            with RolloutWriter(tmp / f"{run}.zarr", fields, {**attrs, "run": run}) as writer, \
                    intervene(agent, hook):
                record_rollouts(params.env, agent, writer, config.num_envs, config.episodes_per_env, config.seed,
                                start_level, num_levels, device)
    real = {run: RolloutStore(f"{folder}/{run}.zarr") for run in runs}
    report = {"intervention": intervention,
              "real": {run: compare_real(real[run], real["control"], basis, config.bootstrap_samples, config.seed)
                       for run in ("edited", "random_basis")}}

    simulator, _ = load_simulator(paths.simulator, agent, file_sha256(paths.agent), expected=params.simulator,
                                  device=device)
    samples = RolloutStore(paths.samples)
    count = min(config.sim_samples, samples.num_episodes)
    latents = torch.from_numpy(samples.rows("latent", samples.episode_starts[:count])).to(device)
    simulated = {}
    for run, hook in runs.items():
        with torch.no_grad(), intervene(agent, hook):
            simulated[run] = simulator.rollout(latents, agent, params.sample.num_steps, modal=True)
    actions = {run: np.bincount(r.agent_action.flatten().cpu().numpy(), minlength=NUM_ACTIONS)
               for run, r in simulated.items()}
    values = {run: r.agent_value.mean(0).cpu().numpy() for run, r in simulated.items()}       # per sample
    ics = {run: basis.ica(r.agent_hx.cpu().numpy()) for run, r in simulated.items()}         # (steps, samples, C)
    ic_means = {run: (a.mean(0), np.abs(a).mean(0)) for run, a in ics.items()}                # per sample
    report["simulated"] = {run: {
        "action_total_variation": action_shift(actions[run], actions["control"]),
        "action_agreement_with_control": float((simulated[run].agent_action ==
                                                simulated["control"].agent_action).float().mean()),
        "value": paired_test(values[run], values["control"], config.bootstrap_samples, config.seed),
        **ic_shifts(ic_means[run], ic_means["control"], config.bootstrap_samples, config.seed)}
        for run in ("edited", "random_basis")}
    write_json(paths.metrics, report)

    figures = paths.figures
    shares = {"control": report["real"]["edited"]["action_distribution"]["control"],
              **{run: report["real"][run]["action_distribution"]["edited"] for run in ("edited", "random_basis")}}
    plots.action_distributions(shares, ACTION_NAMES, f"{figures}/real_actions.png",
                               f"{name}: actions in the real environment")
    plots.activation_shifts({label: {f"{run} ({where})": report[where][run][key]
                                     for run in ("edited", "random_basis") for where in ("real", "simulated")}
                             for label, key in (("mean activation", "ic_activation_shift"),
                                                ("mean |activation|", "ic_abs_activation_shift"))},
                            f"{figures}/ic_shifts.png", f"{name}: IC activation, edited - control (95% CI)")
    control_order, edited_order = level_order(real["control"]), level_order(real["edited"])
    for index in range(min(config.videos, real["control"].num_episodes)):
        left = real["control"].episode(int(control_order[index]), ["obs"])["obs"]
        right = real["edited"].episode(int(edited_order[index]), ["obs"])["obs"]
        write_gif(f"{figures}/real_{index:03d}.gif", side_by_side(left, right))
    for index in range(min(config.videos, count)):
        left = frames_to_obs(simulated["control"].frames[:, index], simulator)
        right = frames_to_obs(simulated["edited"].frames[:, index], simulator)
        write_gif(f"{figures}/simulated_{index:03d}.gif", side_by_side(left, right), fps=6)


if __name__ == "__main__":
    main()
