"""Why do informed samples reward and end more often than their real episodes? Open loop against closed loop.

From the encoded starts of the episodes the sample stage simulated informed samples from (test levels), the
simulator runs `sample.num_steps` steps driven by the recorded actions (open loop), and with the agent acting on
the simulated frames (closed loop): by its most likely action (the original's choice), and by actions drawn from its
policy (`sample.actions: sampled`, `--draws` rollouts per start). For each, the share of
windows the calibrated heads expect to hold a reward and an end (1 - prod(1 - p) over the real episode's steps),
beside the real share of the same steps; and the mean reward probability per step. Where open loop stays near the
real share and closed loop far above it, the excess is the policy the closed loop plays, not the frames or heads.
The real game tells which policy: on the same levels, from reset, how often the agent completes the level within
those steps when it samples its actions (the recorded policy) and when it takes its most likely one.

    python benchmarks/closed_loop_events.py [--samples data/samples.zarr]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from rlinterp.agent.acting import AgentPolicy
from rlinterp.agent.evaluate import play_episodes
from rlinterp.config import load_params
from rlinterp.simulator.checkpoint import load_agent_and_simulator
from rlinterp.simulator.data import WINDOW_FIELDS
from rlinterp.simulator.losses import open_loop_rollout, window_from_batch
from rlinterp.simulator.sample import informed_first_transition
from rlinterp.store import RolloutStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--agent", default="data/agent/checkpoint.pt")
    parser.add_argument("--simulator", default="data/simulator/checkpoint.pt")
    parser.add_argument("--store", default="data/rollouts.zarr")
    parser.add_argument("--samples", default="data/samples.zarr", help="its informed samples name the episodes")
    parser.add_argument("--episodes", type=int, default=4, help="real episodes per level for the sampling agent")
    parser.add_argument("--draws", type=int, default=8, help="closed-loop rollouts per start with sampled actions")
    args = parser.parse_args()
    params = load_params(args.params)
    agent, simulator = load_agent_and_simulator(args.agent, args.simulator, params.agent, params.simulator)
    samples, real = RolloutStore(args.samples), RolloutStore(args.store)
    sources = samples.rows("source_step", samples.episode_starts)
    first = sources[sources >= 0]
    steps = params.sample.num_steps
    windows = real.windows(first, params.simulator.num_init_steps + steps - 1, WINDOW_FIELDS)
    window = window_from_batch({k: torch.from_numpy(v) for k, v in windows.items()}, simulator)
    mask = window.label_mask                                    # (K, B): the real episode's transitions
    print(f"{len(first)} informed starts, {steps} steps; share of windows with the event (expected by the "
          "calibrated heads, over each real episode's steps)")
    print(f"{'real':20s} reward {(window.reward * mask).gt(0).any(0).float().mean():.3f}   "
          f"end {(window.done * mask).gt(0).any(0).float().mean():.3f}")
    generator = torch.Generator().manual_seed(params.sample.seed)
    rollouts = {
        "open loop": lambda: open_loop_rollout(simulator, agent, latent, window),
        "closed, most likely": lambda: open_loop_rollout(simulator, agent, latent, window, closed=True),
        "closed, sampled": lambda: simulator.rollout(
            latent.repeat(args.draws, 1), agent, steps, agent_hx=window.hx_prev.repeat(args.draws, 1),
            action_prev=window.action_prev.repeat(args.draws), modal=True, sample_actions=True, generator=generator)}
    with torch.no_grad():
        latent = simulator.encode(window.context, sample=False).value
        for name, rollout in rollouts.items():
            out = rollout()
            rows = mask.repeat(1, out.done_logit.shape[1] // len(first))      # each start's mask, per draw
            reward = 1 - out.reward_logits.softmax(-1)[..., simulator.reward_support == 0].sum(-1)
            end = torch.sigmoid(out.done_logit)
            share = {event: (1 - torch.prod(1 - p * rows, 0)).mean() for event, p in (("reward", reward),
                                                                                     ("end", end))}
            per_step = (reward * rows).sum(1) / rows.sum(1).clamp_min(1)
            print(f"{name:20s} reward {share['reward']:.3f}   end {share['end']:.3f}   "
                  f"P(reward) per step: {' '.join(f'{x:.3f}' for x in per_step.tolist())}")

    horizon = informed_first_transition(simulator) + steps      # an episode of this length ends in the window
    for name, greedy, episodes in (("sampled actions", False, args.episodes), ("most likely action", True, 1)):
        lengths, completed = [], []
        for seed in real.rows("level_seed", first):             # one level at a time: the same levels, from reset
            result = play_episodes(params.env, AgentPolicy(agent, params.sample.seed, greedy=greedy), 1, episodes,
                                   params.sample.seed, int(seed), 1, progress=False)
            lengths.append(result.lengths)
            completed.append(result.completed)
        lengths, completed = np.concatenate(lengths), np.concatenate(completed)
        print(f"real game, {name} ({len(lengths)} episodes on these levels): completes within {horizon} steps "
              f"{(completed & (lengths <= horizon)).mean():.3f}, completes at all {completed.mean():.3f}")


if __name__ == "__main__":
    main()
