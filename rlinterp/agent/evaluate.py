"""Evaluate policies on fixed level seeds, compare them episode by episode, and the trivial baseline policies.

Every policy plays the first `episodes_per_env` episodes of each of `num_envs` envs built with the same seed
and level range. An env's k-th level is drawn from its own seeded generator, independently of what the
policy does, so every policy is scored on the very same level seeds (checked in the tests). The agent's own
policies are in `rlinterp/agent/acting.py`; this module runs no network, so the baselines do not depend on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from tqdm import tqdm

from rlinterp.config import EnvConfig, EvaluateConfig
from rlinterp.envs import VecProcgen


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
    """Per-episode outcomes, ordered (env, k-th episode of that env), and how often each action was taken
    in those episodes."""
    returns: np.ndarray
    lengths: np.ndarray
    completed: np.ndarray
    level_seeds: np.ndarray
    action_counts: np.ndarray

    def share_of_other_actions(self, action: int) -> float:
        """The share of steps on which the policy took an action other than `action`."""
        return 1 - float(self.action_counts[action] / self.action_counts.sum())

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
    action_counts = np.zeros(env.num_actions, dtype=np.int64)
    total = num_envs * episodes_per_env
    with tqdm(total=total, desc=desc, unit="episode", disable=not progress, leave=False) as bar:
        while counts.min() < episodes_per_env:
            _, obs, first = env.observe()
            actions = np.asarray(policy(obs, first))
            np.add.at(action_counts, actions[counts < episodes_per_env], 1)
            for episode in env.act(actions):
                i, k = episode.env_index, counts[episode.env_index]
                if k < episodes_per_env:
                    returns[i, k], lengths[i, k] = episode.ret, episode.length
                    completed[i, k], levels[i, k] = episode.completed, episode.level_seed
                    bar.update(1)
                counts[i] += 1
    return EvalResult(returns.ravel(), lengths.ravel(), completed.ravel(), levels.ravel(), action_counts)


def level_sets(env_config: EnvConfig, config: EvaluateConfig) -> dict[str, tuple[int, int]]:
    """name -> (start_level, num_levels) of the training levels and of the unseen levels."""
    return {"train_levels": (env_config.start_level, env_config.num_levels),
            "unseen_levels": (config.test_start_level, config.test_num_levels)}


def summarise(result: EvalResult) -> dict[str, float]:
    """What metrics keep of one policy's evaluation: its summary and a fingerprint of the levels it played."""
    return {**result.summary(), "level_seed_sum": int(result.level_seeds.sum())}


def evaluate_policies(env_config: EnvConfig, config: EvaluateConfig, policies: dict, progress: bool = True
                      ) -> dict[str, dict[str, EvalResult]]:
    """levels -> policy name -> per-episode results, every policy on the same level seeds.

    `policies` maps a name to a zero-argument factory, so each run starts from a fresh policy state; or, per
    level set, levels -> such a mapping (when a policy depends on the level set, e.g. its best constant action).
    """
    results: dict[str, dict[str, EvalResult]] = {}
    for levels, (start, count) in level_sets(env_config, config).items():
        chosen = policies.get(levels, policies)
        results[levels] = {name: play_episodes(env_config, make_policy(), config.num_envs, config.episodes_per_env,
                                               config.seed, start, count, desc=f"{levels} {name}",
                                               progress=progress)
                           for name, make_policy in chosen.items()}
    return results


def baseline_policies(num_actions: int, seed: int) -> dict:
    """The uniformly random policy and every constant-action policy."""
    policies = {"random": lambda: RandomPolicy(num_actions, seed)}
    policies.update({f"constant_{a}": (lambda a=a: ConstantPolicy(a)) for a in range(num_actions)})
    return policies


def best_constant_actions(baselines: dict) -> dict[str, int]:
    """levels -> the constant action with the highest mean return in the baselines' summaries."""
    best = {}
    for levels, policies in baselines.items():
        constants = {int(n.split("_")[1]): r["mean_return"] for n, r in policies.items() if n.startswith("constant_")}
        best[levels] = max(constants, key=constants.__getitem__)
    return best


def paired_difference(a: EvalResult, b: EvalResult) -> dict[str, float]:
    """Mean of a's return minus b's over the same episodes (same level seeds), with its 95% CI and the
    two-sided paired t-test p-value, and the difference in completion rate."""
    if not np.array_equal(a.level_seeds, b.level_seeds):
        raise ValueError("paired comparison of results played on different level seeds")
    diff = a.returns - b.returns
    n = len(diff)
    mean, sem = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(n))
    half = float(stats.t.ppf(0.975, n - 1) * sem)
    p = float(stats.ttest_rel(a.returns, b.returns).pvalue) if sem > 0 else (0.0 if mean else 1.0)
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "p_value": p,
            "completion_rate": float(a.completed.mean() - b.completed.mean()), "episodes": n}


def compare_with_baselines(agent_results: dict[str, dict[str, EvalResult]], baselines: dict,
                           best_constant: dict[str, int], action_names: tuple[str, ...]) -> dict:
    """Per level set: every policy's summary, the paired differences the agent is judged by, and how often the
    agent's actions differ from the best constant action.

    Refuses baselines played on other level seeds than the agent's, or whose best constant action does not
    replay to the same returns (both: baselines computed from other params or code).
    """
    report = {}
    for levels, played in agent_results.items():
        if levels not in baselines:
            raise ValueError(f"baselines have no '{levels}' results (expected {', '.join(agent_results)})")
        action = best_constant[levels]
        recorded = baselines[levels][f"constant_{action}"]
        replayed = summarise(played["best_constant"])
        for key in ("level_seed_sum", "mean_return"):
            if replayed[key] != recorded[key]:
                raise ValueError(f"{levels}: the best constant action {action_names[action]} replays to {key} "
                                 f"{replayed[key]}, but the baselines recorded {recorded[key]}; re-run "
                                 f"evaluate_baselines with the current params")
        agent, memoryless, greedy, constant = (played[k] for k in
                                               ("agent", "memoryless_agent", "greedy_agent", "best_constant"))
        report[levels] = {
            **{name: summarise(result) for name, result in played.items() if name != "best_constant"},
            "random": baselines[levels]["random"],
            "best_constant": {**replayed, "action": action, "action_name": action_names[action]},
            "agent_minus_best_constant": paired_difference(agent, constant),
            "greedy_agent_minus_best_constant": paired_difference(greedy, constant),
            "agent_minus_memoryless": paired_difference(agent, memoryless),
            "agent_minus_random": float(agent.returns.mean()) - baselines[levels]["random"]["mean_return"],
            "agent_actions_not_best_constant": agent.share_of_other_actions(action),
            "greedy_actions_not_best_constant": greedy.share_of_other_actions(action)}
    return report


def agent_bar(report: dict) -> dict[str, bool]:
    """The issue-22 bar for an agent worth interpreting, each criterion from the paired comparisons."""
    train, unseen = report["train_levels"], report["unseen_levels"]
    return {
        "train_beats_best_constant_by_1": (train["agent_minus_best_constant"]["mean"] >= 1.0
                                           and train["agent_minus_best_constant"]["p_value"] < 0.01),
        "unseen_beats_best_constant": (unseen["agent_minus_best_constant"]["mean"] > 0
                                       and unseen["agent_minus_best_constant"]["p_value"] < 0.01),
        "memory_helps_on_train": train["agent_minus_memoryless"]["ci95_low"] > 0,
        "greedy_differs_from_best_constant_10pct": train["greedy_actions_not_best_constant"] >= 0.1}
