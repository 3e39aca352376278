"""Training the simulator on recorded windows, resumable from its checkpoint, which names its agent.

A checkpoint is resumed only when params, training code and the agent's sha256 all match; loading a simulator
beside another agent than the one it was trained with is refused.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlinterp import distributed
from rlinterp.agent.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rlinterp.agent.model import RecurrentAgent
from rlinterp.config import SimulatorConfig, TrainSimulatorConfig, to_dict
from rlinterp.envs import OBS_SHAPE
from rlinterp.errors import InputError
from rlinterp.files import code_sha256
from rlinterp.simulator import data, losses, model, networks
from rlinterp.simulator.losses import Window, window_from_batch, window_loss
from rlinterp.simulator.checkpoint import FORMAT, build_simulator
from rlinterp.simulator.model import Simulator
from rlinterp.store import RolloutStore

def training_code_hash() -> str:
    """sha256 of the code (not the comments) of the modules that define a simulator training run."""
    return code_sha256([module.__file__ for module in (data, losses, model, networks, distributed,
                                                        sys.modules[__name__])])


def training_config(sim_config: SimulatorConfig, config: TrainSimulatorConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the params and the training code."""
    return {"simulator": to_dict(sim_config), "train_simulator": to_dict(config), "code_sha256": training_code_hash()}


def resumable_checkpoint(path: str | Path, run_config: dict[str, Any], agent_sha256: str,
                         device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint at `path` if it was written by a run of `run_config` beside this agent, else None."""
    if not Path(path).exists():
        return None
    state = load_checkpoint(path, device, fmt=FORMAT, producer="train_simulator")
    return state if state.get("config") == run_config and state.get("agent_sha256") == agent_sha256 else None


def check_training_store(store: RolloutStore, agent_sha256: str, sim_config: SimulatorConfig) -> RolloutStore:
    """The store, if the simulator can learn from it: recorded by this agent, with every reward inside the reward
    head's support (a two-hot target cannot say more); else a clear error."""
    if store.attrs.get("agent_sha256") != agent_sha256:
        raise CheckpointError(f"{store.path}: recorded with agent sha256 {store.attrs.get('agent_sha256')}, but "
                              f"the agent given has sha256 {agent_sha256}; re-run the record stage")
    rewards = np.asarray(store["reward"][:])
    support = sim_config.reward_support
    if len(rewards) and (rewards.min() < support[0] or rewards.max() > support[-1]):
        raise InputError(f"{store.path}: rewards range from {rewards.min():g} to {rewards.max():g}, outside "
                         f"simulator.reward_support {list(support)}; expected a support that covers every reward")
    return store


def real_steps(store: RolloutStore, episodes: np.ndarray, simulator: Simulator, max_steps: int = 4096
               ) -> dict[str, torch.Tensor]:
    """Up to `max_steps` evenly spaced steps of `episodes`: agent hx (N, H) and frames at the simulator's
    resolution (N, 3, S, S). Reference data for baselines (the mean frame) and realism measures."""
    steps = np.concatenate([np.arange(store.episode_starts[e], store.episode_ends[e]) for e in episodes])
    steps = steps[np.linspace(0, len(steps) - 1, min(max_steps, len(steps))).astype(int)]
    obs = torch.from_numpy(store.rows("obs", steps))
    hx = torch.from_numpy(store.rows("hx", steps))
    return {"hx": hx, "frames": simulator.frames_from_obs(obs)}


@torch.no_grad()
def fit_prior(simulator: Simulator, store: RolloutStore, episodes: np.ndarray, config: TrainSimulatorConfig,
              device: torch.device, batch_size: int = 256) -> None:
    """Fit the simulator's prior (`Simulator.fit_prior`) to the latents of `config.prior_fit_windows` training
    windows, drawn (and, for a vae, sampled from their posteriors) with `config.seed`."""
    context = simulator.config.num_init_steps
    starts = data.valid_starts(store, episodes, context)
    rng = np.random.default_rng(config.seed)
    starts = np.sort(rng.choice(starts, size=min(config.prior_fit_windows, len(starts)), replace=False))
    generator = torch.Generator(device=device).manual_seed(config.seed)
    latents = []
    for chunk in np.array_split(starts, -(-len(starts) // batch_size)):
        steps = (chunk[:, None] + np.arange(context)).ravel()
        obs = torch.from_numpy(store.rows("obs", steps).reshape(len(chunk), context, *OBS_SHAPE)).to(device)
        latents.append(simulator.encode(simulator.frames_from_obs(obs), generator=generator).value)
    simulator.fit_prior(torch.cat(latents))


@contextmanager
def encoder_precision(agent: RecurrentAgent, dtype: torch.dtype | None) -> Iterator[RecurrentAgent]:
    """The agent with its encoder at `dtype` (`RecurrentAgent.set_precision`) inside the block, handed back in its
    own precision however the block ends."""
    own = agent.encoder_dtype
    agent.set_precision(dtype)
    try:
        yield agent
    finally:
        agent.set_precision(own)


def train_step(objective: Callable[[Window], tuple[torch.Tensor, dict[str, float]]], simulator: Simulator,
               optimizer: torch.optim.Optimizer, window: Window, max_grad_norm: float) -> dict[str, float]:
    """One optimiser step on `window`: the objective's stats, with the gradient's norm before clipping."""
    loss, stats = objective(window)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(simulator.parameters(), max_grad_norm))
    optimizer.step()
    return stats


@torch.no_grad()
def calibrate_events(simulator: Simulator, agent: RecurrentAgent, store: RolloutStore, episodes: np.ndarray,
                     config: TrainSimulatorConfig, device: torch.device, batch_size: int = 64) -> None:
    """Fit the simulator's event calibration (`Simulator.fit_event_calibration`) to open-loop rollouts of
    `config.calibration_windows` training windows (drawn with `config.seed`), made as open-loop prediction and the
    training's open-loop terms make them."""
    context, steps = simulator.config.num_init_steps, simulator.config.num_sim_steps
    windows = data.heldout_windows(store, episodes, context, context + steps - 1, config.calibration_windows,
                                   config.seed)
    simulator.reset_event_calibration()
    collected: dict[str, list[torch.Tensor]] = {"reward_logits": [], "reward_target": [], "done_logit": [], "done": []}
    for batch in data.batches_of(windows, batch_size, device):
        window = window_from_batch(batch, simulator)
        rollout = losses.open_loop_rollout(simulator, agent, simulator.encode(window.context, sample=False).value,
                                           window)
        transitions = window.label_mask.bool()
        for name, value in (("reward_logits", rollout.reward_logits), ("done_logit", rollout.done_logit),
                            ("reward_target", simulator.reward_target(window.reward)), ("done", window.done)):
            collected[name].append(value[transitions])
    simulator.fit_event_calibration(**{name: torch.cat(values) for name, values in collected.items()})


def train_simulator(sim_config: SimulatorConfig, config: TrainSimulatorConfig, store_path: str | Path,
                    agent: RecurrentAgent, agent_sha256: str, checkpoint_path: str | Path, device: str = "cpu",
                    log: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True,
                    precision: torch.dtype | None = None) -> tuple[Simulator, dict[str, Any]]:
    """Train (or resume) until `config.total_windows` windows; returns the simulator and a run summary.

    `precision`: the agent encoder's autocast dtype while training (e.g. torch.bfloat16; None: fp32), nearly all
    of a batch's compute; the agent is handed back in its own precision.

    Under torchrun each rank trains on its share of every batch (DDP averages the gradients; the batch's random
    numbers and the latents' uniformity are those of the whole batch) and rank 0 alone writes the checkpoint;
    a checkpoint resumes under any number of ranks."""
    shard = distributed.current()
    torch.manual_seed(config.seed)
    device = torch.device(device)
    agent.requires_grad_(False)
    agent.eval()
    store = check_training_store(RolloutStore(store_path), agent_sha256, sim_config)
    train_episodes = data.simulator_split(store, config).train
    simulator = build_simulator(sim_config, agent).to(device)
    optimizer = torch.optim.Adam(simulator.parameters(), lr=config.learning_rate)
    run_config = training_config(sim_config, config)
    batch_index, resumed_from = 0, 0
    checkpoint_path = Path(checkpoint_path)
    state = resumable_checkpoint(checkpoint_path, run_config, agent_sha256, device)
    if state is not None:
        simulator.load_state_dict(state["model"])
        simulator.reset_event_calibration()      # a finished run's, refitted below
        optimizer.load_state_dict(state["optimizer"])
        batch_index = resumed_from = int(state["batch"])
    num_batches = -(-config.total_windows // config.batch_size)
    length = sim_config.num_init_steps + sim_config.num_sim_steps - 1
    batches = data.window_loader(str(store_path), train_episodes, sim_config.num_init_steps, length,
                                 shard.share(config.batch_size, "train_simulator.batch_size"), config.seed,
                                 config.num_workers, skip=batch_index, rank=shard.rank)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    if state is not None:
        generator.set_state(state["generator"])
    objective = distributed.data_parallel(simulator, lambda module, window: window_loss(
        module, agent, window, config, generator=generator, shard=shard), shard)

    def checkpoint() -> None:
        save_checkpoint(checkpoint_path, {"model": simulator.state_dict(), "optimizer": optimizer.state_dict(),
                                          "batch": batch_index, "config": run_config, "agent_sha256": agent_sha256,
                                          "generator": generator.get_state()}, fmt=FORMAT)

    simulator.train()
    with encoder_precision(agent, precision):
        running: dict[str, float] = {}
        bar = tqdm(total=num_batches, initial=batch_index, unit="batch", desc="train_simulator",
                   disable=not (progress and shard.main))
        while batch_index < num_batches:
            window = window_from_batch({k: v.to(device) for k, v in next(batches).items()}, simulator)
            stats = train_step(objective, simulator, optimizer, window, config.max_grad_norm)
            batch_index += 1
            for name, value in stats.items():
                running[name] = running.get(name, 0.0) + value
            if batch_index % config.log_every == 0 or batch_index == num_batches:
                count = config.log_every if batch_index % config.log_every == 0 else batch_index % config.log_every
                means = distributed.mean_over_ranks({name: value / count for name, value in running.items()}, shard)
                running = {}
                if log is not None:
                    log(batch_index * config.batch_size, means)
                bar.set_postfix(loss=f"{means['loss']:.1f}", image=f"{means['image']:.1f}")
            if shard.main and batch_index % config.checkpoint_every == 0 and batch_index < num_batches:
                checkpoint()
            bar.update(1)
        bar.close()
    simulator.eval()
    if sim_config.prior == "fitted":      # every rank fits the same prior: the windows and noise are seeded
        fit_prior(simulator, store, train_episodes, config, device)
    calibrate_events(simulator, agent, store, train_episodes, config, device)
    if shard.main:
        checkpoint()
    return simulator, {"batches": batch_index, "windows": batch_index * config.batch_size,
                       "resumed_from_windows": resumed_from * config.batch_size,
                       "simulated_steps": batch_index * config.batch_size * sim_config.num_sim_steps,
                       "event_calibration": {event: dict(zip(("scale", "offset"), row.tolist()))
                                             for event, row in zip(("reward", "done"), simulator.event_calibration)}}
