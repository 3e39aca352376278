"""Stage saliency: SmoothGrad maps of value, greedy action (optionally every action), every agent-hx IC and random
hx directions (the ICs' null) at chosen steps, with and without gradients through the simulated environment.
Writes data/saliency.zarr (rlinterp.saliency_store), metrics/saliency.json (how far back each target looks, with
CIs over samples), and plots/saliency/ (look-back curves, value overlay GIFs, value / action / first-IC strips).
"""
import time

import torch

from rlinterp import plots
from rlinterp.analysis.decompose import Basis
from rlinterp.config import load_params
from rlinterp.files import atomic_directory, write_json
from rlinterp.runtime import setup_torch, stage_main, stage_paths
from rlinterp.saliency import (RANDOMISATION_TARGETS, blur, combined_start, explain_samples, parse_ids,
                               randomisation_check, replay, saliency_targets)
from rlinterp.simulator.checkpoint import load_agent_and_simulator
from rlinterp.simulator.sample import frames_to_obs, sample_starts
from rlinterp.store import RolloutStore
from rlinterp.video import write_gif


@stage_main
def main() -> None:
    paths = stage_paths("agent", "simulator", "samples", "real", "hx_basis", "store", "metrics", "figures")
    params = load_params("params.yaml")
    device, config = setup_torch(params.compute), params.saliency
    agent, simulator = load_agent_and_simulator(paths.agent, paths.simulator, params.agent, params.simulator, device)
    samples = RolloutStore(paths.samples)
    ids = parse_ids(list(config.samples), samples.num_episodes, paths.samples)
    starts = sample_starts(simulator, samples, RolloutStore(paths.real), ids, device)
    starts = [combined_start(starts, params.simulator.bottleneck == "sphere")] if config.combine else starts
    targets = saliency_targets(Basis.load(paths.hx_basis), config.actions == "all", config.random_directions,
                               config.seed)
    smoothgrad = dict(noise_samples=config.noise_samples, noise_scale=config.noise_scale,
                      generator=torch.Generator(device=device).manual_seed(config.seed))
    start = time.perf_counter()
    store = explain_samples(simulator, agent, starts, [ids] if config.combine else ids, config.num_steps, targets,
                            list(config.timesteps), config.combine, frame_noise_scale=config.frame_noise_scale,
                            **smoothgrad)
    maps_per_second = 2 * len(starts) * len(targets) * len(config.timesteps) / (time.perf_counter() - start)
    report = {"samples": len(starts), "targets": len(targets), "timesteps": list(config.timesteps),
              "maps_per_second": maps_per_second, **store.lookback_report(),
              "randomisation": randomisation_check(simulator, agent,
                                                   {name: targets[name] for name in RANDOMISATION_TARGETS}, starts,
                                                   config.num_steps, list(config.timesteps), config.seed,
                                                   **smoothgrad)}
    with atomic_directory(paths.store) as out:
        store.first(config.stored_samples).save(out)
    write_json(paths.metrics, report)

    t0 = config.timesteps[0]
    plots.lookback(store.lookback_curves(("value", "action", "ic_0", "random_direction_0")), t0,
                   f"{paths.figures}/lookback.png")
    for index in range(min(config.videos, len(starts))):
        rollout = replay(simulator, agent, starts[index], config.num_steps)
        value_maps = blur(torch.from_numpy(store.get("with_env_grads", "value", "frames")[index, 0]).mean(1),
                          config.blur_kernel, config.blur_sigma)
        overlay = plots.saliency_overlay(frames_to_obs(rollout.frames[:, 0], simulator), value_maps.numpy())
        write_gif(f"{paths.figures}/value_t{t0}_sample_{index:03d}.gif", overlay, fps=4)
        for name in ("value", "action", "ic_0"):
            magnitude = torch.from_numpy(store.get("with_env_grads", name, "frames")[index, 0]).abs().sum(1)
            plots.saliency_strip(rollout.frames[:t0 + 1, 0].cpu(),
                                 blur(magnitude, config.blur_kernel, config.blur_sigma)[:t0 + 1],
                                 f"{paths.figures}/{name}_t{t0}_sample_{index:03d}.png",
                                 f"|d {name} at step {t0} / d frame| (blurred), sample {index}, with env grads")


if __name__ == "__main__":
    main()
