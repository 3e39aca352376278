"""Training the simulator on recorded windows, resumable from its checkpoint, which names its agent.

A run is saved in two files: the checkpoint (weights, progress, the latent-noise generator and what the run was:
params, training code, agent and store; a few MB, git-tracked so a fresh clone does not retrain) and, beside it,
`optimizer_state_path(checkpoint)` (Adam's moments, twice the weights, never in git). A checkpoint is resumed
only when the run's params, training code, agent and training store all match; raising
`train_simulator.total_windows` extends a run, and a finished run asked again only refits its prior and event
calibration. Without its optimiser state (a fresh clone) a run continues from the weights with fresh Adam moments:
the same run, not bit for bit. Loading a simulator beside another agent than its own is refused.
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
from rlinterp.agent.checkpoint import CheckpointError, content_digest, load_checkpoint, save_checkpoint
from rlinterp.agent.model import RecurrentAgent
from rlinterp.config import SimulatorConfig, TrainSimulatorConfig, to_dict
from rlinterp.envs import OBS_SHAPE
from rlinterp.errors import InputError
from rlinterp.files import code_sha256, directory_sha256
from rlinterp.simulator import data, losses, model, networks
from rlinterp.simulator.losses import Window, window_from_batch, window_loss
from rlinterp.simulator.checkpoint import FORMAT, build_simulator
from rlinterp.simulator.model import Simulator
from rlinterp.store import RolloutStore

def training_code_hash() -> str:
    """sha256 of the code (not the comments) of the modules that define a simulator training run."""
    return code_sha256([module.__file__ for module in (data, losses, model, networks, distributed,
                                                        sys.modules[__name__])])


OPTIMIZER_FORMAT = "rlinterp.simulator-optimizer/1"
# train_simulator params that leave the trained weights' path alone: the length of the run (a larger total extends
# it), the post-training fits, evaluation and bookkeeping. Changing one does not restart a run.
OFF_TRAJECTORY = frozenset({"total_windows", "prior_fit_windows", "calibration_windows", "eval_windows", "log_every",
                            "checkpoint_every", "num_workers"})


def training_config(sim_config: SimulatorConfig, config: TrainSimulatorConfig, store_path: str | Path
                    ) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the params that shape training, its code and its data."""
    return {"simulator": to_dict(sim_config),
            "train_simulator": {k: v for k, v in to_dict(config).items() if k not in OFF_TRAJECTORY},
            "code_sha256": training_code_hash(), "store_sha256": directory_sha256(store_path)}


def optimizer_state_path(checkpoint_path: str | Path) -> Path:
    """Where a checkpoint's optimiser state lives: beside it, `<name>.optimizer.pt` (git ignores `*.optimizer.pt`)."""
    path = Path(checkpoint_path)
    return path.with_name(f"{path.stem}.optimizer.pt")


def resumable_checkpoint(path: str | Path, run_config: dict[str, Any], agent_sha256: str, num_batches: int,
                         device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint at `path` if a run of `run_config` beside this agent wrote it no further than `num_batches`
    (one that went further is not this run's past: it trains afresh), else None."""
    if not Path(path).exists():
        return None
    state = load_checkpoint(path, device, fmt=FORMAT, producer="train_simulator")
    same = state.get("config") == run_config and state.get("agent_sha256") == agent_sha256
    return state if same and int(state["batch"]) <= num_batches else None


def saved_optimizer_state(checkpoint_path: str | Path, state: dict[str, Any], device: str | torch.device = "cpu"
                          ) -> dict[str, Any] | None:
    """The optimiser state saved with the checkpoint `state` (read from `checkpoint_path`), or None where there is
    none or it belongs to another checkpoint (a fresh clone; a run killed between writing the two files)."""
    path = optimizer_state_path(checkpoint_path)
    if not path.exists():
        return None
    saved = load_checkpoint(path, device, fmt=OPTIMIZER_FORMAT, producer="train_simulator",
                            remedy=f"delete it: the run then continues from {checkpoint_path} with fresh Adam moments")
    return saved["optimizer"] if saved.get("weights_sha256") == content_digest(state["model"]) else None


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
    steps = store.episode_steps(episodes)
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


def learning_rate(config: TrainSimulatorConfig, windows: int) -> float:
    """The learning rate after `windows` training windows: halving every `config.learning_rate_halflife`."""
    if config.learning_rate_halflife == 0:
        return config.learning_rate
    return config.learning_rate * 0.5 ** (windows / config.learning_rate_halflife)


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
    run_config = training_config(sim_config, config, store_path)
    num_batches = -(-config.total_windows // config.batch_size)
    batch_index, resumed_from = 0, 0
    checkpoint_path = Path(checkpoint_path)
    state = resumable_checkpoint(checkpoint_path, run_config, agent_sha256, num_batches, device)
    finished = state is not None and int(state["batch"]) == num_batches
    if shard.main:
        print("train_simulator: " + ("no checkpoint of these params, code, agent and store to resume; training from "
                                     "the start" if state is None else "its checkpoint finished this run; refitting "
                                     "the prior and calibration" if finished else "resuming from its checkpoint"))
    if state is not None:
        simulator.load_state_dict(state["model"])
        simulator.reset_event_calibration()      # a finished run's, refitted below
        optimizer_state = saved_optimizer_state(checkpoint_path, state, device)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        elif shard.main:
            print(f"train_simulator: no optimiser state of {checkpoint_path} (expected "
                  f"{optimizer_state_path(checkpoint_path)}); continuing from its weights with fresh Adam moments")
        batch_index = resumed_from = int(state["batch"])
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
        """The optimiser state first, then the checkpoint that names it: the checkpoint's arrival is the commit."""
        weights = simulator.state_dict()
        save_checkpoint(optimizer_state_path(checkpoint_path), {
            "optimizer": optimizer.state_dict(), "weights_sha256": content_digest(weights)}, fmt=OPTIMIZER_FORMAT)
        save_checkpoint(checkpoint_path, {"model": weights, "batch": batch_index, "config": run_config,
                                          "agent_sha256": agent_sha256, "generator": generator.get_state()},
                        fmt=FORMAT)

    simulator.train()
    with encoder_precision(agent, precision):
        running: dict[str, float] = {}
        bar = tqdm(total=num_batches, initial=batch_index, unit="batch", desc="train_simulator",
                   disable=not (progress and shard.main))
        while batch_index < num_batches:
            window = window_from_batch({k: v.to(device) for k, v in next(batches).items()}, simulator)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, batch_index * config.batch_size)
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
    # A finished run whose refit changed nothing keeps its files: identical content saves to other bytes, which
    # DVC would take for a new simulator and re-run every stage after this one.
    unchanged = finished and content_digest(simulator.state_dict()) == content_digest(state["model"])
    if shard.main and not unchanged:
        checkpoint()
    return simulator, {"batches": batch_index, "windows": batch_index * config.batch_size,
                       "resumed_from_windows": resumed_from * config.batch_size,
                       "simulated_steps": batch_index * config.batch_size * sim_config.num_sim_steps,
                       "event_calibration": {event: dict(zip(("scale", "offset"), row.tolist()))
                                             for event, row in zip(("reward", "done"), simulator.event_calibration)}}
