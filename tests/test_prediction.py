"""Prediction-quality measures on known inputs, and simulated samples written as rollout stores."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlinterp.agent.checkpoint import build_agent
from rlinterp.simulator import quality
from rlinterp.simulator.data import WINDOW_FIELDS
from rlinterp.simulator.losses import window_from_batch
from rlinterp.simulator.prediction import compare, step_means, summarise
from rlinterp.simulator.sample import (informed_first_transition, prior_events, record_samples, sample_fields,
                                       stored_events)
from rlinterp.simulator.checkpoint import build_simulator
from rlinterp.store import RolloutStore, RolloutWriter

from tests.test_simulator import numbered_store


def frames(k=4, b=3, size=16, seed=0):
    return 0.1 + 0.8 * torch.rand(k, b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_identical_inputs_score_perfectly():
    x = frames()
    assert quality.mse(x, x).abs().max() == 0
    assert torch.isinf(quality.psnr(x, x)).all()
    assert torch.allclose(quality.ssim(x, x), torch.ones(4, 3), atol=1e-6)
    h = torch.randn(4, 3, 8)
    assert torch.allclose(quality.cosine(h, h), torch.ones(4, 3), atol=1e-6)
    logits = torch.randn(4, 3, 15)
    assert (quality.action_agreement(logits, logits) == 1).all()
    assert quality.policy_kl(logits, logits).abs().max() < 1e-6


def test_known_perturbations_give_known_values():
    x = frames()
    shifted = x + 0.1                                          # still inside [0, 1]
    assert torch.allclose(quality.mse(shifted, x), torch.full((4, 3), 0.01), atol=1e-6)
    assert torch.allclose(quality.psnr(shifted, x), torch.full((4, 3), 20.0), atol=1e-3)
    assert (quality.ssim(shifted, x) < 1).all() and (quality.ssim(torch.rand_like(x), x) < 0.2).all()
    h = torch.randn(4, 3, 8)
    assert torch.allclose(quality.cosine(-h, h), -torch.ones(4, 3), atol=1e-6)
    logits = torch.randn(4, 3, 15)
    assert quality.policy_kl(logits + 3.0, logits).abs().max() < 1e-5      # same policy, shifted logits
    flipped = logits.clone()
    flipped.scatter_(-1, logits.argmax(-1, keepdim=True), -100.0)          # the favourite becomes impossible
    assert (quality.action_agreement(flipped, logits) == 0).all()
    uniform = torch.zeros(1, 1, 15)
    certain = torch.full((1, 1, 15), -1e4)
    certain[..., 0] = 0
    assert float(quality.policy_kl(uniform, certain)) == pytest.approx(math.log(15), abs=1e-4)


def test_curves_are_means_over_the_compared_windows_with_intervals_over_levels():
    """Rare events: a median would read 0 at every step; the mean carries the rate, over the valid windows only."""
    rng = np.random.default_rng(0)
    k, w = 3, 400
    levels = np.arange(w) % 40
    values = (rng.random((k, w)) < 0.05).astype(float)
    valid = np.ones((k, w), bool)
    valid[1, :200] = False
    values[1, :200] = 100.0                                     # not compared: must not move the mean
    valid[2] = False
    curve = step_means(values, valid, levels)
    assert curve["mean"][0] == pytest.approx(values[0].mean())
    assert curve["mean"][1] == pytest.approx(values[1, 200:].mean())
    assert 0 < curve["ci95_low"][0] < curve["mean"][0] < curve["ci95_high"][0]
    assert math.isnan(curve["mean"][2]) and math.isnan(curve["ci95_low"][2])


def test_paired_comparison_per_horizon_and_infinite_psnr_left_out():
    rng = np.random.default_rng(0)
    k, w = 6, 200
    baseline = rng.normal(size=(k, w))
    # lower is better: the simulator is clearly better at k = 1..3, clearly worse at k = 5, equal at 4 and 6
    simulated = baseline + np.array([-1, -1, -1, 0, 1, 0])[:, None] + 0.01 * rng.normal(size=(k, w))
    simulated[[3, 5]] = baseline[[3, 5]] + 0.5 * rng.normal(size=(2, w))
    mask = np.ones((k, w), bool)
    mask[:, :50] = np.arange(k)[:, None] < 2                        # a quarter of the windows end after 2 steps
    levels = np.arange(w)                                           # every window its own level
    verdict = compare(simulated, baseline, mask, higher_is_better=False, levels=levels)
    assert verdict["horizons_won"] == [1, 2, 3] and verdict["horizons_lost"] == [5]
    assert verdict["horizons_tied"] == [4, 6]
    assert verdict["advantage"]["windows"] == w and verdict["better"]
    flipped = compare(simulated, baseline, mask, higher_is_better=True, levels=levels)
    assert flipped["horizons_won"] == [5] and flipped["advantage"]["mean"] == -verdict["advantage"]["mean"]

    psnr = {"simulator": torch.full((2, 3), 20.0), "simulator_closed_loop": torch.full((2, 3), 18.0),
            "copy_last": torch.tensor([[math.inf, 30.0, 30.0], [10.0, 10.0, 10.0]])}
    headline, _ = summarise({"obs_psnr": psnr}, {"obs_psnr": torch.ones(2, 3, dtype=torch.bool)}, np.arange(3))
    result = headline["obs_psnr"]
    assert result["excluded_steps"] == 1 and result["mean"]["copy_last"] == pytest.approx(18.0)   # not 100 dB
    assert result["simulator_vs_copy_last"]["horizons_lost"] == [1]


def test_event_scores_reward_knowing_when_and_punish_crying_wolf():
    """One end per window at a random step. A simulator that puts its probability on the end's step beats the base
    rate on both scores; one that says 0.9 everywhere is "sure" at every end yet loses the Brier score; "never"
    (copy_last) loses at the event by construction, so only the Brier score compares it."""
    k, w = 24, 200
    rng = np.random.default_rng(0)
    real = torch.zeros(k, w)
    real[torch.from_numpy(rng.integers(k, size=w)), torch.arange(w)] = 1.0
    base = 1 / k
    informed = torch.where(real > 0, 0.6, 0.02)
    wolf = torch.full((k, w), 0.9)
    brier = {"simulator": (informed - real) ** 2, "simulator_closed_loop": (wolf - real) ** 2,
             "copy_last": real.clone(), "base_rate": (base - real) ** 2}
    at_event = {"simulator": informed, "simulator_closed_loop": wolf, "base_rate": torch.full((k, w), base)}
    masks = {"done_brier": torch.ones(k, w, dtype=torch.bool), "done_prob_at_event": real.bool()}
    headline, _ = summarise({"done_brier": brier, "done_prob_at_event": at_event}, masks, np.arange(w) % 20)
    assert headline["done_brier"]["simulator_vs_base_rate"]["better"]
    assert headline["done_prob_at_event"]["simulator_vs_base_rate"]["better"]
    assert headline["done_prob_at_event"]["simulator_closed_loop_vs_base_rate"]["better"]      # sure at every end...
    assert headline["done_brier"]["simulator_closed_loop_vs_base_rate"]["advantage"]["ci95_high"] < 0   # ...and wrong
    assert "simulator_vs_copy_last" not in headline["done_prob_at_event"]


def test_window_event_shares_match_a_calibrated_simulator_and_fail_one_that_never_ends():
    from rlinterp.simulator.prediction import window_event_shares
    rng = np.random.default_rng(0)
    windows = 300
    real = torch.from_numpy((rng.random(windows) < 0.3).astype(np.float32))
    events = {"real": {"done": real}, "simulator": {"done": torch.full((windows,), 0.3)},
              "simulator_closed_loop": {"done": torch.zeros(windows)}}
    shares = window_event_shares(events, np.arange(windows) % 30)
    assert shares["simulator"]["done"]["matches"]
    never = shares["simulator_closed_loop"]["done"]
    assert not never["matches"] and never["difference"]["ci95_high"] < 0 and never["simulated"]["mean"] == 0


def test_windows_of_one_level_are_not_independent_draws():
    """Eight levels, 25 windows each, the advantage set by the level: an interval over levels is several times wider
    than one that takes each window for its own level, and only the former keeps 0 inside."""
    rng = np.random.default_rng(1)
    levels = np.repeat(np.arange(8), 25)
    offsets = np.array([1.2, -0.9, 0.8, 0.9, -0.4, 1.1, -0.6, 0.5])                  # mean 0.325, sd 0.8
    simulated = np.tile(offsets[levels] + 0.05 * rng.normal(size=200), (3, 1))
    mask = np.ones((3, 200), bool)
    by_level = compare(simulated, np.zeros((3, 200)), mask, True, levels)["advantage"]
    by_window = compare(simulated, np.zeros((3, 200)), mask, True, np.arange(200))["advantage"]
    width = lambda i: i["ci95_high"] - i["ci95_low"]  # noqa: E731
    assert by_level["levels"] == 8 and width(by_level) > 3 * width(by_window)
    assert by_level["ci95_low"] < 0 < by_level["ci95_high"] and by_window["ci95_low"] > 0


@pytest.mark.parametrize("events", ["sampled", "likeliest"])
def test_nothing_counts_after_a_samples_predicted_end(tmp_path, params, events):
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(params.simulator, agent).eval()
    with torch.no_grad():
        simulator.done_head[-1].bias.fill_(10.0)                        # an end predicted at every step
        simulator.reward_head[-1].bias.copy_(torch.tensor([0.0, 50.0]))    # the coin's reward, likeliest by far
    steps = 6
    with RolloutWriter(tmp_path / "samples.zarr", sample_fields(simulator), {"stage": "test"}, 8, 16) as writer:
        record_samples(simulator, agent, writer, prior_samples=2, informed_episodes=np.array([], dtype=int),
                       real=None, steps=steps, batch_size=2, seed=0, modal=True, actions="sampled", events=events,
                       progress=False)
    samples = RolloutStore(tmp_path / "samples.zarr")
    for index in range(2):
        sample = samples.episode(index)
        assert list(sample["done"]) == [True] + [False] * (steps - 1) and (sample["done_prob"] > 0.99).all()
        assert sample["reward"][0] == 10 and (sample["reward"][1:] == 0).all()       # a reward the game gives
        assert samples.episode_info()["return"][index] == pytest.approx(sample["reward"][0])


def test_prior_events_count_the_samples_the_stage_stores(tmp_path, params):
    """prior_events simulates prior samples as record_samples does: with its seed and batch size, the same ones."""
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(params.simulator, agent).eval()
    with torch.no_grad():
        simulator.done_head[-1].bias.fill_(-2.0)                          # an end at ~12% of steps
        simulator.reward_head[-1].bias.copy_(torch.tensor([2.0, -2.0]))     # the coin at ~2%
    options = dict(steps=6, batch_size=4, seed=3, modal=True, actions="sampled", events="sampled")
    with RolloutWriter(tmp_path / "samples.zarr", sample_fields(simulator), {"stage": "test"}, 8, 16) as writer:
        record_samples(simulator, agent, writer, prior_samples=10, informed_episodes=np.array([], dtype=int),
                       real=None, progress=False, **options)
    stored = stored_events(RolloutStore(tmp_path / "samples.zarr"), np.arange(10))
    drawn = prior_events(simulator, agent, 10, progress=False, **options)
    assert 0 < stored["end"].sum() < 10                               # the count is not trivially all or none
    for name in ("reward", "end"):
        np.testing.assert_array_equal(drawn[name], stored[name])
    other = prior_events(simulator, agent, 10, progress=False, **{**options, "seed": 4})
    assert not all((other[name] == stored[name]).all() for name in ("reward", "end"))


def test_informed_samples_start_from_the_encoded_episode(tmp_path, params):
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(params.simulator, agent).eval()
    real = numbered_store(tmp_path / "real.zarr", agent.hidden_size, [10, 12, 9, 15])
    episodes = np.array([1, 3])
    steps, c = 5, params.simulator.num_init_steps
    with RolloutWriter(tmp_path / "samples.zarr", sample_fields(simulator), {"stage": "test"}, 8, 16) as writer:
        record_samples(simulator, agent, writer, prior_samples=3, informed_episodes=episodes, real=real, steps=steps,
                       batch_size=2, seed=0, modal=True, actions="sampled", events="sampled", progress=False)
    samples = RolloutStore(tmp_path / "samples.zarr")
    assert samples.num_episodes == 5 and (samples.episode_ends == np.arange(1, 6) * steps).all()
    info = samples.episode_info()
    assert list(info["level_seed"][:3]) == [-1, -1, -1]
    for index, episode in zip((3, 4), episodes):
        sample = samples.episode(index)
        start = real.episode_starts[episode]
        assert (sample["source_step"] == start).all() and info["level_seed"][index] == real["level_seed"][start]
        window = window_from_batch({k: torch.from_numpy(v) for k, v in
                                    real.windows(np.array([start]), c, WINDOW_FIELDS).items()}, simulator)
        with torch.no_grad():
            latent = simulator.encode(window.context, sample=False).value
            first = simulator.rollout(latent, agent, 1, agent_hx=window.hx_prev, action_prev=window.action_prev,
                                      modal=True)
        np.testing.assert_allclose(sample["latent"][0], latent[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(sample["hx"][0], first.agent_hx[0, 0].numpy(), atol=1e-5)
        # the real events an informed sample's step 0 stands for (the store's reward numbers its steps)
        assert window.reward[0, 0] == start + informed_first_transition(simulator)
        assert (sample["latent"] == sample["latent"][0]).all()
    prior = samples.episode(0)
    assert np.linalg.norm(prior["latent"][0]) == pytest.approx(1.0, abs=1e-5)      # sphere prior
    assert (prior["source_step"] == -1).all() and prior["obs"].shape == (steps, 64, 64, 3)


def test_drawn_events_keep_the_heads_probabilities_and_a_reward_comes_with_an_end(params):
    from rlinterp.simulator.sample import draw_events
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(params.simulator, agent)              # reward support [0, 10]
    draws = 200_000
    p_reward, p_end = torch.tensor([0.02, 0.3]), torch.tensor([0.03, 0.6])
    reward_logits = torch.stack([(1 - p_reward).log(), p_reward.log()], -1).expand(draws, 2, 2)
    done_logit = torch.logit(p_end).expand(draws, 2)
    reward, done = draw_events(simulator, reward_logits, done_logit, "sampled", torch.Generator().manual_seed(0))
    np.testing.assert_allclose((reward == 10).float().mean(0), p_reward, atol=0.005)
    np.testing.assert_allclose(done.float().mean(0), p_end, atol=0.005)
    assert done[reward == 10].all()                  # the coin ends the episode: no reward without an end
    reward, done = draw_events(simulator, reward_logits, done_logit, "likeliest", torch.Generator())
    assert (reward == 0).all() and done[:, 1].all() and not done[:, 0].any()   # only an event with even odds


def test_reward_targets_are_two_hot_and_the_expected_reward_stays_in_the_games_range(params):
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(params.simulator, agent)              # reward support [0, 10]
    rewards = torch.tensor([0.0, 10.0, 2.5, 7.0])
    target = simulator.reward_target(rewards)
    np.testing.assert_allclose(target, [[1, 0], [0, 1], [0.75, 0.25], [0.3, 0.7]], atol=1e-6)
    np.testing.assert_allclose(target @ simulator.reward_support, rewards, atol=1e-6)   # expectation = the reward
    logits = torch.randn(1000, 2) * 20                                # whatever the head says, as the old one's
    expected = logits.softmax(-1) @ simulator.reward_support          # regression could say -3.5 per sample
    assert expected.min() >= 0 and expected.max() <= 10
    assert set(simulator.likeliest_reward(logits).tolist()) == {0.0, 10.0}


def test_real_windows_reward_and_end_as_counted_by_hand_and_a_simulator_that_never_rewards_fails(tmp_path):
    from rlinterp.simulator.sample import real_window_events, share_comparison
    from rlinterp.store import real_rollout_fields
    lengths, rewarded = [10, 30, 5] * 10, [True, False, True] * 10     # the coin at the last step, or a timeout
    with RolloutWriter(tmp_path / "real.zarr", real_rollout_fields(4, 15), {"stage": "test"}, 8, 16) as writer:
        for e, (length, coin) in enumerate(zip(lengths, rewarded)):
            reward = np.zeros(length, np.float32)
            reward[-1] = 10.0 * coin
            writer.add_episode({"obs": np.zeros((length, 64, 64, 3), np.uint8), "hx": np.zeros((length, 4), np.float32),
                                "logits": np.zeros((length, 15), np.float32), "value": np.zeros(length, np.float32),
                                "action": np.zeros(length, np.int32), "reward": reward,
                                "done": np.arange(length) == length - 1, "level_seed": np.full(length, e)},
                               **{"return": float(reward.sum()), "level_seed": e, "completed": coin})
    real = RolloutStore(tmp_path / "real.zarr")
    first, groups = real_window_events(real, np.arange(3), 8, first_step=0)
    assert first["reward"].tolist() == [False, False, True] and first["end"].tolist() == [False, False, True]
    later, groups = real_window_events(real, np.arange(3), 8, first_step=2)    # steps 2-9: the 10-step episode's coin
    assert later["reward"].tolist() == [True, False, True] and later["end"].tolist() == [True, False, True]
    anywhere, groups = real_window_events(real, np.arange(3), 8, first_step=None)
    assert anywhere["reward"].sum() == 8 + 0 + 5 and anywhere["end"].sum() == 8 + 8 + 5 and len(groups) == 45
    anywhere, groups = real_window_events(real, np.arange(30), 8, first_step=None)     # enough episodes to resample
    never = share_comparison(np.zeros(200, bool), anywhere["reward"], groups, 500, seed=0)
    assert not never["matches"] and never["difference"]["ci95_high"] < 0
    alike = np.random.default_rng(0).random(200) < anywhere["reward"].mean()
    assert share_comparison(alike, anywhere["reward"], groups, 500, seed=0)["matches"]
