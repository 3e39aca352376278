"""Evaluate policies on fixed level seeds: the trained agent, its memoryless ablation and trivial baselines.

Every policy plays the first `episodes_per_env` episodes of each of `num_envs` envs built with the same seed
and level range. An env's k-th level is drawn from its own seeded generator, independently of what the
policy does, so every policy is scored on the very same level seeds (checked in the tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from rlinterp.agent.model import RecurrentAgent, sample_actions
from rlinterp.config import EnvConfig, EvaluateConfig
from rlinterp.envs import VecProcgen


class AgentPolicy:
    """The agent sampling from its policy; `memoryless` zeroes the hidden state before every step; `greedy` takes
    the most likely action (if that scores like a constant action, the policy's mode ignores what it sees)."""

    def __init__(self, agent: RecurrentAgent, seed: int, memoryless: bool = False, device: str = "cpu",
                 greedy: bool = False):
        self.agent, self.memoryless, self.greedy, self.device = agent, memoryless, greedy, torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.hx: torch.Tensor | None = None

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        if self.hx is None:
            self.hx = self.agent.initial_state(len(obs), self.device)
        reset = np.ones_like(first) if self.memoryless else first
        out = self.agent.step(torch.from_numpy(obs).to(self.device), self.hx,
                              torch.from_numpy(reset).to(self.device))
        self.hx = out.hx
        actions = out.logits.argmax(-1) if self.greedy else sample_actions(out.logits, self.generator)
        return actions.cpu().numpy()


class RandomPolicy:
    """Uniformly random actions."""

    def __init__(self, num_actions: int, seed: int):
        self.num_actions, self.rng = num_actions, np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        return self.rng.integers(self.num_actions, size=len(obs))


class ConstantPolicy:
    """The same action at every step."""

    def __init__(self, action: int):
        self.action = action

    def __call__(self, obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        return np.full(len(obs), self.action)


@dataclass
class EvalResult:
    """Per-episode outcomes, ordered (env, k-th episode of that env)."""
    returns: np.ndarray
    lengths: np.ndarray
    completed: np.ndarray
    level_seeds: np.ndarray

    def summary(self) -> dict[str, float]:
        """Mean return with a normal-approximation 95% confidence interval, completion rate, mean length."""
        n = len(self.returns)
        half = 1.96 * self.returns.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
        mean = float(self.returns.mean())
        return {"mean_return": mean, "ci95_low": mean - half, "ci95_high": mean + half,
                "completion_rate": float(self.completed.mean()), "mean_length": float(self.lengths.mean()),
                "episodes": n}


def play_episodes(env_config: EnvConfig, policy, num_envs: int, episodes_per_env: int, seed: int,
                  start_level: int, num_levels: int, desc: str = "evaluate", progress: bool = True) -> EvalResult:
    """Run `policy(obs, first) -> actions` until every env has finished `episodes_per_env` episodes."""
    env = VecProcgen(env_config, num_envs, seed, start_level=start_level, num_levels=num_levels)
    counts = np.zeros(num_envs, dtype=np.int64)
    shape = (num_envs, episodes_per_env)
    returns, lengths = np.zeros(shape), np.zeros(shape, dtype=np.int64)
    completed, levels = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=np.int64)
    total = num_envs * episodes_per_env
    with tqdm(total=total, desc=desc, unit="episode", disable=not progress, leave=False) as bar:
        while counts.min() < episodes_per_env:
            _, obs, first = env.observe()
            for episode in env.act(policy(obs, first)):
                i, k = episode.env_index, counts[episode.env_index]
                if k < episodes_per_env:
                    returns[i, k], lengths[i, k] = episode.ret, episode.length
                    completed[i, k], levels[i, k] = episode.completed, episode.level_seed
                    bar.update(1)
                counts[i] += 1
    return EvalResult(returns.ravel(), lengths.ravel(), completed.ravel(), levels.ravel())


def level_sets(env_config: EnvConfig, config: EvaluateConfig) -> dict[str, tuple[int, int]]:
    """name -> (start_level, num_levels) of the training levels and of the unseen levels."""
    return {"train_levels": (env_config.start_level, env_config.num_levels),
            "unseen_levels": (config.test_start_level, config.test_num_levels)}


def evaluate_policies(env_config: EnvConfig, config: EvaluateConfig, policies: dict, progress: bool = True
                      ) -> dict[str, dict[str, dict[str, float]]]:
    """levels -> policy name -> summary, every policy on the same level seeds.

    `policies` maps a name to a zero-argument factory, so each run starts from a fresh policy state.
    """
    results: dict[str, dict[str, dict[str, float]]] = {}
    for levels, (start, count) in level_sets(env_config, config).items():
        results[levels] = {}
        for name, make_policy in policies.items():
            outcome = play_episodes(env_config, make_policy(), config.num_envs, config.episodes_per_env,
                                    config.seed, start, count, desc=f"{levels} {name}", progress=progress)
            results[levels][name] = {**outcome.summary(), "level_seed_sum": int(outcome.level_seeds.sum())}
    return results


def baseline_policies(num_actions: int, seed: int) -> dict:
    """The uniformly random policy and every constant-action policy."""
    policies = {"random": lambda: RandomPolicy(num_actions, seed)}
    policies.update({f"constant_{a}": (lambda a=a: ConstantPolicy(a)) for a in range(num_actions)})
    return policies


def agent_policies(agent: RecurrentAgent, seed: int, device: str = "cpu") -> dict:
    """The trained agent, the same agent with its hidden state zeroed before every step, and the agent taking
    its most likely action."""
    return {"agent": lambda: AgentPolicy(agent, seed, device=device),
            "memoryless_agent": lambda: AgentPolicy(agent, seed, memoryless=True, device=device),
            "greedy_agent": lambda: AgentPolicy(agent, seed, device=device, greedy=True)}


def compare_with_baselines(agent_results: dict, baseline_results: dict, action_names: tuple[str, ...]) -> dict:
    """Per level set: agent, memoryless and greedy agent, random and best constant action, with the margins.

    Refuses baselines played on other level seeds than the agent's (e.g. computed from other params).
    """
    report = {}
    for levels, agent_side in agent_results.items():
        if levels not in baseline_results:
            raise ValueError(f"baselines have no '{levels}' results (expected {', '.join(agent_results)})")
        baselines = baseline_results[levels]
        seeds = {name: r["level_seed_sum"] for name, r in {**agent_side, **baselines}.items()}
        if len(set(seeds.values())) != 1:
            raise ValueError(f"{levels}: policies were evaluated on different level seeds ({seeds}); "
                             f"re-run evaluate_baselines with the current params")
        constants = {int(n.split("_")[1]): r for n, r in baselines.items() if n.startswith("constant_")}
        best = max(constants, key=lambda a: constants[a]["mean_return"])
        agent, memoryless, greedy = (agent_side[k] for k in ("agent", "memoryless_agent", "greedy_agent"))
        report[levels] = {
            "agent": agent, "memoryless_agent": memoryless, "greedy_agent": greedy, "random": baselines["random"],
            "best_constant": {**constants[best], "action": best, "action_name": action_names[best]},
            "agent_minus_best_constant": agent["mean_return"] - constants[best]["mean_return"],
            "greedy_agent_minus_best_constant": greedy["mean_return"] - constants[best]["mean_return"],
            "agent_minus_memoryless": agent["mean_return"] - memoryless["mean_return"],
            "agent_minus_random": agent["mean_return"] - baselines["random"]["mean_return"]}
    return report
