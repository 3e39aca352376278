"""Stage validate@NAME: one hidden-state intervention (validate.interventions.NAME), real and simulated, against
matched random edits (rlinterp.validation). Records data/validation/NAME/{control,edited}.zarr; writes
metrics/validation/NAME.json and plots/validation/NAME/ (effects, actions, control | edited GIFs)."""
import torch
from tqdm import tqdm

from rlinterp import plots
from rlinterp.agent.evaluate import level_sets
from rlinterp.analysis.decompose import Basis, data_like_directions
from rlinterp.config import config_hash, load_params, to_dict
from rlinterp.envs import ACTION_NAMES, NUM_ACTIONS
from rlinterp.files import atomic_directory, file_sha256, write_json
from rlinterp.runtime import setup_torch, stage_main, stage_paths
from rlinterp.simulator.checkpoint import load_agent_and_simulator
from rlinterp.simulator.sample import frames_to_obs
from rlinterp.store import RolloutStore, RolloutWriter, real_rollout_fields
from rlinterp.validation import (EditMonitor, EpisodeOutcomes, MatchedRandomEdit, level_order,
                                 named_edit, play_with_edit, readout_values, simulate_edit, validation_report)
from rlinterp.video import side_by_side, write_gif


@stage_main
def main() -> None:
    paths = stage_paths("agent", "simulator", "samples", "hx_basis", "out", "metrics", "figures", positional=("name",))
    params = load_params("params.yaml")
    device, config = setup_torch(params.compute), params.validate
    basis = Basis.load(paths.hx_basis)
    edit = named_edit(config, paths.name, basis)
    agent, simulator = load_agent_and_simulator(paths.agent, paths.simulator, params.agent, params.simulator, device)
    directions = data_like_directions(basis, config.random_edits, config.seed)
    levels = level_sets(params.env, params.evaluate)[f"{config.levels}_levels"]
    samples = RolloutStore(paths.samples)
    latents = torch.from_numpy(samples.rows("latent", samples.episode_starts[:config.sim_samples])).to(device)
    runs = ("control", "edited")
    with atomic_directory(paths.out) as tmp:
        def record(run: str, monitor: EditMonitor) -> EditMonitor:
            with RolloutWriter(tmp / f"{run}.zarr", real_rollout_fields(params.agent.hidden_size, NUM_ACTIONS), {
                    "stage": "validate", "intervention": paths.name, "run": run, "env": to_dict(params.env),
                    "agent_sha256": file_sha256(paths.agent),
                    "params_hash": config_hash(params.env, params.agent, config)}) as writer:
                play_with_edit(params.env, agent, monitor, writer, config, levels, device)
            return monitor
        # The control passes the same hook, unedited; its states bound where the edited run's may go.
        control = record("control", EditMonitor(None, edit.mean))
        monitors = {"real": {"control": control,
                             "edited": record("edited", EditMonitor(edit, edit.mean, control.largest_norm()))}}
    stores = {run: RolloutStore(f"{paths.out}/{run}.zarr") for run in runs}
    real = {run: EpisodeOutcomes.from_store(store, NUM_ACTIONS) for run, store in stores.items()}
    readout = EpisodeOutcomes.from_store(stores["control"], NUM_ACTIONS,
                                         readout_values(agent, stores["control"], edit, device))
    control = EditMonitor(None, edit.mean)
    simulated = {"control": simulate_edit(simulator, agent, latents, control, params.sample.num_steps)}
    monitors["sim"] = {"control": control, "edited": EditMonitor(edit, edit.mean, control.largest_norm())}
    simulated["edited"] = simulate_edit(simulator, agent, latents, monitors["sim"]["edited"], params.sample.num_steps)
    null_real = [EpisodeOutcomes(NUM_ACTIONS) for _ in directions]
    for k, (u, outcomes) in enumerate(zip(tqdm(directions, desc="matched random edits", unit="edit"), null_real)):
        for where in ("real", "sim"):
            matched = MatchedRandomEdit(u, edit.mean, monitors[where]["edited"].sizes)
            monitors[where][f"null_{k}"] = EditMonitor(matched, edit.mean, monitors[where]["edited"].radius)
        play_with_edit(params.env, agent, monitors["real"][f"null_{k}"], outcomes, config, levels, device)
        simulated[f"null_{k}"] = simulate_edit(simulator, agent, latents, monitors["sim"][f"null_{k}"],
                                               params.sample.num_steps)
    report = validation_report(real["control"], real["edited"], null_real, readout, {
        name: {"value": r.agent_value.cpu().numpy(), "action": r.agent_action.cpu().numpy()}
        for name, r in simulated.items()}, monitors, config.bootstrap_samples, config.seed)
    write_json(paths.metrics, {"intervention": {"name": paths.name, **to_dict(config.interventions[paths.name])},
                               "episodes": stores["control"].num_episodes, "sim_samples": len(latents), **report})

    plots.validation_effects(report["outcomes"], f"{paths.figures}/effects.png",
                             f"{paths.name}: edit - control, against {len(directions)} matched random edits")
    plots.action_distributions({run: o.action_counts / max(o.action_counts.sum(), 1) for run, o in real.items()},
                               ACTION_NAMES, f"{paths.figures}/real_actions.png", f"{paths.name}: real actions")
    for index in range(min(config.videos, stores["control"].num_episodes, len(latents))):
        real_pair = [store.episode(int(level_order(store)[index]), ["obs"])["obs"] for store in stores.values()]
        write_gif(f"{paths.figures}/real_{index:03d}.gif", side_by_side(*real_pair))
        sim_pair = [frames_to_obs(simulated[run].frames[:, index], simulator) for run in runs]
        write_gif(f"{paths.figures}/simulated_{index:03d}.gif", side_by_side(*sim_pair), fps=6)


if __name__ == "__main__":
    main()
