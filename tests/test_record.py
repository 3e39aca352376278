"""Recorded rollouts are faithful: replaying actions reproduces frames; re-running the agent reproduces hx."""
import numpy as np
import pytest
import torch

from rlinterp.agent.acting import replay_hidden_states, untrained_hidden_states
from rlinterp.agent.checkpoint import build_agent
from rlinterp.envs import NUM_ACTIONS, VecProcgen
from rlinterp.record import record_rollouts
from rlinterp.store import RolloutStore, RolloutWriter, real_rollout_fields


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    from tests.conftest import tiny_params_dict
    from rlinterp.config import params_from_dict
    params = params_from_dict(tiny_params_dict())
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval()
    path = tmp_path_factory.mktemp("record") / "rollouts.zarr"
    fields = real_rollout_fields(params.agent.hidden_size, NUM_ACTIONS)
    with RolloutWriter(path, fields, {"stage": "test"}, chunk_steps=32, shard_steps=128) as writer:
        record_rollouts(params.env, agent, writer, num_envs=3, episodes_per_env=2, seed=7, progress=False)
    return params, agent, RolloutStore(path)


def test_episode_bookkeeping(recorded):
    params, _, store = recorded
    info = store.episode_info()
    assert store.num_episodes == 6
    for index in range(store.num_episodes):
        episode = store.episode(index)
        assert episode["done"][-1] and not episode["done"][:-1].any()
        assert (episode["level_seed"] == info["level_seed"][index]).all()
        assert episode["reward"].sum() == pytest.approx(info["return"][index])
        assert info["completed"][index] == (info["return"][index] > 0)
    steps = store.episode_steps([4, 1])       # every step of those episodes, in the order asked
    assert len(steps) == info["length"][4] + info["length"][1] and len(store.episode_steps([])) == 0
    np.testing.assert_array_equal(store.rows("done", steps), np.concatenate([store.episode(4)["done"],
                                                                             store.episode(1)["done"]]))


def test_replaying_actions_reproduces_frames(recorded):
    params, _, store = recorded
    for index in range(store.num_episodes):
        episode = store.episode(index, ["obs", "action", "level_seed"])
        env = VecProcgen(params.env, 1, seed=123, start_level=int(episode["level_seed"][0]), num_levels=1)
        _, obs, first = env.observe()
        assert first[0]
        for t, action in enumerate(episode["action"]):
            np.testing.assert_array_equal(obs[0], episode["obs"][t], err_msg=f"episode {index} step {t}")
            env.act(np.array([action]))
            _, obs, first = env.observe()
        assert first[0]                         # the episode ends exactly where the recording says


def test_rerunning_the_agent_reproduces_hx_logits_value(recorded):
    _, agent, store = recorded
    for index in range(store.num_episodes):
        episode = store.episode(index)
        steps = len(episode["obs"])
        first = torch.zeros(steps, 1, dtype=torch.bool)
        first[0] = True
        with torch.no_grad():
            out = agent.forward_sequence(torch.from_numpy(episode["obs"])[:, None], agent.initial_state(1), first)
        np.testing.assert_allclose(out.hx[:, 0].numpy(), episode["hx"], atol=1e-5)
        np.testing.assert_allclose(out.logits[:, 0].numpy(), episode["logits"], atol=1e-5)
        np.testing.assert_allclose(out.value[:, 0].numpy(), episode["value"], atol=1e-5)


def test_replaying_frames_in_batches_gives_the_recorded_hx_and_an_untrained_agent_other_states(recorded):
    params, agent, store = recorded
    replayed = replay_hidden_states(agent, store, batch_episodes=4)            # batches that split the store
    np.testing.assert_allclose(replayed, np.asarray(store["hx"][:]), atol=1e-5)
    untrained = untrained_hidden_states(params.agent, store, seed=123)
    assert untrained.shape == replayed.shape and np.abs(untrained - replayed).max() > 0.05
    np.testing.assert_array_equal(untrained, untrained_hidden_states(params.agent, store, seed=123))
