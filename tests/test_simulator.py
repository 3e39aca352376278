"""The simulator: window alignment, gradients through agent and simulated environment, frozen agent, losses."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from rlinterp.agent.checkpoint import CheckpointError, build_agent, load_checkpoint, save_checkpoint
from rlinterp.errors import InputError
from rlinterp.simulator import model as sim_model
from rlinterp.simulator.data import WINDOW_FIELDS, WindowStream, simulator_split, split_episodes, valid_starts
from rlinterp.hooks import attached
from rlinterp.simulator.evaluate import open_loop
from rlinterp.simulator.losses import (Window, balanced_kl, categorical_kl, uniformity_loss,
                                       PREDICTION_TERMS, window_from_batch, window_loss)
from rlinterp.simulator.checkpoint import FORMAT as SIMULATOR_FORMAT, build_simulator, load_simulator
from rlinterp.simulator.sample import SampleStart, record_samples, sample_fields, sample_starts
from rlinterp.simulator.train import OPTIMIZER_FORMAT, learning_rate, optimizer_state_path, train_simulator
from rlinterp.saliency import replay
from rlinterp.store import RolloutStore, RolloutWriter, real_rollout_fields


def numbered_store(path, hidden_size: int, lengths: list[int], levels: list[int] | None = None) -> RolloutStore:
    """A store whose every per-step field encodes the global step index s, so alignment can be read back; each
    episode's level is its first step unless `levels` are given."""
    fields = real_rollout_fields(hidden_size, 15)
    with RolloutWriter(path, fields, {"stage": "test", "agent_sha256": "numbered"}, chunk_steps=8,
                       shard_steps=16) as writer:
        start = 0
        for index, length in enumerate(lengths):
            level = start if levels is None else levels[index]
            s = np.arange(start, start + length)
            writer.add_episode({
                "obs": np.broadcast_to((s % 251).astype(np.uint8)[:, None, None, None], (length, 64, 64, 3)).copy(),
                "hx": np.repeat(s[:, None].astype(np.float32), hidden_size, 1),
                "logits": np.zeros((length, 15), np.float32), "value": s.astype(np.float32),
                "action": (s % 15).astype(np.int32), "reward": s.astype(np.float32),
                "done": np.arange(length) == length - 1, "level_seed": np.full(length, level)},
                **{"return": float(s.sum()), "length": length, "level_seed": level, "completed": True})
            start += length
    return RolloutStore(path)


@pytest.fixture
def setup(params):
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(params.simulator, agent)
    return params, agent, simulator


def test_window_alignment_follows_the_store_conventions(tmp_path, setup):
    params, agent, simulator = setup
    c, k = params.simulator.num_init_steps, params.simulator.num_sim_steps
    store = numbered_store(tmp_path / "n.zarr", agent.hidden_size, [20, 5, 30])
    length = c + k - 1
    starts = np.array([0, 21, 26])          # inside episode 0; episode 1 cut after 2 simulated steps; episode 2
    batch = {n: torch.from_numpy(x) for n, x in store.windows(starts, length, WINDOW_FIELDS).items()}
    window = window_from_batch(batch, simulator)
    for b, s0 in enumerate(starts):
        pixel = window.context[b, :, 0, 0, 0] * 255
        np.testing.assert_allclose(pixel.numpy(), (s0 + np.arange(c)) % 251, atol=1e-3)
        assert window.hx_prev[b, 0] == s0 + c - 2 and window.action_prev[b] == (s0 + c - 2) % 15
        end = store.episode_ends[np.searchsorted(store.episode_ends, s0, side="right")]
        for i in range(k):
            s = s0 + c - 1 + i                                     # simulated step i is window step c - 1 + i
            real = s < end
            assert window.mask[i, b] == real and window.label_mask[i, b] == (s - 1 < end)
            if real:
                assert window.frames[i, b, 0, 0, 0] * 255 == pytest.approx(s % 251, abs=1e-3)
                assert window.hx[i, b, 0] == s and window.value[i, b] == s and window.action[i, b] == s % 15
            else:
                assert window.frames[i, b].abs().sum() == 0
            if s - 1 < end:                                        # the transition into step i, made by action[s-1]
                assert window.reward[i, b] == s - 1 and window.done[i, b] == (s - 1 == end - 1)
            else:
                assert window.reward[i, b] == 0 and window.done[i, b] == 0
        assert window.done[:, b].sum() == (end - (s0 + c - 1) < k)    # the episode's end is labelled once in view


def test_streamed_windows_stay_in_their_training_episodes(tmp_path, setup):
    params, agent, simulator = setup
    store = numbered_store(tmp_path / "n.zarr", agent.hidden_size, [12, 3, 40, 25, 9, 31])
    split = split_episodes(store, 0.3, 0.2, seed=1)
    train, heldout = split.train, np.concatenate([split.validation, split.test])
    assert len(split.test) == 2 and len(split.validation) == 1 and not set(train) & set(heldout)
    c, length = 3, 6
    stream = iter(WindowStream(str(store.path), train, c, length, batch_size=4, seed=0, block_steps=16))
    allowed = set(valid_starts(store, train, c))
    for _ in range(20):
        batch = stream.__next__()
        first = batch["hx"][:, 0, 0].numpy().astype(int)
        assert set(first) <= allowed                                 # never a held-out or too-short start
        reference = store.windows(first, length, ["hx", "reward", "done"])
        for name in ("hx", "reward", "done", "mask"):
            np.testing.assert_array_equal(batch[name].numpy(), reference[name])


def test_episodes_are_split_by_level_into_training_validation_and_test(tmp_path, setup):
    params, agent, simulator = setup
    levels = [7, 3, 7, 9, 3, 11, 7, 5, 9, 5, 13, 2]                # repeated levels, as recording many episodes gives
    store = numbered_store(tmp_path / "n.zarr", agent.hidden_size, [5] * len(levels), levels)
    split = split_episodes(store, 0.3, 0.3, seed=0)
    assert sorted([*split.train, *split.validation, *split.test]) == list(range(len(levels)))
    played = np.array(levels)
    sets = [set(played[split.of(name)]) for name in ("train", "validation", "test")]
    assert all(sets) and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])   # no level shared
    assert len(sets[1]) == len(sets[2]) == 2                          # 30% of the 7 distinct levels each
    for validation_fraction in (0.15, 0.45):                          # choosing on more or fewer validation levels
        np.testing.assert_array_equal(split_episodes(store, 0.3, validation_fraction, seed=0).test, split.test)
    for test_fraction in (0.15, 0.45):                                # and measuring on more or fewer test levels
        np.testing.assert_array_equal(split_episodes(store, test_fraction, 0.3, seed=0).validation,
                                      split.validation)
    with pytest.raises(InputError, match="play 2 level"):             # test + validation + training need 3
        split_episodes(numbered_store(tmp_path / "two.zarr", agent.hidden_size, [5, 5], [4, 6]), 0.5, 0.5, seed=0)


def test_the_simulators_split_follows_split_seed_not_the_training_seed(tmp_path, setup):
    """Another training draw (`seed`) is measured on the same levels; `split_seed` moves them."""
    params, agent, simulator = setup
    levels = list(range(20))
    store = numbered_store(tmp_path / "n.zarr", agent.hidden_size, [5] * len(levels), levels)
    config = dataclasses.replace(params.train_simulator, test_fraction=0.3, validation_fraction=0.2, seed=0,
                                 split_seed=0)
    split = simulator_split(store, config)
    for other_draw in (1, 2):
        again = simulator_split(store, dataclasses.replace(config, seed=other_draw))
        assert all(np.array_equal(split.of(name), again.of(name)) for name in ("train", "validation", "test"))
    moved = simulator_split(store, dataclasses.replace(config, split_seed=1))
    assert not np.array_equal(split.test, moved.test)


def test_window_batches_cover_every_training_window_and_mix_distant_blocks(tmp_path, setup):
    params, agent, simulator = setup
    store = numbered_store(tmp_path / "n.zarr", agent.hidden_size, [12, 30, 40, 25, 9, 31, 50, 60, 45, 30])
    episodes, c, length, batch_size = np.arange(store.num_episodes), 3, 6, 4
    starts = valid_starts(store, episodes, c)
    stream = iter(WindowStream(str(store.path), episodes, c, length, batch_size, seed=0, block_steps=16,
                               pool_blocks=4))
    batches = [next(stream) for _ in range(2 * len(starts) // batch_size)]          # two epochs' worth
    served = np.concatenate([b["start"].numpy() for b in batches])
    np.testing.assert_array_equal(served, np.concatenate([b["hx"][:, 0, 0].numpy() for b in batches]))
    counts = np.bincount(served, minlength=store.num_steps)[starts]
    assert counts.min() >= 1 and counts.max() <= 3                # every window served, none over-served
    assert set(served) <= set(starts)
    spans = np.array([np.ptp(b["start"].numpy()) for b in batches])
    assert (spans >= 16).mean() > 0.8                               # batches draw on several distant blocks


def random_window(params, agent, batch: int, k: int) -> Window:
    cfg = params.simulator
    size = 64 // cfg.image_pool
    return Window(context=torch.rand(batch, cfg.num_init_steps, 3, size, size),
                  frames=torch.rand(k, batch, 3, size, size), hx=torch.rand(k, batch, agent.hidden_size) - 0.5,
                  value=torch.rand(k, batch) * 10,
                  action=torch.randint(15, (k, batch)), reward=torch.zeros(k, batch), done=torch.zeros(k, batch),
                  mask=torch.ones(k, batch), label_mask=torch.ones(k, batch),
                  hx_prev=torch.zeros(batch, agent.hidden_size), action_prev=torch.zeros(batch, dtype=torch.long))


@pytest.mark.parametrize("closed", [False, True])
def test_open_loop_follows_the_recorded_actions_and_closed_loop_the_agents(setup, closed):
    params, agent, simulator = setup
    window = random_window(params, agent, batch=3, k=5)
    fed = []
    with torch.no_grad(), attached(simulator, action=lambda step, a: fed.append(a.argmax(-1))):
        rollout = open_loop(simulator, agent, window, closed=closed)
    expected = rollout.agent_action if closed else window.action
    assert torch.equal(torch.stack(fed), expected)
    assert not torch.equal(rollout.agent_action, window.action)      # the two drivers differ here, so it can fail


def test_sampled_closed_loop_actions_follow_the_agents_policy(setup):
    """With sample_actions the agent's first action is drawn from its policy (frequencies within 5 standard errors
    of its probabilities over 4000 copies of one start), and is what the rollout reports and feeds on; without,
    it is the most likely action."""
    params, agent, simulator = setup
    copies = 4000
    latent = simulator.prior_latent(1, torch.Generator().manual_seed(0)).expand(copies, -1)
    fed = []
    with torch.no_grad(), attached(simulator, action=lambda step, a: fed.append(a.argmax(-1))):
        sampled = simulator.rollout(latent, agent, 2, modal=True, sample_actions=True,
                                    generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.stack(fed), sampled.agent_action)
    probs = sampled.agent_logits[0, 0].softmax(-1)
    counts = torch.bincount(sampled.agent_action[0], minlength=len(probs)).double() / copies
    assert (counts - probs).abs().max() < 5 * (probs * (1 - probs) / copies).sqrt().max() + 1e-9
    assert (counts > 0).sum() > 1                                        # not the argmax alone, so it can fail
    with torch.no_grad():
        greedy = simulator.rollout(latent[:2], agent, 2, modal=True)
    assert torch.equal(greedy.agent_action, greedy.agent_logits.argmax(-1))


def test_replaying_a_sampled_rollouts_actions_reproduces_it_and_its_gradients(setup):
    """A stored sample is re-simulated by replaying its actions (`replay`): the same frames, and the same gradient
    of the last value with respect to the latent, actions included (straight-through the agent's probabilities),
    as the sampled rollout; a replay of recorded actions without it loses the gradient through the actions."""
    params, agent, simulator = setup
    k = params.simulator.num_sim_steps

    def run(**kwargs):
        latent = simulator.prior_latent(3, torch.Generator().manual_seed(0)).requires_grad_(True)
        rollout = simulator.rollout(latent, agent, k, modal=True, **kwargs)
        return rollout, torch.autograd.grad(rollout.agent_value[-1].sum(), latent)[0]
    sampled, grad = run(sample_actions=True, generator=torch.Generator().manual_seed(2))
    replayed, replay_grad = run(actions=sampled.agent_action, action_steps=k, replay=True)
    assert torch.equal(replayed.frames, sampled.frames)
    torch.testing.assert_close(replay_grad, grad)
    _, recorded_grad = run(actions=sampled.agent_action, action_steps=k, batched=False)
    assert not torch.allclose(recorded_grad, grad)


@pytest.mark.parametrize("mode", ["teacher_forced", "open_loop"])
def test_batching_over_time_agrees_with_stepping(setup, mode):
    """Where every action is recorded the decoder and the agent's CNN run once over all steps: the rollout, its
    gradients and every hook's calls are the stepped loop's."""
    params, agent, simulator = setup
    k = 5
    window = random_window(params, agent, batch=3, k=k)
    drive = ({"frames": window.frames, "imagine_from": k} if mode == "teacher_forced" else
             {"imagine_from": 0, "action_steps": k, "modal": True})
    runs = []
    for batched in (True, False):
        calls: list[tuple[str, int, float]] = []

        def log(name):
            return lambda step, x: calls.append((name, step, float(x.detach().sum())))
        latent = simulator.encode(window.context).value
        with attached(simulator, env_h=log("env_h"), frame=log("frame"), action=log("action")), \
                attached(agent, features=log("features"), hx=log("hx"), value=log("value")):
            out = simulator.rollout(latent, agent, k, actions=window.action, agent_hx=window.hx_prev,
                                    action_prev=window.action_prev, generator=torch.Generator().manual_seed(0),
                                    batched=batched, **drive)
        loss = (out.frames.square().sum() + out.agent_value.sum() + out.agent_hx.sum() + out.reward.sum()
                + out.done_logit.sum() + out.agent_features.sum())
        grads = torch.autograd.grad(loss, [q for q in simulator.parameters()], allow_unused=True)
        runs.append((out, grads, sorted(calls)))
    (batched, batched_grads, batched_calls), (stepped, stepped_grads, stepped_calls) = runs
    for name in ("frames", "reward_logits", "done_logit", "env_h", "env_z", "agent_features", "agent_hx",
                 "agent_logits", "agent_value", "agent_action", "prior_logits"):
        torch.testing.assert_close(getattr(batched, name), getattr(stepped, name), rtol=1e-5, atol=1e-5)
    for a, b in zip(batched_grads, stepped_grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert [c[:2] for c in batched_calls] == [c[:2] for c in stepped_calls]      # each point once per step
    assert len({c[0] for c in batched_calls}) == 6 and len(batched_calls) == 6 * k
    np.testing.assert_allclose([c[2] for c in batched_calls], [c[2] for c in stepped_calls], rtol=1e-4, atol=1e-4)


def test_training_with_a_bf16_agent_encoder_agrees_with_fp32(setup):
    """train_simulator runs the agent's CNN under bf16 autocast where the CPU has bf16 units: the objective and its
    gradient must be the fp32 ones up to bf16's rounding."""
    params, agent, simulator = setup
    window = random_window(params, agent, batch=4, k=5)
    config = dataclasses.replace(params.train_simulator, open_loop_weight=1.0, features_weight=1.0)
    results = []
    for dtype in (None, torch.bfloat16):
        agent.set_precision(dtype)
        torch.manual_seed(0)
        loss, _ = window_loss(simulator, agent, window, config, sample=False)
        grads = torch.autograd.grad(loss, list(simulator.parameters()), allow_unused=True)
        results.append((float(loss.detach()), torch.cat([g.flatten() for g in grads if g is not None])))
    agent.set_precision(None)
    (loss32, grad32), (loss16, grad16) = results
    assert loss16 != loss32 and loss16 == pytest.approx(loss32, rel=0.02)       # rounded, not another objective
    assert float(torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)) > 0.99


def test_the_open_loop_term_trains_what_prediction_quality_measures(setup):
    params, agent, simulator = setup
    window = random_window(params, agent, batch=3, k=6)
    config = dataclasses.replace(params.train_simulator, open_loop_weight=0.5, kl_weight=0.0, features_weight=0.3)
    torch.manual_seed(0)
    total, stats = window_loss(simulator, agent, window, config, sample=False)
    with torch.no_grad():
        measured = open_loop(simulator, agent, window)
        real = torch.stack([agent.encode_pixels(simulator.agent_pixels(frame)) for frame in window.frames])
    image = (0.5 * (measured.frames - window.frames).pow(2).sum((-3, -2, -1))).sum(0).mean()
    hx = (0.5 * (measured.agent_hx - window.hx).pow(2).sum(-1)).sum(0).mean()
    value = (0.5 * (measured.agent_value - window.value).pow(2)).sum(0).mean()
    features = (0.5 * (measured.agent_features - real).pow(2).sum(-1)).sum(0).mean()
    assert stats["open_loop_image"] == pytest.approx(float(image), rel=1e-5)
    assert stats["open_loop_hx"] == pytest.approx(float(hx), rel=1e-5)
    assert stats["open_loop_value"] == pytest.approx(float(value), rel=1e-5)
    assert stats["open_loop_features"] == pytest.approx(float(features), rel=1e-5) and float(features) > 0
    torch.manual_seed(0)
    total_off, stats_off = window_loss(simulator, agent, window, dataclasses.replace(config, open_loop_weight=0.0),
                                       sample=False)
    assert not any(name.startswith("open_loop") for name in stats_off)
    added = sum(getattr(config, f"{n}_weight") * stats[f"open_loop_{n}"] for n in PREDICTION_TERMS)
    assert float(total.detach()) == pytest.approx(float(total_off.detach()) + 0.5 * added, rel=1e-5)
    # without a KL term the prior learns only from the open-loop predictions
    prior_grads = []
    for loss in (total, total_off):
        simulator.zero_grad()
        loss.backward()
        prior_grads.append(sum(float(q.grad.abs().sum()) for q in simulator.prior.parameters() if q.grad is not None))
    assert prior_grads[0] > 0 and prior_grads[1] == 0


def test_shapes_through_a_full_window(setup):
    params, agent, simulator = setup
    cfg = params.simulator
    batch, k, size = 3, cfg.num_sim_steps, 64 // cfg.image_pool
    context = torch.rand(batch, cfg.num_init_steps, 3, size, size)
    latent = simulator.encode(context)
    assert latent.value.shape == (batch, cfg.bottleneck_size)
    assert torch.allclose(latent.value.norm(dim=-1), torch.ones(batch))       # sphere bottleneck
    out = simulator.rollout(latent.value, agent, k, frames=torch.rand(k, batch, 3, size, size),
                            actions=torch.randint(15, (k, batch)))
    assert out.frames.shape == (k, batch, 3, size, size) and out.frames.min() >= 0 and out.frames.max() <= 1
    assert out.agent_hx.shape == (k, batch, agent.hidden_size) and out.agent_logits.shape == (k, batch, 15)
    assert out.env_h.shape == (k, batch, cfg.deter_size)
    assert out.env_z.shape == (k, batch, cfg.stoch_groups * cfg.stoch_classes)
    assert out.env_z.sum(-1).allclose(torch.full((k, batch), float(cfg.stoch_groups)))   # one class per group
    assert out.post_logits.shape == out.prior_logits.shape == (k, batch, cfg.stoch_groups, cfg.stoch_classes)
    prior_only = simulator.rollout(simulator.prior_latent(batch), agent, k, modal=True)
    assert prior_only.post_logits is None and prior_only.imagined.all()


def test_value_gradient_reaches_the_latent_and_matches_finite_differences(setup, monkeypatch):
    params, agent, simulator = setup
    agent.double()
    simulator.double()
    k = params.simulator.num_sim_steps
    with torch.no_grad():                     # keep decoded frames inside [0, 1], where the clamp is inactive
        simulator.image_decoder.net[-1].weight.mul_(0.1)
    latent = simulator.prior_latent(2).double().requires_grad_(True)
    frames = simulator.rollout(latent, agent, k, modal=True).frames
    assert 0 < frames.min() and frames.max() < 1

    def last_value(z: torch.Tensor) -> torch.Tensor:
        return simulator.rollout(z, agent, k, modal=True).agent_value[-1].sum()

    last_value(latent).backward()
    assert torch.isfinite(latent.grad).all() and latent.grad.abs().sum() > 0
    # the straight-through one-hots make the forward pass piecewise constant in z; with their soft relaxation
    # the forward pass is smooth and autograd must agree with finite differences along a random direction
    monkeypatch.setattr(sim_model, "straight_through_onehot", lambda probs, index: probs)
    latent.grad = None
    last_value(latent).backward()
    direction = torch.randn_like(latent)
    eps = 1e-6
    with torch.no_grad():
        numeric = (last_value(latent + eps * direction) - last_value(latent - eps * direction)) / (2 * eps)
    analytic = (latent.grad * direction).sum()
    assert float(analytic) != 0
    assert float(analytic) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9)


def test_kl_is_zero_when_posterior_equals_prior():
    logits = torch.randn(5, 4, 8)
    assert categorical_kl(logits, logits).abs().max() < 1e-6
    assert balanced_kl(logits, logits.clone(), 0.8).abs().max() < 1e-6
    assert (categorical_kl(logits, torch.randn(5, 4, 8)) > 0).all()


def test_uniformity_prefers_spread_latents():
    spread = torch.nn.functional.normalize(torch.randn(64, 8), dim=-1)
    clumped = torch.nn.functional.normalize(torch.ones(64, 8) + 0.05 * torch.randn(64, 8), dim=-1)
    assert uniformity_loss(spread) < uniformity_loss(clumped) - 1


def test_the_fitted_prior_draws_latents_where_the_encoder_puts_windows(setup):
    """Encoded latents on a small patch of the sphere, as the trained encoder's are: the bottleneck's own prior
    draws land anywhere on the sphere, the fitted prior's next to the latents, with their mean."""
    _, _, simulator = setup                                                  # sphere bottleneck
    size = simulator.config.bottleneck_size
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(size, 2, generator=generator))[0]
    centre = torch.nn.functional.normalize(torch.randn(size, generator=generator), dim=0)
    latents = torch.nn.functional.normalize(centre + 0.3 * torch.randn(4000, 2, generator=generator) @ basis.T, dim=-1)

    def nearest_cosine(draws):
        return float((draws @ latents.T).max(1).values.mean())

    uniform = simulator.prior_latent(500, generator)
    simulator.fit_prior(latents)
    fitted = simulator.prior_latent(500, generator)
    torch.testing.assert_close(fitted.norm(dim=-1), torch.ones(500))
    assert nearest_cosine(fitted) > 0.99 > nearest_cosine(uniform) + 0.1
    torch.testing.assert_close(fitted.mean(0), latents.mean(0), atol=0.03, rtol=0)


def test_event_calibration_restores_the_rate_of_heads_that_under_predict(setup):
    """Events drawn at the probabilities of some logits, and heads that give those logits minus 2 (a third to a
    sixth of the rate): the fit finds the offset back, and the rate and the ranking with it."""
    _, _, simulator = setup                                                  # reward support (0, 10)
    generator = torch.Generator().manual_seed(0)
    true_logit = torch.randn(20000, generator=generator) * 2 - 4
    reward = torch.bernoulli(torch.sigmoid(true_logit), generator=generator)
    end = torch.bernoulli(torch.sigmoid(true_logit), generator=generator)
    raw_reward = torch.stack([torch.zeros_like(true_logit), true_logit - 2], -1)
    raw_done = true_logit - 2
    simulator.fit_event_calibration(raw_reward, simulator.reward_target(10 * reward), raw_done, end)
    (reward_scale, reward_offset), (done_scale, done_offset) = simulator.event_calibration.tolist()
    assert abs(reward_offset - 2) < 0.3 and abs(done_offset - 2) < 0.3 and abs(reward_scale - 1) < 0.1
    reward_prob = torch.sigmoid(reward_scale * raw_reward[:, 1] + reward_offset)
    done_prob = torch.sigmoid(done_scale * raw_done + done_offset)
    for prob, raw, real in ((reward_prob, raw_reward[:, 1], reward), (done_prob, raw_done, end)):
        assert abs(float(prob.mean() - real.mean())) < 0.005 < float(real.mean() - torch.sigmoid(raw).mean())


def test_event_calibration_moves_imagined_steps_only(setup):
    """Teacher-forced steps (the posterior sees the real frame) keep the heads' own logits; imagined steps get
    the calibrated ones; a reset (as training does before it resumes) restores the identity."""
    params, agent, simulator = setup
    window = random_window(params, agent, batch=3, k=5)
    latent = simulator.encode(window.context, sample=False).value
    simulator.event_calibration.copy_(torch.tensor([[1.5, 2.0], [0.5, -1.0]]))
    with torch.no_grad():
        rollout = simulator.rollout(latent, agent, 5, frames=window.frames, actions=window.action,
                                    agent_hx=window.hx_prev, action_prev=window.action_prev, imagine_from=2, modal=True)
        feature = torch.cat([rollout.env_h, rollout.env_z], -1)
        raw_reward, raw_done = simulator.reward_head(feature), simulator.done_head(feature).squeeze(-1)
    torch.testing.assert_close(rollout.reward_logits[:2], raw_reward[:2])
    torch.testing.assert_close(rollout.done_logit[:2], raw_done[:2])
    torch.testing.assert_close(rollout.reward_logits[2:], 1.5 * raw_reward[2:] + torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(rollout.done_logit[2:], 0.5 * raw_done[2:] - 1.0)
    simulator.reset_event_calibration()
    torch.testing.assert_close(simulator.event_calibration, sim_model.IDENTITY_CALIBRATION)


def test_training_leaves_the_agent_bit_identical_and_resumes(tmp_path, params, setup):
    _, agent, _ = setup
    store = numbered_store(tmp_path / "n.zarr", agent.hidden_size, [20, 15, 30, 25])
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    path = tmp_path / "sim.pt"
    config = dataclasses.replace(params.train_simulator, total_windows=8, checkpoint_every=1)
    with pytest.raises(InputError, match=r"rewards range from 0 to 89, outside simulator.reward_support \[0.0, 10"):
        train_simulator(params.simulator, config, store.path, agent, "numbered", path, progress=False)
    assert not path.exists()
    sim_config = dataclasses.replace(params.simulator, reward_support=(0.0, 50.0, 100.0))   # covers the store's
    simulator, summary = train_simulator(sim_config, config, store.path, agent, "numbered", path, progress=False)
    assert summary["batches"] == 2 and summary["resumed_from_windows"] == 0
    for name, value in agent.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in agent.parameters())
    state = load_checkpoint(path, fmt=SIMULATOR_FORMAT, producer="train_simulator")
    assert "optimizer" not in state and optimizer_state_path(path).name == "sim.optimizer.pt"
    assert optimizer_state_path(path).stat().st_size > path.stat().st_size     # Adam's two moments per weight
    more = dataclasses.replace(config, total_windows=12)
    _, summary = train_simulator(sim_config, more, store.path, agent, "numbered", path, progress=False)
    assert summary["resumed_from_windows"] == 8 and summary["batches"] == 3    # a larger total extends the run
    finished = path.read_bytes()
    _, summary = train_simulator(sim_config, more, store.path, agent, "numbered", path, progress=False)
    assert summary["resumed_from_windows"] == 12 and summary["batches"] == 3   # finished: refits only
    assert path.read_bytes() == finished       # and the same refit leaves the file alone (DVC reads bytes)
    other_store = numbered_store(tmp_path / "m.zarr", agent.hidden_size, [20, 15, 30, 26])
    for changed, where in ((dataclasses.replace(more, learning_rate=1e-4), store.path),   # other training params
                           (config, store.path),                                        # fewer windows than done
                           (more, other_store.path)):                                   # other data
        shutil.copy(path, tmp_path / "copy.pt")
        _, summary = train_simulator(sim_config, changed, where, agent, "numbered", tmp_path / "copy.pt",
                                     progress=False)
        assert summary["resumed_from_windows"] == 0, (changed, where)
    loaded, meta = load_simulator(path, agent, "numbered", expected=sim_config)
    assert meta["batch"] == 3 and sim_config.prior == "fitted"
    assert not torch.equal(loaded.prior_scale, torch.eye(sim_config.bottleneck_size))     # the fit is saved
    with pytest.raises(CheckpointError, match="trained with agent sha256 numbered"):
        load_simulator(path, agent, "another-agent")
    earlier = load_checkpoint(path, fmt=SIMULATOR_FORMAT, producer="train_simulator")
    del earlier["model"]["event_calibration"]                      # as written before the calibration existed
    save_checkpoint(tmp_path / "earlier.pt", {k: v for k, v in earlier.items() if k not in ("format", "sha256")},
                    fmt=SIMULATOR_FORMAT)
    with pytest.raises(CheckpointError, match=r"missing here: \['event_calibration'\].*re-run train_simulator"):
        load_simulator(tmp_path / "earlier.pt", agent, "numbered")
    with pytest.raises(CheckpointError, match="recorded with agent sha256 numbered"):
        train_simulator(sim_config, more, store.path, agent, "another-agent", tmp_path / "x.pt",
                        progress=False)


def test_a_resumed_training_run_equals_an_uninterrupted_one(tmp_path, params, setup, capsys):
    """Killed after a checkpoint and resumed, or finished and extended, training ends with the very weights an
    uninterrupted run ends with: the same windows in the same order, the same latent noise and Adam state. Without
    its optimiser state (a fresh clone) it continues from the weights with fresh moments: the same length of run,
    other weights."""
    _, agent, _ = setup
    store = numbered_store(tmp_path / "n.zarr", agent.hidden_size, [20, 15, 30, 25])
    sim_config = dataclasses.replace(params.simulator, reward_support=(0.0, 100.0))
    config = dataclasses.replace(params.train_simulator, total_windows=16, batch_size=4, checkpoint_every=2,
                                 log_every=1)
    whole, _ = train_simulator(sim_config, config, store.path, agent, "numbered", tmp_path / "whole.pt",
                               progress=False)

    def killed_after_batch_2(windows: int, stats: dict) -> None:
        if windows > 2 * config.batch_size:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_simulator(sim_config, config, store.path, agent, "numbered", tmp_path / "cut.pt", progress=False,
                        log=killed_after_batch_2)
    resumed, summary = train_simulator(sim_config, config, store.path, agent, "numbered", tmp_path / "cut.pt",
                                       progress=False)
    assert summary["resumed_from_windows"] == 8
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    half = dataclasses.replace(config, total_windows=8)
    train_simulator(sim_config, half, store.path, agent, "numbered", tmp_path / "extended.pt", progress=False)
    shutil.copy(tmp_path / "extended.pt", tmp_path / "bare.pt")          # the checkpoint alone, as git holds it
    extended, summary = train_simulator(sim_config, config, store.path, agent, "numbered", tmp_path / "extended.pt",
                                        progress=False)
    assert summary["resumed_from_windows"] == 8
    for name, value in whole.state_dict().items():
        assert torch.equal(value, extended.state_dict()[name]), name
    capsys.readouterr()
    bare, summary = train_simulator(sim_config, config, store.path, agent, "numbered", tmp_path / "bare.pt",
                                    progress=False)
    assert summary["resumed_from_windows"] == 8 and summary["batches"] == 4
    assert "continuing from its weights with fresh Adam moments" in capsys.readouterr().out
    assert any(not torch.equal(a, b) for a, b in zip(whole.parameters(), bare.parameters()))


def test_the_learning_rate_halves_every_halflife_of_windows_trained(tmp_path, params, setup):
    _, agent, _ = setup
    store = numbered_store(tmp_path / "n.zarr", agent.hidden_size, [20, 15, 30, 25])
    sim_config = dataclasses.replace(params.simulator, reward_support=(0.0, 100.0))
    config = dataclasses.replace(params.train_simulator, total_windows=12, batch_size=4, learning_rate=1e-3,
                                 learning_rate_halflife=4)
    assert learning_rate(config, 0) == 1e-3 and learning_rate(config, 8) == pytest.approx(2.5e-4)
    assert learning_rate(dataclasses.replace(config, learning_rate_halflife=0), 10**6) == 1e-3
    train_simulator(sim_config, config, store.path, agent, "numbered", tmp_path / "sim.pt", progress=False)
    saved = load_checkpoint(optimizer_state_path(tmp_path / "sim.pt"), fmt=OPTIMIZER_FORMAT)
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2.5e-4)     # the last batch's, at 8 windows


def test_window_stream_skips_to_the_batches_it_would_have_served(tmp_path, params, setup):
    _, agent, _ = setup
    store = numbered_store(tmp_path / "n.zarr", agent.hidden_size, [40, 35, 60, 45, 50])
    episodes = np.arange(5)
    full = iter(WindowStream(str(store.path), episodes, 3, 6, 4, seed=3, block_steps=32, pool_blocks=2))
    expected = [next(full) for _ in range(12)]
    later = iter(WindowStream(str(store.path), episodes, 3, 6, 4, seed=3, block_steps=32, pool_blocks=2, skip=7))
    for batch in expected[7:]:
        got = next(later)
        for name in batch:
            assert torch.equal(got[name], batch[name]), name


def test_overfitting_one_window_cuts_the_image_loss_tenfold(params, setup):
    _, agent, simulator = setup
    cfg = params.simulator
    k, size = cfg.num_sim_steps, 64 // cfg.image_pool
    torch.manual_seed(1)
    # a structured window: a bright square that moves one pixel per step over a dark background
    frames = torch.full((cfg.num_init_steps + k - 1, 3, size, size), 0.1)
    for t in range(len(frames)):
        frames[t, :, 4:9, t:t + 5] = 0.9
    obs = (frames.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    obs = obs.repeat_interleave(cfg.image_pool, 1).repeat_interleave(cfg.image_pool, 2)[None]
    length = obs.shape[1]
    batch = {"obs": obs, "hx": torch.zeros(1, length, agent.hidden_size), "value": torch.zeros(1, length),
             "action": torch.zeros(1, length, dtype=torch.int32), "reward": torch.zeros(1, length),
             "done": torch.zeros(1, length, dtype=torch.bool), "mask": torch.ones(1, length, dtype=torch.bool)}
    window = window_from_batch(batch, simulator)
    optimizer = torch.optim.Adam(simulator.parameters(), lr=3e-3)
    teacher_forced = dataclasses.replace(params.train_simulator, open_loop_weight=0.0)
    losses = []
    for _ in range(150):
        loss, stats = window_loss(simulator, agent, window, teacher_forced)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(stats["image"])
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_a_stored_sample_replays_from_its_own_start(tmp_path, setup):
    """Re-simulating stored samples from `sample_starts` reproduces their stored trajectories: an informed sample
    starts from the real agent state it was generated with, which the converters' prediction would not give."""
    params, agent, simulator = setup
    simulator.eval()
    real = numbered_store(tmp_path / "real.zarr", agent.hidden_size, [12, 15, 10])
    with RolloutWriter(tmp_path / "samples.zarr", sample_fields(simulator), {"stage": "test"}, chunk_steps=8,
                       shard_steps=16) as writer:
        record_samples(simulator, agent, writer, prior_samples=2, informed_episodes=np.array([1, 2]), real=real,
                       steps=5, batch_size=2, seed=0, modal=True, actions="sampled", events="sampled",
                       progress=False)
    samples = RolloutStore(tmp_path / "samples.zarr")
    starts = sample_starts(simulator, samples, real, [0, 1, 2, 3], "cpu")
    assert [start.agent_hx is None for start in starts] == [True, True, False, False]
    for index, start in enumerate(starts):
        replayed = replay(simulator, agent, start, 5).agent_hx[:, 0].numpy()
        # samples were made two at a time and replay goes one at a time: matmul kernels that block by batch size
        # differ in the last float bits (1.2e-5 on entries of 28 on one CPU), far inside the 1e-3 gap below
        np.testing.assert_allclose(replayed, samples.episode(index)["hx"], rtol=1e-5, atol=1e-5)
    from_converters = replay(simulator, agent, SampleStart(starts[2].latent), 5).agent_hx[:, 0].numpy()
    assert np.abs(from_converters - samples.episode(2)["hx"]).max() > 1e-3
