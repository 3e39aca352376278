"""Stage saliency: SmoothGrad maps of value, greedy action (optionally every action's log-probability) and every
agent-hx IC (plus a random hx direction as the baseline) at chosen steps, with and without gradients through the
simulated environment.

Writes data/saliency.zarr (one array per mode / target / kind, shaped (sample, timestep, step, ...)),
metrics/saliency.json (how far back each target looks, beside the random direction), and plots/saliency/
(look-back curves, overlay GIFs of the value target, PNG strips of value / greedy action / first IC).
"""
import time

import numpy as np
import torch
import zarr

from rlinterp import plots
from rlinterp.analysis.decompose import Basis
from rlinterp.config import load_params
from rlinterp.envs import ACTION_NAMES
from rlinterp.runtime import StageError, setup_torch, stage_main, stage_paths
from rlinterp.files import atomic_directory, write_json
from rlinterp.saliency import (action_target, blur, combined_latent, direction_target, greedy_action_target, parse_ids,
                               saliency, value_target)
from rlinterp.simulator.sample import frames_to_obs
from rlinterp.simulator.checkpoint import load_agent_and_simulator
from rlinterp.store import RolloutStore
from rlinterp.video import write_gif


@stage_main
def main() -> None:
    paths = stage_paths("agent", "simulator", "samples", "hx_basis", "store", "metrics", "figures")
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    config = params.saliency
    agent, simulator = load_agent_and_simulator(paths.agent, paths.simulator, params.agent, params.simulator, device)
    samples = RolloutStore(paths.samples)
    ids = parse_ids(list(config.samples))
    bad = [i for i in ids if not 0 <= i < samples.num_episodes]
    if bad or not ids:
        raise StageError(f"saliency.samples = {list(config.samples)}: expected ids in [0, {samples.num_episodes}) "
                         f"(the samples in {paths.samples}), got {bad or 'none'}")
    latents = torch.from_numpy(samples.rows("latent", samples.episode_starts[ids])).to(device)
    sphere = params.simulator.bottleneck == "sphere"
    if config.combine:
        latents = combined_latent(latents, sphere)[None]
    basis = Basis.load(paths.hx_basis)
    rng = np.random.default_rng(config.seed)
    random_direction = rng.standard_normal(basis.ica_unmixing.shape[1])
    random_direction *= np.linalg.norm(basis.ica_unmixing, axis=1).mean() / np.linalg.norm(random_direction)
    actions = {f"action_{name}": action_target(a) for a, name in enumerate(ACTION_NAMES)} \
        if config.actions == "all" else {}
    targets = {"value": value_target, "action": greedy_action_target, **actions,
               **{f"ic_{k}": direction_target(row, basis.mean) for k, row in enumerate(basis.ica_unmixing)},
               "random_direction": direction_target(random_direction, basis.mean)}
    generator = torch.Generator(device=device).manual_seed(config.seed)
    results = {True: [], False: []}
    start = time.perf_counter()
    for latent in latents:
        for env_grads in (True, False):
            results[env_grads].append(saliency(simulator, agent, latent, config.num_steps, targets,
                                               list(config.timesteps), noise_samples=config.noise_samples,
                                               noise_scale=config.noise_scale,
                                               frame_noise_scale=config.frame_noise_scale, env_grads=env_grads,
                                               generator=generator))
    seconds = time.perf_counter() - start
    maps_made = 2 * len(latents) * len(targets) * len(config.timesteps)

    lookback, kinds = {}, ("frames", "agent_hx", "env_h", "latent")
    with atomic_directory(paths.store) as out:
        root = zarr.open_group(out, mode="w")
        root.attrs.update({"samples": ids if not config.combine else [ids], "timesteps": list(config.timesteps),
                           "targets": list(targets), "combine": config.combine})
        for env_grads, per_sample in results.items():
            mode = "with_env_grads" if env_grads else "without_env_grads"
            for name in targets:
                for kind in kinds:
                    data = np.stack([[getattr(r[(name, t)], kind).cpu().numpy() for t in config.timesteps]
                                     for r in per_sample]).astype(np.float32)
                    root.create_array(f"{mode}/{name}/{kind}", data=data)
                frames = np.stack([[r[(name, t)].frames.abs().sum((1, 2, 3)).cpu().numpy()
                                    for t in config.timesteps] for r in per_sample])     # (S, T, K)
                lookback[(mode, name)] = frames
    report = {"samples": len(latents), "targets": len(targets), "timesteps": list(config.timesteps),
              "maps_per_second": maps_made / seconds}
    for (mode, name), frames in lookback.items():
        earlier, total = 0.0, 0.0
        for ti, t in enumerate(config.timesteps):
            earlier += float(frames[:, ti, :t].sum())
            total += float(frames[:, ti, :t + 1].sum())
        report.setdefault(mode, {})[name] = {"share_of_frame_saliency_before_t": earlier / max(total, 1e-12)}
    for mode in ("with_env_grads", "without_env_grads"):
        ic = [v["share_of_frame_saliency_before_t"] for k, v in report[mode].items() if k.startswith("ic_")]
        report[mode]["ic_mean"] = {"share_of_frame_saliency_before_t": float(np.mean(ic))}
    write_json(paths.metrics, report)

    t0 = config.timesteps[0]
    curves = {f"{name} ({mode.replace('_', ' ')})": frames[:, 0, :t0 + 1].mean(0)
              for (mode, name), frames in lookback.items()
              if name in ("value", "action", "ic_0", "random_direction")}
    plots.lookback(curves, t0, f"{paths.figures}/lookback.png")
    for index in range(min(config.videos, len(latents))):
        maps = results[True][index][("value", t0)].frames.mean(1).cpu()        # (K, S, S) channel mean
        with torch.no_grad():
            rollout = simulator.rollout(latents[index][None], agent, config.num_steps, modal=True)
        obs = frames_to_obs(rollout.frames[:, 0], simulator)
        overlay = saliency_overlay(obs, blur(maps, config.blur_kernel, config.blur_sigma).numpy())
        write_gif(f"{paths.figures}/value_t{t0}_sample_{index:03d}.gif", overlay, fps=4)
        for name in ("value", "action", "ic_0"):
            magnitude = results[True][index][(name, t0)].frames.abs().sum(1).cpu()
            plots.saliency_strip(rollout.frames[:t0 + 1, 0].cpu(),
                                 blur(magnitude, config.blur_kernel, config.blur_sigma)[:t0 + 1],
                                 f"{paths.figures}/{name}_t{t0}_sample_{index:03d}.png",
                                 f"|d {name} at step {t0} / d frame| (blurred), sample {index}, with env grads")


def saliency_overlay(obs: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Greyscale frames with positive saliency in blue and negative in red, scaled by the clip's largest |value|."""
    maps = plots.signed_unit_maps(maps, obs.shape[1])
    grey = obs.mean(-1, keepdims=True) * 0.5
    out = np.repeat(grey, 3, -1)
    out[..., 2] += np.clip(maps, 0, 1) * 200
    out[..., 0] += np.clip(-maps, 0, 1) * 200
    return np.clip(out, 0, 255).astype(np.uint8)


if __name__ == "__main__":
    main()
