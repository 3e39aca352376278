"""Stage validate@NAME: one hidden-state intervention (validate.interventions.NAME), real and simulated, against
matched random edits (rlinterp.validation). Records data/validation/NAME/{control,edited}.zarr; writes
metrics/validation/NAME.json and plots/validation/NAME/ (effects, actions, control | edited GIFs)."""
import dataclasses

import torch
from tqdm import tqdm

from rlinterp import plots
from rlinterp.agent.evaluate import level_sets
from rlinterp.analysis.decompose import Basis
from rlinterp.config import config_hash, load_params, to_dict
from rlinterp.envs import ACTION_NAMES, NUM_ACTIONS
from rlinterp.files import atomic_directory, file_sha256, write_json
from rlinterp.runtime import setup_torch, stage_main, stage_paths
from rlinterp.simulator.checkpoint import load_agent_and_simulator
from rlinterp.simulator.sample import frames_to_obs
from rlinterp.store import RolloutStore, RolloutWriter, real_rollout_fields
from rlinterp.validation import (EpisodeOutcomes, MatchedRandomEdit, data_like_directions, level_order, named_edit,
                                 play_with_edit, simulate_edit, validation_report)
from rlinterp.video import side_by_side, write_gif


@stage_main
def main() -> None:
    paths = stage_paths("agent", "simulator", "samples", "hx_basis", "out", "metrics", "figures", positional=("name",))
    params = load_params("params.yaml")
    device, config = setup_torch(params.compute), params.validate
    basis = Basis.load(paths.hx_basis)
    edit = named_edit(config, paths.name, basis)
    agent, simulator = load_agent_and_simulator(paths.agent, paths.simulator, params.agent, params.simulator, device)
    runs = {"control": dataclasses.replace(edit, pairs=()), "edited": edit}   # the control passes the same hook
    nulls = [MatchedRandomEdit(edit, u) for u in data_like_directions(basis, config.random_edits, config.seed)]
    levels = level_sets(params.env, params.evaluate)[f"{config.levels}_levels"]
    with atomic_directory(paths.out) as tmp:
        for run, hook in runs.items():
            with RolloutWriter(tmp / f"{run}.zarr", real_rollout_fields(params.agent.hidden_size, NUM_ACTIONS), {
                    "stage": "validate", "intervention": paths.name, "run": run, "env": to_dict(params.env),
                    "agent_sha256": file_sha256(paths.agent),
                    "params_hash": config_hash(params.env, params.agent, config)}) as writer:
                play_with_edit(params.env, agent, hook, writer, config, levels, device)
    stores = {run: RolloutStore(f"{paths.out}/{run}.zarr") for run in runs}
    real = {run: EpisodeOutcomes.from_store(store, NUM_ACTIONS) for run, store in stores.items()}
    null_real = [EpisodeOutcomes(NUM_ACTIONS) for _ in nulls]
    for hook, outcomes in zip(tqdm(nulls, desc="matched random edits", unit="edit"), null_real):
        play_with_edit(params.env, agent, hook, outcomes, config, levels, device)
    samples = RolloutStore(paths.samples)
    latents = torch.from_numpy(samples.rows("latent", samples.episode_starts[:config.sim_samples])).to(device)
    simulated = {name: simulate_edit(simulator, agent, latents, hook, params.sample.num_steps)
                 for name, hook in [*runs.items(), *((f"null_{k}", h) for k, h in enumerate(nulls))]}
    report = validation_report(real["control"], real["edited"], null_real, {
        name: {"value": r.agent_value.cpu().numpy(), "action": r.agent_action.cpu().numpy()}
        for name, r in simulated.items()}, config.bootstrap_samples, config.seed)
    write_json(paths.metrics, {"intervention": {"name": paths.name, **to_dict(config.interventions[paths.name])},
                               "episodes": stores["control"].num_episodes, "sim_samples": len(latents), **report,
                               "random_edit_sizes": [null.size_report() for null in nulls]})

    plots.validation_effects(report["outcomes"], f"{paths.figures}/effects.png",
                             f"{paths.name}: edit - control, against {len(nulls)} matched random edits")
    plots.action_distributions({run: o.action_counts / max(o.action_counts.sum(), 1) for run, o in real.items()},
                               ACTION_NAMES, f"{paths.figures}/real_actions.png", f"{paths.name}: real actions")
    for index in range(min(config.videos, stores["control"].num_episodes, len(latents))):
        real_pair = [store.episode(int(level_order(store)[index]), ["obs"])["obs"] for store in stores.values()]
        write_gif(f"{paths.figures}/real_{index:03d}.gif", side_by_side(*real_pair))
        sim_pair = [frames_to_obs(simulated[run].frames[:, index], simulator) for run in runs]
        write_gif(f"{paths.figures}/simulated_{index:03d}.gif", side_by_side(*sim_pair), fps=6)


if __name__ == "__main__":
    main()
