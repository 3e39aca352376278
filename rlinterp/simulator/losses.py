"""The simulator's training objective: every term of the original, each weighted by a param, and every
per-step term masked after the episode ends (the original masked only the hx term).

The original trains only teacher-forced (posterior states, true actions) yet generates from the prior, and
its prior-driven predictions drift (exposure bias). `open_loop_weight` adds the prediction terms (image,
reward, done, hx, value, features) of an open-loop rollout of the same window: prior states from step 0, most
likely classes, recorded actions, exactly what prediction quality measures and samples are made of.

`features_weight` matches the agent's CNN features of each simulated frame to those of the real frame: the pixel
loss weighs every pixel alike, while the agent's value and hx depend on a few of them; the features are what the
agent reads, before its GRU, whose saturated tanh passes the hx and value terms' gradients poorly."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch.nn import functional as F

from rlinterp.agent.model import RecurrentAgent
from rlinterp.config import SimulatorConfig, TrainSimulatorConfig
from rlinterp.distributed import Shard, gather_rows
from rlinterp.simulator.model import Latent, Rollout, Simulator

PREDICTION_TERMS = ("image", "reward", "done", "hx", "value", "features")   # also the open-loop rollout's terms


@dataclass
class Window:
    """A batch of training windows, time-major, aligned to simulated steps (see the model's docstring)."""
    context: torch.Tensor      # (B, c, 3, S, S) frames the encoder sees
    frames: torch.Tensor       # (K, B, 3, S, S) real frames of the simulated steps
    hx: torch.Tensor           # (K, B, H) agent state after each real frame
    value: torch.Tensor        # (K, B) the agent's value at each real frame
    action: torch.Tensor       # (K, B) recorded action at each simulated step (fed to the next one)
    reward: torch.Tensor       # (K, B) reward of the transition into each step (made by the action fed to it)
    done: torch.Tensor         # (K, B) float: that transition ended the episode
    mask: torch.Tensor         # (K, B) float: 1 on real steps of the episode (frame and hx labels)
    label_mask: torch.Tensor   # (K, B) float: 1 where the transition into the step is one of the episode's
    hx_prev: torch.Tensor      # (B, H) agent state before step 0
    action_prev: torch.Tensor  # (B,) action into step 0
    features: torch.Tensor | None = None  # (K, B, F) the agent's CNN features of the real frames (features term)


def window_from_batch(batch: dict[str, torch.Tensor], simulator: Simulator) -> Window:
    """Store windows (B, c + K - 1, ...) -> a time-major `Window` at the simulator's resolution."""
    c = simulator.config.num_init_steps
    frames = simulator.frames_from_obs(batch["obs"])

    def sim(x: torch.Tensor) -> torch.Tensor:
        return x[:, c - 1:].transpose(0, 1)

    def into(x: torch.Tensor) -> torch.Tensor:       # step s - 1's outcome, the transition into simulated step i
        return x[:, c - 2:-1].transpose(0, 1)

    return Window(context=frames[:, :c], frames=sim(frames), hx=sim(batch["hx"]),
                  value=sim(batch["value"]).float(), action=sim(batch["action"]),
                  reward=into(batch["reward"]).float(), done=into(batch["done"]).float(),
                  mask=sim(batch["mask"]).float(), label_mask=into(batch["mask"]).float(),
                  hx_prev=batch["hx"][:, c - 2], action_prev=batch["action"][:, c - 2])


def categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of independent categoricals (..., groups, classes), summed over groups."""
    p_log = p_logits.log_softmax(-1)
    return (p_log.exp() * (p_log - q_logits.log_softmax(-1))).sum((-2, -1))


def balanced_kl(post_logits: torch.Tensor, prior_logits: torch.Tensor, balance: float) -> torch.Tensor:
    """DreamerV2's KL balancing: `balance` of the gradient trains the prior towards the posterior."""
    to_prior = categorical_kl(post_logits.detach(), prior_logits)
    to_post = categorical_kl(post_logits, prior_logits.detach())
    return balance * to_prior + (1 - balance) * to_post


def uniformity_loss(latent: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """log mean_{i != j} exp(-t ||v_i - v_j||^2) (Wang & Isola 2020): minimal for latents spread uniformly over
    the sphere, so random unit vectors look like encoded ones."""
    sq = torch.cdist(latent, latent).pow(2)
    off = ~torch.eye(len(latent), dtype=torch.bool, device=latent.device)
    return torch.logsumexp(-temperature * sq[off], dim=0) - torch.log(off.sum().float())


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per row."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def bottleneck_loss(latent: Latent, config: SimulatorConfig, shard: Shard = Shard()) -> torch.Tensor:
    """The vae's KL (a mean over windows), or the uniformity of every rank's latents together."""
    if config.bottleneck == "vae":
        return gaussian_kl(latent.mean, latent.logvar).mean()
    latents = gather_rows(latent.value, shard)
    return uniformity_loss(latents) if len(latents) > 1 else latents.new_zeros(())


def step_losses(rollout: Rollout, window: Window, reward_target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-step, unweighted terms (K, B) before masking; the reward's is the cross-entropy to its two-hot target."""
    image = 0.5 * (rollout.frames - window.frames).pow(2).sum((-3, -2, -1))
    terms = {"image": image,
             "reward": -(reward_target * rollout.reward_logits.log_softmax(-1)).sum(-1),
             "done": F.binary_cross_entropy_with_logits(rollout.done_logit, window.done, reduction="none"),
             "hx": 0.5 * (rollout.agent_hx - window.hx).pow(2).sum(-1),
             "value": 0.5 * (rollout.agent_value - window.value).pow(2),
             "env_update": rollout.env_update}
    if window.features is not None:
        terms["features"] = 0.5 * (rollout.agent_features - window.features).pow(2).sum(-1)
    kl = torch.zeros_like(image)
    if rollout.post_logits is not None:
        posterior_steps = len(rollout.post_logits)
        kl = torch.cat([categorical_kl(rollout.post_logits, rollout.prior_logits[:posterior_steps]),
                        kl[posterior_steps:]])
    terms["kl"] = kl
    return terms


def simulator_loss(simulator: Simulator, latent: Latent, rollout: Rollout, window: Window,
                   config: TrainSimulatorConfig, open_rollout: Rollout | None = None, shard: Shard = Shard()
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted objective (sum over steps, mean over the batch) and each unweighted term for logging.
    `rollout` is teacher-forced; `open_rollout`, if given, adds its prediction terms x `open_loop_weight`."""
    reward_target = simulator.reward_target(window.reward)
    terms = step_losses(rollout, window, reward_target)
    if rollout.post_logits is not None:     # the optimised KL is balanced; the logged one is the plain KL
        posterior_steps = len(rollout.post_logits)
        balanced = balanced_kl(rollout.post_logits, rollout.prior_logits[:posterior_steps], config.kl_balance)
        optimised_kl = torch.cat([balanced, torch.zeros_like(terms["kl"][posterior_steps:])])
    else:
        optimised_kl = terms["kl"]
    def reduce(x: torch.Tensor, name: str = "") -> torch.Tensor:
        mask = window.label_mask if name in ("reward", "done") else window.mask
        return (x * mask).sum(0).mean()

    def prediction(parts: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(getattr(config, f"{name}_weight") * parts[name] for name in PREDICTION_TERMS if name in parts)

    init_hx, init_action_logits = simulator.initial_agent_inputs(latent.value.detach())
    init = ((init_hx - window.hx_prev).pow(2).sum(-1)
            + F.cross_entropy(init_action_logits, window.action_prev.long(), reduction="none")).mean()
    parts = {name: reduce(value, name) for name, value in terms.items()}
    parts["init"] = init
    parts["bottleneck"] = bottleneck_loss(latent, simulator.config, shard)
    total = (prediction(parts) + config.env_update_weight * parts["env_update"]
             + config.kl_weight * reduce(optimised_kl) + config.init_weight * init
             + config.bottleneck_weight * parts["bottleneck"])
    if open_rollout is not None:
        open_terms = step_losses(open_rollout, window, reward_target)
        open_parts = {name: reduce(open_terms[name], name) for name in PREDICTION_TERMS if name in open_terms}
        total = total + config.open_loop_weight * prediction(open_parts)
        parts.update({f"open_loop_{name}": value for name, value in open_parts.items()})
    stats = {name: float(value.detach()) for name, value in parts.items()}
    stats["loss"] = float(total.detach())
    return total, stats


def open_loop_rollout(simulator: Simulator, agent: RecurrentAgent, latent: torch.Tensor, window: Window,
                      closed: bool = False) -> Rollout:
    """Every step from the prior (most likely classes) after the latent, from the real hx and previous action,
    driven by the recorded actions (or, with `closed`, by the agent's own)."""
    steps = len(window.frames)
    return simulator.rollout(latent, agent, steps, actions=window.action, agent_hx=window.hx_prev,
                             action_prev=window.action_prev, imagine_from=0, action_steps=0 if closed else steps,
                             modal=True)


def real_features(simulator: Simulator, agent: RecurrentAgent, frames: torch.Tensor) -> torch.Tensor:
    """The agent's CNN features (K, B, F) of real frames (K, B, 3, S, S), as it reads them inside the simulator."""
    with torch.no_grad():
        return agent.encode_pixels(simulator.agent_pixels(frames.flatten(0, 1))).view(*frames.shape[:2], -1)


def window_loss(simulator: Simulator, agent: RecurrentAgent, window: Window, config: TrainSimulatorConfig,
                sample: bool = True, generator: torch.Generator | None = None, shard: Shard = Shard()
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Encode a window, simulate it teacher-forced (and open loop where `open_loop_weight` > 0) and score it;
    training samples the latent, held-out evaluation takes its mean. `shard`: this rank's part of a batch split
    over ranks (see `rlinterp.distributed`)."""
    if config.features_weight > 0:
        window = replace(window, features=real_features(simulator, agent, window.frames))
    latent = simulator.encode(window.context, sample=sample, generator=generator, shard=shard)
    steps = len(window.frames)
    teacher_forced = simulator.rollout(latent.value, agent, steps, frames=window.frames, actions=window.action,
                                       agent_hx=window.hx_prev, action_prev=window.action_prev, imagine_from=steps,
                                       generator=generator, shard=shard)
    open_rollout = open_loop_rollout(simulator, agent, latent.value, window) if config.open_loop_weight > 0 else None
    return simulator_loss(simulator, latent, teacher_forced, window, config, open_rollout, shard)
