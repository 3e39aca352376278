"""Recurrent PPO: rollout collection, GAE, the clipped loss, and one update over whole env sequences.

Index convention (gym3): at rollout step t the agent sees obs[t] with first[t] (its episode starts
here, so the GRU state is zeroed before this step), acts, and receives rewards[t]. The episode ended with
step t when first[t+1] is set; next_first plays that role after the last step.

Training re-runs the GRU through time (BPTT) over sequences of `bptt_steps` steps, from the state recorded
at each sequence's start during collection. With bptt_steps = num_steps (the original) a minibatch holds
whole env rollouts; shorter sequences let a minibatch mix many envs and times, which decorrelates it.

Under torchrun every rank collects from its own share of the envs and each minibatch takes an equal share of
sequences from every rank, so minibatch sizes, means and DDP's averaged gradient are those of one process holding
every rank's rollout; advantage normalisation and the reward scale use statistics of all ranks together.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Categorical

from rlinterp.agent.model import RecurrentAgent
from rlinterp.config import TrainAgentConfig
from rlinterp.distributed import Shard, mean_over_ranks, mean_std, moments
from rlinterp.envs import Episode, VecProcgen


@dataclass
class Rollout:
    """One rollout of num_steps x num_envs, time-major."""
    obs: torch.Tensor        # (T, N, 64, 64, 3) uint8
    first: torch.Tensor      # (T, N) bool
    actions: torch.Tensor    # (T, N) int64
    logprobs: torch.Tensor   # (T, N)
    values: torch.Tensor     # (T, N)
    rewards: torch.Tensor    # (T, N) as used for learning (normalised if enabled)
    hx_in: torch.Tensor      # (T, N, H) GRU state fed into each step (before that step's first-reset)
    next_value: torch.Tensor  # (N,) value of the obs after the last step
    next_first: torch.Tensor  # (N,) bool


class RewardNormalizer:
    """Scales rewards by the running std of the discounted return (no centring), as in the original PPO; the
    running statistics cover every rank's envs."""

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8, shard: Shard = Shard()):
        self.gamma, self.clip, self.eps, self.shard = gamma, clip, eps, shard
        self.discounted = np.zeros(num_envs)
        self.count, self.mean, self.var = 1e-4, 0.0, 1.0

    def __call__(self, reward: np.ndarray, first_next: np.ndarray) -> np.ndarray:
        self.discounted = self.discounted * self.gamma + reward
        self._update(self.discounted)
        self.discounted[first_next] = 0.0
        return np.clip(reward / np.sqrt(self.var + self.eps), -self.clip, self.clip)

    def _update(self, x: np.ndarray) -> None:
        batch_mean, batch_var, n = moments(x, self.shard)
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total
        self.count = total

    def state_dict(self) -> dict[str, float]:
        return {"count": float(self.count), "mean": float(self.mean), "var": float(self.var)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.var = state["count"], state["mean"], state["var"]


class RolloutCollector:
    """Steps the vectorised env with the agent, carrying obs, first and GRU state across rollouts."""

    def __init__(self, env: VecProcgen, agent: RecurrentAgent, config: TrainAgentConfig, device: torch.device,
                 shard: Shard = Shard()):
        self.env, self.agent, self.device = env, agent, device
        self.num_steps = config.num_steps
        self.normalizer = RewardNormalizer(env.num_envs, config.gamma, shard=shard) if config.normalize_rewards \
            else None
        _, obs, first = env.observe()
        self.obs = torch.from_numpy(obs).to(device)
        self.first = torch.from_numpy(first).to(device)
        self.hx = agent.initial_state(env.num_envs, device)
        T, N = self.num_steps, env.num_envs
        self.buffers = dict(
            obs=torch.zeros((T, N, *obs.shape[1:]), dtype=torch.uint8, device=device),
            first=torch.zeros((T, N), dtype=torch.bool, device=device),
            actions=torch.zeros((T, N), dtype=torch.int64, device=device),
            logprobs=torch.zeros((T, N), device=device), values=torch.zeros((T, N), device=device),
            rewards=torch.zeros((T, N), device=device),
            hx_in=torch.zeros((T, N, agent.hidden_size), device=device))

    @torch.inference_mode()
    def collect(self) -> tuple[Rollout, list[Episode]]:
        b, episodes = self.buffers, []
        for t in range(self.num_steps):
            b["obs"][t], b["first"][t], b["hx_in"][t] = self.obs, self.first, self.hx
            out = self.agent.step(self.obs, self.hx, self.first)
            dist = Categorical(logits=out.logits)
            action = dist.sample()
            b["actions"][t], b["logprobs"][t], b["values"][t] = action, dist.log_prob(action), out.value
            self.hx = out.hx
            episodes += self.env.act(action.cpu().numpy())
            reward, obs, first = self.env.observe()
            if self.normalizer is not None:
                reward = self.normalizer(reward, first)
            b["rewards"][t] = torch.as_tensor(reward, device=self.device)
            self.obs = torch.from_numpy(obs).to(self.device)
            self.first = torch.from_numpy(first).to(self.device)
        next_value = self.agent.step(self.obs, self.hx, self.first).value
        rollout = Rollout(**{k: v.clone() for k, v in b.items()}, next_value=next_value,
                          next_first=self.first.clone())
        return rollout, episodes


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, first: torch.Tensor, next_value: torch.Tensor,
                next_first: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and value targets (returns), all (T, N)."""
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(steps)):
        if t == steps - 1:
            nonterminal, value_next = (~next_first).float(), next_value
        else:
            nonterminal, value_next = (~first[t + 1]).float(), values[t + 1]
        delta = rewards[t] + gamma * value_next * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        advantages[t] = last
    return advantages, advantages + values


def ppo_loss(logits: torch.Tensor, values: torch.Tensor, actions: torch.Tensor, old_logprobs: torch.Tensor,
             old_values: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor,
             config: TrainAgentConfig, shard: Shard = Shard()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped PPO objective (to minimise) and its parts. Advantages are normalised here, per minibatch (over
    every rank's share of it)."""
    dist = Categorical(logits=logits)
    logratio = dist.log_prob(actions) - old_logprobs
    ratio = logratio.exp()
    adv_mean, adv_std = mean_std(advantages, shard)
    adv = (advantages - adv_mean) / (adv_std + 1e-8)
    policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef)).mean()
    if config.clip_value:
        clipped = old_values + (values - old_values).clamp(-config.clip_coef, config.clip_coef)
        value_loss = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()
    else:
        value_loss = 0.5 * ((values - returns) ** 2).mean()
    entropy = dist.entropy().mean()
    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
    with torch.no_grad():
        stats = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                 "approx_kl": ((ratio - 1) - logratio).mean(),
                 "clip_fraction": ((ratio - 1).abs() > config.clip_coef).float().mean()}
    return loss, stats


def split_sequences(x: torch.Tensor, length: int) -> torch.Tensor:
    """(T, N, ...) -> (length, T/length * N, ...): consecutive chunks of each env's rollout as sequences."""
    steps, num_envs = x.shape[:2]
    chunks = x.reshape(steps // length, length, num_envs, *x.shape[2:]).transpose(0, 1)
    return chunks.reshape(length, steps // length * num_envs, *x.shape[2:])


def policy_and_value(agent: RecurrentAgent, obs: torch.Tensor, hx: torch.Tensor, first: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and values the loss reads, re-run over sequences; the hx it does not read is left out, so DDP
    sees which parameters the loss reaches."""
    out = agent.forward_sequence(obs, hx, first)
    return out.logits, out.value


def ppo_update(agent: RecurrentAgent, optimizer: torch.optim.Optimizer, rollout: Rollout,
               config: TrainAgentConfig, generator: torch.Generator | None = None, shard: Shard = Shard(),
               policy: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, float]:
    """`epochs` passes over the rollout in minibatches of `bptt_steps`-long sequences; returns mean statistics.

    Distributed, `rollout` is this rank's, `policy` is `policy_and_value` of the agent wrapped in DDP, and every
    rank draws the same permutation of each rank's sequences from `generator` (in the same state on every rank)."""
    policy = policy or functools.partial(policy_and_value, agent)
    advantages, returns = compute_gae(rollout.rewards, rollout.values, rollout.first, rollout.next_value,
                                      rollout.next_first, config.gamma, config.gae_lambda)
    length = config.bptt_steps
    seq = {name: split_sequences(x, length) for name, x in dict(
        obs=rollout.obs, first=rollout.first, actions=rollout.actions, logprobs=rollout.logprobs,
        values=rollout.values, advantages=advantages, returns=returns).items()}
    hx_start = split_sequences(rollout.hx_in, length)[0]
    num_sequences = hx_start.shape[0]
    per_batch = num_sequences // config.minibatches
    totals: dict[str, float] = {}
    for _ in range(config.epochs):
        order = [torch.randperm(num_sequences, generator=generator) for _ in range(shard.world)][shard.rank]
        for start in range(0, num_sequences, per_batch):
            idx = order[start:start + per_batch].to(rollout.obs.device)
            logits, values = policy(seq["obs"][:, idx], hx_start[idx], seq["first"][:, idx])
            loss, stats = ppo_loss(logits, values, seq["actions"][:, idx], seq["logprobs"][:, idx],
                                   seq["values"][:, idx], seq["advantages"][:, idx], seq["returns"][:, idx],
                                   config, shard)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach())
    num = config.epochs * config.minibatches
    stats = mean_over_ranks({key: value / num for key, value in totals.items()}, shard)
    residual, spread = mean_std(returns - rollout.values, shard)[1], mean_std(returns, shard)[1]
    stats["explained_variance"] = float(1 - residual ** 2 / (spread ** 2).clamp_min(1e-8))
    return stats
