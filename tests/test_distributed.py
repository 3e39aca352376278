"""Distributed training (gloo, 2 processes on the CPU) computes the update one process computes on the combined
batch: the agent's PPO update and the simulator's training step, with the noise, normalisers and latent
uniformity that span the whole batch.

What DDP is responsible for is the gradient, so that is what is compared, with a tolerance relative to the
gradient's scale: two ranks sum in another order than one process, and a gradient that is ~0 (a LayerNorm bias)
can change sign on it. Adam would turn such a sign into a full step of the learning rate either way, so Adam's
step is compared only where the gradient is clearly not ~0; the agent's multi-step update uses plain SGD, whose
parameters move in proportion to the gradients."""
from __future__ import annotations

import dataclasses
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from rlinterp import distributed
from rlinterp.agent.checkpoint import build_agent
from rlinterp.agent.model import RecurrentAgent
from rlinterp.agent.ppo import (RewardNormalizer, Rollout, RolloutCollector, policy_and_value,
                                ppo_update)
from rlinterp.config import ConfigError, params_from_dict
from rlinterp.launch import command
from rlinterp.simulator.checkpoint import build_simulator
from rlinterp.simulator.losses import Window, window_loss
from tests.conftest import tiny_params_dict
from tests.test_simulator import random_window
from tests.toy_envs import CueMemoryEnv

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HEADS = ("hx", "features")   # with "features" no loss reaches the GRU: DDP must let it go without a gradient


def agent_problem(params, heads_input: str = "hx"):
    """A tiny agent, a rollout of 4 envs on the toy memory task, and the config that updates on it."""
    torch.manual_seed(0)
    env = CueMemoryEnv(num_envs=4, delay=2, seed=0)
    agent = RecurrentAgent(env.obs_shape, env.num_actions, channels=(4,), blocks_per_stage=0, fc_size=16,
                           hidden_size=16, heads_input=heads_input)
    config = dataclasses.replace(params.train_agent, num_envs=4, num_steps=12, bptt_steps=4, epochs=2,
                                 minibatches=1, normalize_rewards=False)
    rollout, _ = RolloutCollector(env, agent, config, torch.device("cpu")).collect()
    return agent, rollout, config


def rank_part(x: torch.Tensor | None, axis: int, shard: distributed.Shard) -> torch.Tensor | None:
    """This rank's equal share of `x` along `axis` (None for a field a window leaves unset)."""
    if x is None:
        return None
    size = x.shape[axis] // shard.world
    return x.narrow(axis, shard.rank * size, size)


def rollout_share(rollout: Rollout, shard: distributed.Shard) -> Rollout:
    """This rank's envs of a rollout: (T, N, ...) fields split along N, the (N,) ones along their only axis."""
    return Rollout(**{f.name: rank_part(getattr(rollout, f.name), 0 if f.name.startswith("next_") else 1, shard)
                      for f in dataclasses.fields(rollout)})


def simulator_problem(params):
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(params.simulator, agent)
    torch.manual_seed(1)
    window = random_window(params, agent, batch=4, k=params.simulator.num_sim_steps)
    window.reward[1, 0], window.done[2, 1] = 10.0, 1.0
    return agent, simulator, window


def window_share(window: Window, shard: distributed.Shard) -> Window:
    """This rank's windows: (B, ...) fields split along B, time-major (K, B, ...) ones along their second axis."""
    batch_first = ("context", "hx_prev", "action_prev")
    return Window(**{f.name: rank_part(getattr(window, f.name), 0 if f.name in batch_first else 1, shard)
                     for f in dataclasses.fields(window)})


# Measured (2-core Intel Xeon, AVX-512): reduction order moves the simulator's gradients by at most 6e-8 of the
# model's largest gradient entry and the agent's two SGD moves by 3.4e-6 of the largest move, while every rank
# drawing the first rows' noise moves a gradient by 7e-6 of it and a uniformity term without the other rank's
# latents by 1.3e-5: 7x and 13x the simulator's tolerance, which the reduction noise uses 1/600 of.
SIM_TOLERANCE = 1e-6       # of the model's largest |gradient| entry, plus RTOL of the tensor's own largest entry
AGENT_TOLERANCE = 1e-5     # of the largest parameter move (two SGD steps compound the noise)
RTOL = 1e-4
ADAM_CLEAR = 1e-3          # Adam's steps are compared where |gradient| > this share of the largest entry
AGENT_LR = 1e-2


def agent_update(agent, rollout, config, shard):
    optimizer = torch.optim.SGD(agent.parameters(), lr=AGENT_LR)
    policy = distributed.data_parallel(agent, policy_and_value, shard)
    stats = ppo_update(agent, optimizer, rollout, config, torch.Generator().manual_seed(0), shard, policy)
    return {k: v.clone() for k, v in agent.state_dict().items()}, stats


def simulator_update(agent, simulator, window, config, shard):
    optimizer = torch.optim.Adam(simulator.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    objective = distributed.data_parallel(simulator, lambda module, w: window_loss(
        module, agent, w, config, generator=generator, shard=shard), shard)
    loss, stats = objective(window)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in simulator.named_parameters() if p.grad is not None}
    before = {name: p.detach().clone() for name, p in simulator.named_parameters()}
    torch.nn.utils.clip_grad_norm_(simulator.parameters(), config.max_grad_norm)
    optimizer.step()
    steps = {name: p.detach() - before[name] for name, p in simulator.named_parameters()}
    return grads, steps, distributed.mean_over_ranks(stats, shard)


def normalised_rewards(shard, rewards: np.ndarray, firsts: np.ndarray):
    """A reward normaliser over every rank's envs, fed this rank's share of each step."""
    size = rewards.shape[1] // shard.world
    normalizer = RewardNormalizer(size, gamma=0.9, shard=shard)
    columns = slice(shard.rank * size, (shard.rank + 1) * size)
    out = np.stack([normalizer(r[columns], f[columns]) for r, f in zip(rewards, firsts)])
    return out, normalizer.state_dict()


def reward_problem():
    rng = np.random.default_rng(0)
    return rng.exponential(size=(20, 6)), rng.random((20, 6)) < 0.1


BOTTLENECKS = ("sphere", "vae")     # the latents' uniformity spans the ranks; the vae's KL is per window


def rank_main(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    shard, _ = distributed.start(torch.device("cpu"))
    results = {}
    for heads in HEADS:
        agent, rollout, config = agent_problem(sim_params("sphere"), heads)
        results[heads] = agent_update(agent, rollout_share(rollout, shard), config, shard)
    for bottleneck in BOTTLENECKS:
        params = sim_params(bottleneck)
        agent_sim, simulator, window = simulator_problem(params)
        results[bottleneck] = simulator_update(agent_sim, simulator, window_share(window, shard),
                                               params.train_simulator, shard)
    rewards, results["normalizer"] = normalised_rewards(shard, *reward_problem())
    if shard.main:
        torch.save(results, f"{out_dir}/rank0.pt")
    np.save(f"{out_dir}/rewards{rank}.npy", rewards)
    distributed.finish()


def sim_params(bottleneck: str):
    data = tiny_params_dict()
    data["simulator"]["bottleneck"] = bottleneck
    data["train_simulator"]["features_weight"] = 0.5     # the features term's real features are per rank too
    return params_from_dict(data)


def assert_close(ranked: torch.Tensor, single: torch.Tensor, scale: float, tolerance: float, what: str) -> None:
    """Equal up to float reduction order: `tolerance` of the model's largest entry (`scale`) plus RTOL of the
    tensor's own largest entry."""
    gap = float((ranked - single).abs().max())
    allowed = tolerance * scale + RTOL * float(single.abs().max())
    assert gap <= allowed, f"{what}: two ranks differ from one process by {gap:.3g} (allowed {allowed:.3g})"


def test_two_ranks_update_as_one_process_on_the_combined_batch(tmp_path):
    mp.spawn(rank_main, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranked = torch.load(tmp_path / "rank0.pt", weights_only=False)
    single = distributed.Shard()

    for heads in HEADS:
        agent, rollout, config = agent_problem(sim_params("sphere"), heads)
        initial = {k: v.clone() for k, v in agent.state_dict().items()}
        state, stats = agent_update(agent, rollout, config, single)
        assert any(not torch.equal(initial[k], state[k]) for k in state)      # the update moved the agent
        ranked_state, ranked_stats = ranked[heads]
        # SGD: each parameter's change is the learning rate times its (all-reduced) gradients
        moves = {name: value - initial[name] for name, value in state.items()}
        scale = max(float(m.abs().max()) for m in moves.values())
        for name, move in moves.items():
            assert_close(ranked_state[name] - initial[name], move, scale, AGENT_TOLERANCE, f"{heads}: {name}")
        for name in ("policy_loss", "value_loss", "entropy", "explained_variance"):
            assert ranked_stats[name] == pytest.approx(stats[name], rel=1e-4, abs=1e-6), f"{heads}: {name}"

    for bottleneck in BOTTLENECKS:
        params = sim_params(bottleneck)
        agent, simulator, window = simulator_problem(params)
        grads, steps, stats = simulator_update(agent, simulator, window, params.train_simulator, single)
        ranked_grads, ranked_steps, ranked_stats = ranked[bottleneck]
        assert ranked_grads.keys() == grads.keys()
        scale = max(float(g.abs().max()) for g in grads.values())
        for name, grad in grads.items():
            assert_close(ranked_grads[name], grad, scale, SIM_TOLERANCE, f"{bottleneck}: gradient of {name}")
            clear = grad.abs() > ADAM_CLEAR * scale          # Adam's step: ~lr x the gradient's sign
            assert torch.allclose(ranked_steps[name][clear], steps[name][clear], atol=1e-7, rtol=1e-3), \
                f"{bottleneck}: Adam step of {name}"
        for name in ("loss", "image", "kl", "bottleneck", "reward", "features"):
            assert ranked_stats[name] == pytest.approx(stats[name], rel=1e-4, abs=1e-5), f"{bottleneck}: {name}"

    rewards, normalizer = normalised_rewards(single, *reward_problem())
    both = np.concatenate([np.load(tmp_path / f"rewards{rank}.npy") for rank in range(WORLD)], axis=1)
    assert np.allclose(both, rewards, rtol=1e-10)
    assert ranked["normalizer"] == pytest.approx(normalizer, rel=1e-10)


def test_a_sharded_batch_draws_its_rows_of_the_whole_batchs_noise():
    whole = distributed.draw_rows(torch.rand, (6, 3), distributed.Shard(), generator=torch.Generator().manual_seed(4))
    parts = [distributed.draw_rows(torch.rand, (3, 3), distributed.Shard(rank, 2),
                                   generator=torch.Generator().manual_seed(4)) for rank in range(2)]
    assert torch.equal(torch.cat(parts), whole)


def test_a_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ConfigError, match="train_simulator.batch_size = 6 cannot be split evenly over 4"):
        distributed.Shard(1, 4).share(6, "train_simulator.batch_size")


def test_launch_runs_torchrun_only_when_asked():
    compute = params_from_dict(tiny_params_dict()).compute
    assert command(compute, ["stages/x.py", "--a", "b"], {})[1:] == ["stages/x.py", "--a", "b"]
    node = dataclasses.replace(compute, nproc_per_node=8)
    assert command(node, ["stages/x.py"], {})[1:] == ["-m", "torch.distributed.run", "--nproc_per_node=8",
                                                       "--standalone", "stages/x.py"]
    nodes = dataclasses.replace(compute, nproc_per_node=8, nnodes=2)
    with pytest.raises(ConfigError, match="MASTER_ADDR and NODE_RANK"):
        command(nodes, ["stages/x.py"], {})
    argv = command(nodes, ["stages/x.py"], {"MASTER_ADDR": "n0", "NODE_RANK": "1"})
    assert argv[3:] == ["--nproc_per_node=8", "--nnodes=2", "--node_rank=1", "--master_addr=n0",
                        f"--master_port={compute.master_port}", "stages/x.py"]
