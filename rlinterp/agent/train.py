"""The PPO training loop: resumable from its checkpoint, logging one row of statistics per update."""
from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlinterp import distributed, envs
from rlinterp.agent import model, ppo
from rlinterp.agent.checkpoint import build_agent, load_checkpoint, save_checkpoint
from rlinterp.agent.ppo import RolloutCollector, ppo_update
from rlinterp.config import AgentConfig, EnvConfig, TrainAgentConfig, to_dict
from rlinterp.files import code_sha256
from rlinterp.envs import VecProcgen


def training_code_hash() -> str:
    """sha256 of the code (not the comments) of the modules that define a training run, so a checkpoint
    of other code is not resumed."""
    return code_sha256([module.__file__ for module in (envs, model, ppo, sys.modules[__name__])])


# Rank r > 0 of a distributed run seeds its envs and action sampling this far from rank 0's seeds.
RANK_SEED_STRIDE = 1_000_003

# Params that say how long or how often, not what is trained: a run may be extended or checkpointed more often.
RESUMABLE_CHANGES = ("total_steps", "checkpoint_every")


def training_config(env: EnvConfig, agent: AgentConfig, train: TrainAgentConfig) -> dict[str, Any]:
    """What a checkpoint records about its run: every param that shapes the run, and the code."""
    return {"env": to_dict(env), "agent": to_dict(agent), "train_agent": to_dict(train),
            "code_sha256": training_code_hash()}


def _run_identity(run_config: dict[str, Any]) -> dict[str, Any]:
    train = {k: v for k, v in run_config["train_agent"].items() if k not in RESUMABLE_CHANGES}
    return {**run_config, "train_agent": train}


def resumable_checkpoint(checkpoint_path: str | Path, run_config: dict[str, Any],
                         device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint at `checkpoint_path` if it was written by the same run, else None.

    The same run: equal params and code, except `total_steps` (a larger one extends the run, a smaller one
    than the checkpoint's step ends it at once) and `checkpoint_every`.
    """
    path = Path(checkpoint_path)
    if not path.exists():
        return None
    state = load_checkpoint(path, device)
    config = state.get("config")
    if not isinstance(config, dict) or "train_agent" not in config:
        return None
    return state if _run_identity(config) == _run_identity(run_config) else None


def train_agent(env_config: EnvConfig, agent_config: AgentConfig, config: TrainAgentConfig,
                checkpoint_path: str | Path, device: str = "cpu",
                log: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True,
                precision: torch.dtype | None = None, restart: bool = False) -> dict[str, Any]:
    """Train (or resume training) until `config.total_steps`; returns a summary of the run.

    A checkpoint at `checkpoint_path` of the same run (see `resumable_checkpoint`) is resumed from its last
    update, so raising total_steps extends a finished run, unless `restart`; one from other params is replaced. The
    environments cannot be restored, so a resumed run starts fresh episodes. `precision` is the encoder's
    autocast dtype (None: fp32).

    Under torchrun each rank steps its share of the `num_envs` environments (its own level stream and action
    samples) and DDP averages the gradients (see ppo.py); rank 0 alone writes the checkpoint, which resumes
    under any number of ranks.
    """
    shard = distributed.current()
    local_envs = shard.share(config.num_envs, "train_agent.num_envs")
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    device = torch.device(device)
    agent = build_agent(agent_config).to(device).set_precision(precision)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=config.adam_eps)
    run_config = training_config(env_config, agent_config, config)
    steps_per_update = config.num_envs * config.num_steps
    num_updates = -(-config.total_steps // steps_per_update)

    update, resumed_from, seconds_before = 0, 0, 0.0
    recent: deque = deque(maxlen=100)  # (return, length, completed) of the last 100 finished episodes
    checkpoint_path = Path(checkpoint_path)
    state = None if restart else resumable_checkpoint(checkpoint_path, run_config, device)
    if state is not None:
        agent.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        update = resumed_from = int(state["update"])
        seconds_before = float(state.get("train_seconds", 0.0))
        recent.extend(tuple(episode) for episode in state.get("recent_episodes", []))
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
    if shard.rank:      # rank 0 carries the run's (checkpointed) action-sampling stream; the others their own
        torch.manual_seed(config.seed + RANK_SEED_STRIDE * shard.rank + update)

    env = VecProcgen(env_config, local_envs, seed=config.seed + RANK_SEED_STRIDE * shard.rank + update)
    collector = RolloutCollector(env, agent, config, device, shard)
    policy = distributed.data_parallel(agent, ppo.policy_and_value, shard)
    if state is not None and "reward_normalizer" in state and collector.normalizer is not None:
        collector.normalizer.load_state_dict(state["reward_normalizer"])
    generator = torch.Generator().manual_seed(config.seed + update)
    start_time = time.perf_counter()

    def checkpoint() -> None:
        save_checkpoint(checkpoint_path, {
            "model": agent.state_dict(), "optimizer": optimizer.state_dict(), "update": update,
            "step": update * steps_per_update, "config": run_config, "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
            "precision": str(precision or torch.float32),
            "reward_normalizer": collector.normalizer.state_dict() if collector.normalizer else {},
            "train_seconds": seconds_before + time.perf_counter() - start_time,
            "recent_episodes": [list(episode) for episode in recent]})

    bar = tqdm(total=num_updates * steps_per_update, initial=update * steps_per_update, unit="step",
               desc="train_agent", disable=not (progress and shard.main), smoothing=0.05)
    while update < num_updates:
        if config.anneal_lr:
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * (1 - update / num_updates)
        tic = time.perf_counter()
        agent.eval()
        rollout, episodes = collector.collect()
        collect_time = time.perf_counter() - tic
        agent.train()
        entropy_coef = config.entropy_coef_at(update * steps_per_update)
        stats = ppo_update(agent, optimizer, rollout, replace(config, entropy_coef=entropy_coef), generator, shard,
                           policy)
        update += 1
        recent.extend(distributed.gather_objects([(e.ret, e.length, float(e.completed)) for e in episodes], shard))
        elapsed = time.perf_counter() - tic
        stats.update(learning_rate=optimizer.param_groups[0]["lr"], entropy_coef=entropy_coef,
                     steps_per_s=steps_per_update / elapsed, collect_fraction=collect_time / elapsed)
        stats.update(_recent_means(recent))
        if log is not None:
            log(update * steps_per_update, stats)
        if shard.main and (update % config.checkpoint_every == 0 or update == num_updates):
            checkpoint()
        bar.update(steps_per_update)
        bar.set_postfix(ret=f"{stats.get('episode_return', float('nan')):.2f}", sps=f"{stats['steps_per_s']:.0f}")
    bar.close()
    seconds = seconds_before + time.perf_counter() - start_time
    return {"total_steps": update * steps_per_update, "updates": update,
            "resumed_from_step": resumed_from * steps_per_update, "train_seconds": seconds,
            "steps_per_s": update * steps_per_update / seconds if seconds else 0.0,
            **{f"recent_{key}": value for key, value in _recent_means(recent).items()}}


def _recent_means(recent: deque) -> dict[str, float]:
    """Mean return, length and completion of the recent finished episodes (none yet: no entries)."""
    if not recent:
        return {}
    ret, length, completed = np.asarray(recent, dtype=np.float64).mean(axis=0)
    return {"episode_return": float(ret), "episode_length": float(length), "completion_rate": float(completed)}
