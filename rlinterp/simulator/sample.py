"""Simulated agent-environment rollouts, written as a RolloutStore so every analysis runs on them as on real ones.

Each sample is one "episode" of `num_steps` simulated steps, closed loop: the frozen agent acts on the decoded
frames (drawing its actions from its policy, `actions: sampled`, or taking the most likely one, `greedy`) and its
action drives the simulator. Two ways to start:
    prior     a random latent from the bottleneck's prior; the converters give the agent's hx and last action
    informed  the encoded first frames of a real episode on the test levels, starting the agent from its real hx
Besides the real-rollout fields, a simulated store holds per step `env_h` (deterministic state), `env_z` (the
class of each categorical latent), `latent` (the sample's latent, repeated), `done_prob`, and `source_step`
(first global step of the real window an informed sample encodes, in the real store; -1 for prior samples).
`reward` and `done` come from the reward and done heads: drawn from their distributions (`events: sampled`, one
uniform per step driving both, see `draw_events`), or the original's reading, the likeliest reward and
done_prob > 0.5 (`events: likeliest`), which never produces an event the heads give less than even odds -- in CoinRun
every event, so such samples never end. Either way a reward is one the game gives; `completed` marks samples where
an end was drawn.
As in training, nothing after the first predicted end counts: later steps' rewards and dones are zeroed (frames and
states go on, so every sample has `num_steps` steps), so a sample's return is the reward up to its predicted end.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from rlinterp.agent.model import RecurrentAgent
from rlinterp.intervals import group_bootstrap_weights, percentile_interval, resampled_means
from rlinterp.simulator.data import WINDOW_FIELDS
from rlinterp.simulator.losses import Window, window_from_batch
from rlinterp.simulator.model import Simulator
from rlinterp.store import FieldSpec, RolloutStore, RolloutWriter, real_rollout_fields


def sample_fields(simulator: Simulator) -> dict[str, FieldSpec]:
    c = simulator.config
    return {**real_rollout_fields(simulator.agent_hidden_size, simulator.num_actions),
            "env_h": FieldSpec((c.deter_size,), np.float32), "env_z": FieldSpec((c.stoch_groups,), np.int16),
            "latent": FieldSpec((c.bottleneck_size,), np.float32), "done_prob": FieldSpec((), np.float32),
            "source_step": FieldSpec((), np.int64)}


def frames_to_obs(frames: torch.Tensor, simulator: Simulator) -> np.ndarray:
    """Simulated frames (..., 3, S, S) in [0, 1] -> uint8 obs (..., 64, 64, 3), as the agent saw them."""
    lead = frames.shape[:-3]
    pixels = simulator.agent_pixels(frames.reshape(-1, *frames.shape[-3:]))
    obs = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return obs.reshape(*lead, *obs.shape[1:]).cpu().numpy()


EVENTS = ("sampled", "likeliest")


def draw_events(simulator: Simulator, reward_logits: torch.Tensor, done_logit: torch.Tensor, events: str,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each step's reward (a support value) and end (bool) from the heads' outputs (K, B, R) and (K, B).

    sampled: one uniform u per step drives both by inverting each head's distribution (reward: its CDF over the
    rising support; end: u > 1 - p_end). Each event keeps its head's probability exactly, and the two are
    coupled as tightly as those allow (the highest rewards fall where an end does): in CoinRun the coin ends the
    episode, which independent draws would break. likeliest: the most likely reward, and an end where p_end > 0.5."""
    done_prob = torch.sigmoid(done_logit)
    if events == "likeliest":
        return simulator.likeliest_reward(reward_logits), done_prob > 0.5
    uniform = torch.rand(done_prob.shape, generator=generator, device=done_prob.device)
    cdf = reward_logits.softmax(-1).cumsum(-1)
    index = (cdf <= uniform.unsqueeze(-1)).sum(-1).clamp_max(cdf.shape[-1] - 1)
    return simulator.reward_support[index], uniform > 1 - done_prob


def episode_events(simulator: Simulator, rollout, events: str, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A rollout's drawn rewards and ends (`draw_events`), (K, B) each, cut at the first end drawn: a sample is one
    episode, so nothing happens after it ends."""
    reward, done = draw_events(simulator, rollout.reward_logits, rollout.done_logit, events, generator)
    running = done.int().cumsum(0) - done.int() == 0          # (K, B): no end drawn before this step
    return reward * running, done & running


@torch.no_grad()
def simulate_batch(simulator: Simulator, agent: RecurrentAgent, steps: int, generator: torch.Generator,
                   modal: bool, actions: str, events: str, latent: torch.Tensor,
                   agent_hx: torch.Tensor | None = None, action_prev: torch.Tensor | None = None
                   ) -> dict[str, np.ndarray]:
    """Closed-loop rollouts from `latent` (B, bottleneck): every sample field as (B, steps, ...)."""
    out = simulator.rollout(latent, agent, steps, agent_hx=agent_hx, action_prev=action_prev, modal=modal,
                            sample_actions=actions == "sampled", generator=generator)
    c = simulator.config
    reward, done = episode_events(simulator, out, events, generator)
    fields = {"obs": frames_to_obs(out.frames, simulator), "hx": out.agent_hx, "logits": out.agent_logits,
              "value": out.agent_value, "action": out.agent_action.int(), "reward": reward,
              "done": done, "done_prob": torch.sigmoid(out.done_logit), "env_h": out.env_h,
              "env_z": out.env_z.view(steps, -1, c.stoch_groups, c.stoch_classes).argmax(-1).short(),
              "latent": latent.expand(steps, -1, -1)}
    return {k: np.swapaxes(v if isinstance(v, np.ndarray) else v.cpu().numpy(), 0, 1) for k, v in fields.items()}


def write_samples(writer: RolloutWriter, batch: dict[str, np.ndarray], level_seeds: np.ndarray,
                  source_steps: np.ndarray) -> None:
    for b in range(len(level_seeds)):
        steps = {name: values[b] for name, values in batch.items()}
        length = len(steps["obs"])
        steps["level_seed"] = np.full(length, level_seeds[b], dtype=np.int64)
        steps["source_step"] = np.full(length, source_steps[b], dtype=np.int64)
        writer.add_episode(steps, **{"return": float(steps["reward"].sum()), "level_seed": int(level_seeds[b]),
                                     "completed": bool(steps["done"].any())})


@dataclass(frozen=True)
class SampleStart:
    """What a stored sample was simulated from: its latent, for an informed sample the real agent state and
    previous action at the start of its episode (None for a prior sample: the converters predict them), and the
    actions the agent took in it (None: a start the agent has not acted from, which takes its most likely action)."""
    latent: torch.Tensor                    # (bottleneck,)
    agent_hx: torch.Tensor | None = None    # (H,)
    action_prev: torch.Tensor | None = None  # () int
    actions: torch.Tensor | None = None     # (steps,) int


def informed_window(simulator: Simulator, real: RolloutStore, first_steps: np.ndarray,
                    device: str | torch.device) -> Window:
    """The context window an informed sample is encoded from: the first `num_init_steps` steps of real episodes."""
    windows = real.windows(first_steps, simulator.config.num_init_steps, WINDOW_FIELDS)
    return window_from_batch({k: torch.from_numpy(v).to(device) for k, v in windows.items()}, simulator)


def sample_starts(simulator: Simulator, samples: RolloutStore, real: RolloutStore, ids: list[int],
                  device: str | torch.device) -> list[SampleStart]:
    """The starts of stored samples `ids`, so that re-simulating one (replaying its actions) reproduces its stored
    trajectory exactly."""
    first = samples.episode_starts[ids]
    latents = torch.from_numpy(samples.rows("latent", first)).to(device)
    sources = samples.rows("source_step", first)
    actions = [torch.from_numpy(samples.rows("action", samples.episode_steps(np.array([i])))).long().to(device)
               for i in ids]
    starts = [SampleStart(latent, actions=taken) for latent, taken in zip(latents, actions)]
    informed = np.flatnonzero(sources >= 0)
    if len(informed):
        window = informed_window(simulator, real, sources[informed], device)
        for row, index in enumerate(informed):
            starts[index] = SampleStart(latents[index], window.hx_prev[row], window.action_prev[row], actions[index])
    return starts


def prior_batches(simulator: Simulator, agent: RecurrentAgent, count: int, steps: int, batch_size: int,
                  generator: torch.Generator, modal: bool, actions: str, events: str, device: str | torch.device
                  ) -> Iterator[dict[str, np.ndarray]]:
    """Closed-loop rollouts from `count` latents drawn from the prior, `batch_size` at a time (`simulate_batch`)."""
    for start in range(0, count, batch_size):
        latent = simulator.prior_latent(min(batch_size, count - start), generator, device)
        yield simulate_batch(simulator, agent, steps, generator, modal, actions, events, latent)


def record_samples(simulator: Simulator, agent: RecurrentAgent, writer: RolloutWriter, *, prior_samples: int,
                   informed_episodes: np.ndarray, real: RolloutStore, steps: int, batch_size: int, seed: int,
                   modal: bool, actions: str, events: str, device: str | torch.device = "cpu", progress: bool = True
                   ) -> None:
    """Write `prior_samples` prior samples, then one informed sample per episode of `informed_episodes`."""
    generator = torch.Generator(device=device).manual_seed(seed)
    bar = tqdm(total=prior_samples + len(informed_episodes), desc="sample", unit="sample", disable=not progress)
    for batch in prior_batches(simulator, agent, prior_samples, steps, batch_size, generator, modal, actions, events,
                               device):
        count = len(batch["reward"])
        write_samples(writer, batch, np.full(count, -1), np.full(count, -1))
        bar.update(count)
    for start in range(0, len(informed_episodes), batch_size):
        episodes = informed_episodes[start:start + batch_size]
        first = real.episode_starts[episodes]
        window = informed_window(simulator, real, first, device)
        latent = simulator.encode(window.context, sample=False).value
        batch = simulate_batch(simulator, agent, steps, generator, modal, actions, events, latent,
                               window.hx_prev, window.action_prev)
        seeds = real.rows("level_seed", first)
        write_samples(writer, batch, seeds, first)
        bar.update(len(episodes))
    bar.close()


def game_realism(store: RolloutStore, episodes: np.ndarray, allowed: tuple[float, ...], tolerance: float) -> dict:
    """Do the samples obey the game? The share of `episodes` whose return (reward up to the predicted end) lies
    within `tolerance` of a return the game allows (CoinRun: 0 or 10), the share that predicted an end, and the
    spread of their returns."""
    info = store.episode_info()
    returns = info["return"][episodes]
    distance = np.abs(returns[:, None] - np.array(allowed)[None]).min(1)
    return {"samples": len(episodes), "return_near_allowed": float((distance <= tolerance).mean()),
            "predicted_end": float(info["completed"][episodes].mean()), "return_min": float(returns.min()),
            "return_max": float(returns.max()), "allowed_returns": list(allowed), "tolerance": tolerance}


def informed_first_transition(simulator: Simulator) -> int:
    """The episode step whose reward and end an informed sample's step 0 holds. Its step 0 is the last of the real
    context frames it encodes (episode step num_init_steps - 1), and a simulated step's reward and end are those of
    the transition into it (`window_from_batch`), recorded at the step before."""
    return simulator.config.num_init_steps - 2


def real_window_events(real: RolloutStore, episodes: np.ndarray, steps: int,
                       first_step: int | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Whether real windows of `steps` steps hold a reward and an episode end: each of `episodes`' window from
    step `first_step` (the transitions an informed sample simulates, `informed_first_transition`), or, with None,
    windows starting at every step of them (what a prior sample's random start stands for); with each window's
    episode, the unit a bootstrap resamples."""
    rewarded = np.asarray(real["reward"][:]) != 0
    events: dict[str, list[np.ndarray]] = {"reward": [], "end": []}
    groups = []
    for e in episodes:
        start, length = real.episode_starts[e], real.episode_ends[e] - real.episode_starts[e]
        count = np.concatenate([[0], np.cumsum(rewarded[start:start + length])])
        starts = np.arange(length) if first_step is None else np.array([min(first_step, length)])
        events["reward"].append(count[np.minimum(starts + steps, length)] > count[starts])
        events["end"].append(starts + steps >= length)
        groups.append(np.full(len(starts), e))
    return {name: np.concatenate(v) for name, v in events.items()}, np.concatenate(groups)


def share_comparison(simulated: np.ndarray, real: np.ndarray, real_groups: np.ndarray, resamples: int,
                     seed: int) -> dict:
    """The share of samples with an event beside the share of real windows with it, each with a 95% bootstrap
    interval (samples resampled; real windows resampled by episode), and their difference's: the samples match
    the game where that interval holds 0."""
    simulated, real = simulated.astype(np.float64), real.astype(np.float64)
    rng = np.random.default_rng(seed)
    sim_boot = simulated[rng.integers(len(simulated), size=(resamples, len(simulated)))].mean(1)
    index, weights = group_bootstrap_weights(real_groups, resamples, seed + 1)
    real_boot = resampled_means(real, index, weights)
    difference = percentile_interval(simulated.mean() - real.mean(), sim_boot - real_boot)
    return {"simulated": percentile_interval(simulated.mean(), sim_boot),
            "real": percentile_interval(real.mean(), real_boot), "difference": difference,
            "matches": bool(difference["ci95_low"] <= 0 <= difference["ci95_high"])}


def stored_events(samples: RolloutStore, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Whether each stored sample of `rows` holds a reward, and an end."""
    reward = np.asarray(samples["reward"][:]) != 0
    return {"reward": np.array([reward[samples.episode_starts[r]:samples.episode_ends[r]].any() for r in rows]),
            "end": samples.episode_info()["completed"][rows].astype(bool)}


def prior_events(simulator: Simulator, agent: RecurrentAgent, count: int, *, steps: int, batch_size: int, seed: int,
                 modal: bool, actions: str, events: str, device: str | torch.device = "cpu", progress: bool = True
                 ) -> dict[str, np.ndarray]:
    """Whether each of `count` prior samples holds a reward, and an end: simulated as `record_samples` simulates its
    prior samples (the same seed and batch size give the same ones) but not stored. How often prior samples reward
    is a property of the sampler; the share of a few hundred stored ones moves by several points from draw to draw."""
    generator = torch.Generator(device=device).manual_seed(seed)
    found: dict[str, list[np.ndarray]] = {"reward": [], "end": []}
    batches = prior_batches(simulator, agent, count, steps, batch_size, generator, modal, actions, events, device)
    for batch in tqdm(batches, total=-(-count // batch_size), desc="prior events", unit="batch", disable=not progress):
        found["reward"].append((batch["reward"] != 0).any(1))
        found["end"].append(batch["done"].any(1))
    return {name: np.concatenate(values) for name, values in found.items()}


def event_rates(simulated: dict[str, np.ndarray], steps: int, real: RolloutStore, episodes: np.ndarray,
                first_step: int | None, resamples: int, seed: int) -> dict:
    """Do samples reward and end as often as the game does in as many steps? For each event, `share_comparison`
    of the samples' events `simulated` (`stored_events`, `prior_events`) against real windows of their length
    `steps` from `episodes`: for informed samples their own episodes' window from `first_step`, the transitions
    they simulate; for prior samples (None) windows starting anywhere in the test-level episodes."""
    real_events, groups = real_window_events(real, episodes, steps, first_step)
    return {"window_steps": steps, "event_samples": len(simulated["reward"]),
            **{name: share_comparison(simulated[name], real_events[name], groups, resamples, seed)
               for name in simulated}}
