"""The Procgen env under the installed numpy, its episode bookkeeping, and policy-independent level seeds."""
import subprocess
import sys

import numpy as np

import torch

from rlinterp.agent.checkpoint import build_agent
from rlinterp.agent.acting import AgentPolicy
from rlinterp.agent.evaluate import ConstantPolicy, RandomPolicy, play_episodes
from rlinterp.envs import NUM_ACTIONS, OBS_SHAPE, VecProcgen


def test_env_steps_under_installed_numpy(params):
    env = VecProcgen(params.env, num_envs=4, seed=0)
    reward, obs, first = env.observe()
    assert isinstance(obs, np.ndarray) and obs.dtype == np.uint8 and obs.shape == (4, *OBS_SHAPE)
    assert first.dtype == bool and first.all()             # every env starts an episode
    assert env.num_actions == NUM_ACTIONS
    frames = [obs.copy()]
    for _ in range(20):
        env.act(np.random.default_rng(0).integers(NUM_ACTIONS, size=4))
        _, obs, _ = env.observe()
        frames.append(obs.copy())
    assert np.abs(np.diff(np.stack(frames).astype(np.int16), axis=0)).sum() > 0   # the game moves
    assert np.__version__ == __import__("importlib.metadata").metadata.version("numpy")


def test_episode_bookkeeping_matches_rewards(params):
    env = VecProcgen(params.env, num_envs=8, seed=3)
    rng = np.random.default_rng(0)
    running = np.zeros(8)
    lengths = np.zeros(8, dtype=int)
    finished = []
    while len(finished) < 8:
        episodes = env.act(rng.integers(NUM_ACTIONS, size=8))
        reward, _, first = env.observe()
        running += reward
        lengths += 1
        for e in episodes:
            assert first[e.env_index]
            assert e.ret == running[e.env_index] and e.length == lengths[e.env_index]
            assert e.completed == (e.ret > 0)                 # CoinRun pays only at the coin
            assert params.env.start_level <= e.level_seed < params.env.start_level + params.env.num_levels
            finished.append(e)
        running[first], lengths[first] = 0, 0


def test_every_policy_plays_the_same_level_seeds(params):
    args = dict(num_envs=3, episodes_per_env=2, seed=5, start_level=1000, num_levels=50, progress=False)
    constant = play_episodes(params.env, ConstantPolicy(8), **args)
    random = play_episodes(params.env, RandomPolicy(NUM_ACTIONS, 0), **args)
    assert not np.array_equal(constant.lengths, random.lengths)      # the policies behave differently...
    np.testing.assert_array_equal(constant.level_seeds, random.level_seeds)  # ...on the same levels
    assert ((1000 <= constant.level_seeds) & (constant.level_seeds < 1050)).all()


def test_greedy_agent_whose_mode_ignores_the_frame_plays_like_that_constant_action(params):
    """The check behind metrics/agent.json's greedy_agent: an agent whose most likely action is always RIGHT+UP
    scores, played greedily, exactly what holding RIGHT+UP scores; sampling from it does not."""
    agent = build_agent(params.agent)
    with torch.no_grad():
        agent.policy_head.weight.zero_()
        agent.policy_head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(8), NUM_ACTIONS).float())
    args = dict(num_envs=3, episodes_per_env=2, seed=5, start_level=0, num_levels=50, progress=False)
    constant = play_episodes(params.env, ConstantPolicy(8), **args)
    greedy = play_episodes(params.env, AgentPolicy(agent, seed=0, greedy=True), **args)
    sampled = play_episodes(params.env, AgentPolicy(agent, seed=0), **args)
    np.testing.assert_array_equal(greedy.returns, constant.returns)
    np.testing.assert_array_equal(greedy.lengths, constant.lengths)
    assert not np.array_equal(sampled.lengths, constant.lengths)


def test_importing_procgen_keeps_gym_banner_quiet():
    code = "from rlinterp.envs import VecProcgen, _procgen_env_class; _procgen_env_class()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "unmaintained" not in result.stderr and "Gym" not in result.stderr
