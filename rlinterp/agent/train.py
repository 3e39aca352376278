"""The PPO training loop: resumable from its checkpoint, logging one row of statistics per update."""
from __future__ import annotations

import hashlib
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlinterp import envs
from rlinterp.agent import model, ppo
from rlinterp.agent.checkpoint import build_agent, load_checkpoint, save_checkpoint
from rlinterp.agent.ppo import RolloutCollector, ppo_update
from rlinterp.config import AgentConfig, EnvConfig, TrainAgentConfig, to_dict
from rlinterp.envs import VecProcgen


def training_code_hash() -> str:
    """sha256 of the modules that define a training run, so a checkpoint of older code is not resumed."""
    digest = hashlib.sha256()
    for module in (envs, model, ppo, sys.modules[__name__]):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def training_config(env: EnvConfig, agent: AgentConfig, train: TrainAgentConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: every param that shapes the run, and the code."""
    return {"env": to_dict(env), "agent": to_dict(agent), "train_agent": to_dict(train),
            "code_sha256": training_code_hash()}


def resumable_checkpoint(checkpoint_path: str | Path, run_config: dict[str, Any],
                         device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint at `checkpoint_path` if it was written by a run with exactly `run_config`, else None."""
    path = Path(checkpoint_path)
    if not path.exists():
        return None
    state = load_checkpoint(path, device)
    return state if state.get("config") == run_config else None


def train_agent(env_config: EnvConfig, agent_config: AgentConfig, config: TrainAgentConfig,
                checkpoint_path: str | Path, device: str = "cpu",
                log: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume training) until `config.total_steps`; returns a summary of the run.

    A checkpoint at `checkpoint_path` whose config equals this one is resumed from its last update; one from
    other params is replaced. The environments cannot be restored, so a resumed run starts fresh episodes.
    """
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device = torch.device(device)
    agent = build_agent(agent_config).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=config.adam_eps)
    run_config = training_config(env_config, agent_config, config)
    steps_per_update = config.num_envs * config.num_steps
    num_updates = -(-config.total_steps // steps_per_update)

    update, resumed_from = 0, 0
    checkpoint_path = Path(checkpoint_path)
    state = resumable_checkpoint(checkpoint_path, run_config, device)
    if state is not None:
        agent.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        update = resumed_from = int(state["update"])
        torch.set_rng_state(state["torch_rng"])

    env = VecProcgen(env_config, config.num_envs, seed=config.seed + update)
    collector = RolloutCollector(env, agent, config, device)
    if state is not None and "reward_normalizer" in state and collector.normalizer is not None:
        collector.normalizer.load_state_dict(state["reward_normalizer"])
    generator = torch.Generator().manual_seed(config.seed + update)
    recent: deque = deque(maxlen=100)

    def checkpoint() -> None:
        save_checkpoint(checkpoint_path, {
            "model": agent.state_dict(), "optimizer": optimizer.state_dict(), "update": update,
            "step": update * steps_per_update, "config": run_config, "torch_rng": torch.get_rng_state(),
            "reward_normalizer": collector.normalizer.state_dict() if collector.normalizer else {}})

    start_time = time.perf_counter()
    bar = tqdm(total=num_updates * steps_per_update, initial=update * steps_per_update, unit="step",
               desc="train_agent", disable=not progress, smoothing=0.05)
    while update < num_updates:
        if config.anneal_lr:
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * (1 - update / num_updates)
        tic = time.perf_counter()
        agent.eval()
        rollout, episodes = collector.collect()
        collect_time = time.perf_counter() - tic
        agent.train()
        stats = ppo_update(agent, optimizer, rollout, config, generator)
        update += 1
        recent.extend(episodes)
        elapsed = time.perf_counter() - tic
        stats.update(learning_rate=optimizer.param_groups[0]["lr"], steps_per_s=steps_per_update / elapsed,
                     collect_fraction=collect_time / elapsed)
        if recent:
            stats.update(episode_return=float(np.mean([e.ret for e in recent])),
                         episode_length=float(np.mean([e.length for e in recent])),
                         completion_rate=float(np.mean([e.completed for e in recent])))
        if log is not None:
            log(update * steps_per_update, stats)
        if update % config.checkpoint_every == 0 or update == num_updates:
            checkpoint()
        bar.update(steps_per_update)
        bar.set_postfix(ret=f"{stats.get('episode_return', float('nan')):.2f}", sps=f"{stats['steps_per_s']:.0f}")
    bar.close()
    wall = time.perf_counter() - start_time
    trained_steps = (update - resumed_from) * steps_per_update
    return {"total_steps": update * steps_per_update, "updates": update, "resumed_from_step":
            resumed_from * steps_per_update, "wall_time_s": wall,
            "steps_per_s": trained_steps / wall if trained_steps else 0.0,
            "recent_episode_return": float(np.mean([e.ret for e in recent])) if recent else float("nan"),
            "recent_episode_length": float(np.mean([e.length for e in recent])) if recent else float("nan")}
