"""Held-out quality of a simulator: its loss terms, and open-loop frame error beside trivial baselines.

Open loop: the simulator sees only the context frames; every simulated step uses its prior state (most likely
class) and is driven by the recorded actions, as DreamerV3's open-loop videos are, so simulated step k can be
compared with real step k. Closed loop: the same, but the agent's own most likely actions drive it (how samples
are generated); it drifts from the recording wherever the agent would have acted otherwise. The baselines
predict every simulated frame as the last context frame (copy-last-frame) or as the mean training frame, on the
very same windows.
"""
from __future__ import annotations

import torch

from rlinterp.agent.model import RecurrentAgent
from rlinterp.config import TrainSimulatorConfig
from rlinterp.simulator.losses import Window, open_loop_rollout, window_from_batch, window_loss
from rlinterp.simulator.model import Rollout, Simulator


def open_loop(simulator: Simulator, agent: RecurrentAgent, window: Window, closed: bool = False) -> Rollout:
    """Simulate every step from the prior after encoding the context, driven by the recorded actions (or, with
    `closed`, by the agent's own)."""
    return open_loop_rollout(simulator, agent, simulator.encode(window.context, sample=False).value, window, closed)


def teacher_forced(simulator: Simulator, agent: RecurrentAgent, window: Window) -> Rollout:
    """Simulate every step from the posterior, which sees the real frame (most likely classes), driven by the
    recorded actions: what is left of the error is the decoder's."""
    steps = len(window.frames)
    return simulator.rollout(simulator.encode(window.context, sample=False).value, agent, steps,
                             frames=window.frames, actions=window.action, agent_hx=window.hx_prev,
                             action_prev=window.action_prev, imagine_from=steps, modal=True)


def nearest_distance(queries: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Euclidean distance from each query row to its nearest reference row."""
    return torch.cdist(queries.flatten(1).float(), reference.flatten(1).float()).min(dim=1).values


@torch.no_grad()
def prior_realism(simulator: Simulator, agent: RecurrentAgent, reference: dict[str, torch.Tensor],
                  heldout: dict[str, torch.Tensor], samples: int, steps: int, seed: int) -> dict[str, float]:
    """How close random-prior rollouts come to real data: the mean distance from each simulated step's agent hx
    (and frame) to its nearest neighbour among real training steps (`reference`: hx (N, H), frames (N, 3, S, S)),
    divided by the same distance for held-out real steps (`heldout`). 1 means as close as unseen real data."""
    generator = torch.Generator(device=reference["hx"].device).manual_seed(seed)
    latent = simulator.prior_latent(samples, generator, reference["hx"].device)
    rollout = simulator.rollout(latent, agent, steps, modal=True, generator=generator)
    simulated = {"hx": rollout.agent_hx.flatten(0, 1), "frames": rollout.frames.flatten(0, 1)}
    report = {}
    for name in ("hx", "frames"):
        prior = float(nearest_distance(simulated[name], reference[name]).mean())
        real = float(nearest_distance(heldout[name], reference[name]).mean())
        report[f"prior_{name}_nn_distance"] = prior
        report[f"heldout_{name}_nn_distance"] = real
        report[f"prior_{name}_nn_ratio"] = prior / real
    return report


@torch.no_grad()
def evaluate_simulator(simulator: Simulator, agent: RecurrentAgent, batches: list[dict[str, torch.Tensor]],
                       config: TrainSimulatorConfig, mean_frame: torch.Tensor) -> dict:
    """Held-out loss terms (the training objective's) and frame MSE per simulated step, open loop
    (`simulator`, recorded actions) and closed loop (the agent acts), with the copy-last-frame and mean-frame
    baselines on the same windows."""
    was_training = simulator.training
    simulator.eval()
    totals: dict[str, float] = {}
    sq = {"simulator": 0.0, "simulator_closed_loop": 0.0, "copy_last_frame": 0.0, "mean_frame": 0.0}
    per_step = {name: 0.0 for name in sq}
    steps = 0.0
    windows = 0
    for batch in batches:
        window = window_from_batch(batch, simulator)
        _, stats = window_loss(simulator, agent, window, config, sample=False)
        size = len(window.mask[0])
        for name, value in stats.items():
            totals[name] = totals.get(name, 0.0) + value * size
        windows += size
        predictions = {"simulator": open_loop(simulator, agent, window).frames,
                       "simulator_closed_loop": open_loop(simulator, agent, window, closed=True).frames,
                       "copy_last_frame": window.context[:, -1].expand_as(window.frames),
                       "mean_frame": mean_frame.expand_as(window.frames)}
        for name, predicted in predictions.items():
            err = (predicted - window.frames).pow(2).mean((-3, -2, -1)) * window.mask
            sq[name] += float(err.sum())
            per_step[name] = per_step[name] + err.sum(1)
        steps = steps + window.mask.sum(1)
    simulator.train(was_training)
    curves = {name: (value / steps.clamp_min(1)).tolist() for name, value in per_step.items()}
    mse = {name: value / float(steps.sum()) for name, value in sq.items()}
    return {"heldout_windows": windows,
            "heldout_loss": {name: value / windows for name, value in totals.items()},
            "open_loop_obs_mse": mse,
            "obs_mse_ratio_to_copy_last_frame": mse["simulator"] / mse["copy_last_frame"],
            "open_loop_obs_mse_per_step": curves}
