"""Why do samples reward and end more or less often than real windows? Open loop against closed loop (informed
samples), and encoded starts against the fitted prior (prior samples).

From the encoded starts of the episodes the sample stage simulated informed samples from (test levels), the
simulator runs `sample.num_steps` steps driven by the recorded actions (open loop), and with the agent acting on
the simulated frames (closed loop): by its most likely action (the original's choice), and by actions drawn from its
policy (`sample.actions: sampled`, `--draws` rollouts per start). For each, the share of
windows the calibrated heads expect to hold a reward and an end (1 - prod(1 - p) over the real episode's steps),
beside the real share of the same steps; and the mean reward probability per step. Where open loop stays near the
real share and closed loop far above it, the excess is the policy the closed loop plays, not the frames or heads.
The real game tells which policy: on the same levels, from reset, how often the agent completes the level within
those steps when it samples its actions (the recorded policy) and when it takes its most likely one.

Prior samples (`--windows` real windows from random steps of the test-level episodes, what a prior sample stands
for): closed loop with sampled actions from each window's encoded latent and the real hx and previous action, from
the same latent with the converters' hx and action (as prior samples start), and from fitted-prior latents. Where
the first matches the real share and the second falls short, a prior sample's start is the converters'; where both
match and the prior's falls short, the fitted prior covers too few windows near the coin.

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
from rlinterp.simulator.data import WINDOW_FIELDS, heldout_windows, simulator_split
from rlinterp.simulator.losses import open_loop_rollout, window_from_batch
from rlinterp.simulator.sample import episode_events, informed_first_transition
from rlinterp.store import RolloutStore


def expected_shares(simulator, out, rows: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The share of rollouts the calibrated heads expect to hold a reward and an end (1 - prod(1 - p) over the
    steps where `rows` (K, B) is true), and the mean reward probability per step."""
    reward = 1 - out.reward_logits.softmax(-1)[..., simulator.reward_support == 0].sum(-1)
    end = torch.sigmoid(out.done_logit)
    shares = {event: (1 - torch.prod(1 - p * rows, 0)).mean() for event, p in (("reward", reward), ("end", end))}
    return shares, (reward * rows).sum(1) / rows.sum(1).clamp_min(1)


def drawn_shares(simulator, out, events: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The share of rollouts that reward and end when their events are drawn as the sample stage draws a sample's."""
    reward, done = episode_events(simulator, out, events, generator)
    return {"reward": (reward != 0).any(0).float().mean(), "end": done.any(0).float().mean()}


def print_row(name: str, shares: dict[str, torch.Tensor], per_step: torch.Tensor | None = None) -> None:
    steps = "" if per_step is None else "   P(reward) per step: " + " ".join(f"{x:.3f}" for x in per_step.tolist())
    print(f"{name:34s} reward {shares['reward']:.3f}   end {shares['end']:.3f}{steps}")


def real_shares(window) -> dict[str, torch.Tensor]:
    mask = window.label_mask
    return {"reward": (window.reward * mask).gt(0).any(0).float().mean(),
            "end": (window.done * mask).gt(0).any(0).float().mean()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--agent", default="data/agent/checkpoint.pt")
    parser.add_argument("--simulator", default="data/simulator/checkpoint.pt")
    parser.add_argument("--store", default="data/rollouts.zarr")
    parser.add_argument("--samples", default="data/samples.zarr", help="its informed samples name the episodes")
    parser.add_argument("--episodes", type=int, default=4, help="real episodes per level for the sampling agent")
    parser.add_argument("--draws", type=int, default=8, help="closed-loop rollouts per start with sampled actions")
    parser.add_argument("--windows", type=int, default=256, help="real windows from random steps (prior samples)")
    args = parser.parse_args()
    params = load_params(args.params)
    agent, simulator = load_agent_and_simulator(args.agent, args.simulator, params.agent, params.simulator)
    samples, real = RolloutStore(args.samples), RolloutStore(args.store)
    steps = params.sample.num_steps
    generator = torch.Generator().manual_seed(params.sample.seed)

    def sampled(latent, agent_hx=None, action_prev=None):
        """`--draws` closed-loop rollouts per latent, the agent sampling its actions, as the sample stage runs."""
        def repeat(x):
            return None if x is None else x.repeat(args.draws, *[1] * (x.dim() - 1))
        return simulator.rollout(repeat(latent), agent, steps, agent_hx=repeat(agent_hx),
                                 action_prev=repeat(action_prev), modal=params.sample.modal, sample_actions=True,
                                 generator=generator)

    sources = samples.rows("source_step", samples.episode_starts)
    first = sources[sources >= 0]
    windows = real.windows(first, params.simulator.num_init_steps + steps - 1, WINDOW_FIELDS)
    window = window_from_batch({k: torch.from_numpy(v) for k, v in windows.items()}, simulator)
    mask = window.label_mask                                    # (K, B): the real episode's transitions
    print(f"Informed samples: {len(first)} starts, {steps} steps; share of windows with the event (expected by the "
          "calibrated heads, over each real episode's steps)")
    print_row("real", real_shares(window))
    with torch.no_grad():
        latent = simulator.encode(window.context, sample=False).value
        for name, out in (("open loop", open_loop_rollout(simulator, agent, latent, window)),
                          ("closed, most likely", open_loop_rollout(simulator, agent, latent, window, closed=True)),
                          ("closed, sampled", sampled(latent, window.hx_prev, window.action_prev))):
            rows = mask.repeat(1, out.done_logit.shape[1] // len(first))      # each start's mask, per draw
            print_row(name, *expected_shares(simulator, out, rows))

    test = simulator_split(real, params.train_simulator).test
    batch = heldout_windows(real, test, params.simulator.num_init_steps, params.simulator.num_init_steps + steps - 1,
                            args.windows, params.sample.seed)
    window = window_from_batch(batch, simulator)
    print(f"\nPrior samples: {window.mask.shape[1]} real windows from random steps of the test-level episodes, each "
          f"cut at its episode's end; simulated rows: {args.draws} rollouts per latent, events drawn and cut at the "
          f"first end (as the sample stage writes a sample), and expected by the heads over all {steps} steps")
    print_row("real", real_shares(window))
    with torch.no_grad():
        latent = simulator.encode(window.context, sample=False).value
        prior = simulator.prior_latent(len(latent), generator)
        for name, out in (("encoded, real hx", sampled(latent, window.hx_prev, window.action_prev)),
                          ("encoded, converters' hx", sampled(latent)),
                          ("fitted prior", sampled(prior))):
            drawn = drawn_shares(simulator, out, params.sample.events, generator)
            expected = expected_shares(simulator, out, torch.ones_like(out.done_logit))[0]
            print_row(f"{name}, drawn", drawn)
            print_row(f"{name}, expected", expected)

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
