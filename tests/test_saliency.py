"""Saliency: analytic gradients on a linear toy, finite differences on the real model, SmoothGrad limits."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from rlinterp import plots
from rlinterp.agent.checkpoint import build_agent
from rlinterp.hooks import HookPoint
from rlinterp.config import ConfigError, params_from_dict
from rlinterp.errors import InputError
from rlinterp.saliency import (action_target, blur, combined_start, direction_target, greedy_action_target,
                               cascade, parse_ids, randomisation_check, randomised, saliency, smoothgrad_latents,
                               value_target)
from rlinterp.plots import signed_unit_maps
from rlinterp.saliency_store import KINDS, MODES, SaliencyStore
from rlinterp.simulator import model as sim_model
from rlinterp.simulator.model import Rollout
from rlinterp.simulator.checkpoint import build_simulator
from rlinterp.simulator.sample import SampleStart


class LinearToy(nn.Module):
    """frame_i = A_i z ; hx_i = hook_hx(B frame_i) ; value_i = v . hx_i ; env_h_i = frame_i (the same leaves)."""

    def __init__(self, steps=4, latent=5, pixels=3, hidden=2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = torch.randn(steps, pixels, latent, generator=g)
        self.B = torch.randn(hidden, pixels, generator=g)
        self.v = torch.randn(hidden, generator=g)
        self.config = types.SimpleNamespace(bottleneck="vae")
        self.agent = nn.Module()
        self.agent.hook_hx = HookPoint()
        self.hook_env_h, self.hook_frame = HookPoint(), HookPoint()

    def rollout(self, latent, agent, steps, modal, env_grads):
        frames, hxs, values, envs = [], [], [], []
        for i in range(steps):
            frame = latent @ self.A[i].T
            env = self.hook_env_h(frame)
            frame = self.hook_frame(frame)
            hx = agent.hook_hx(frame @ self.B.T)
            frames.append(frame)
            envs.append(env)
            hxs.append(hx)
            values.append(hx @ self.v)
        stack = torch.stack
        return Rollout(frames=stack(frames), reward=None, reward_logits=None, done_logit=None, env_h=stack(envs),
                       env_z=None, prior_logits=None, post_logits=None, imagined=None, env_update=None,
                       agent_features=None, agent_hx=stack(hxs), agent_logits=None, agent_value=stack(values),
                       agent_action=None)


def test_linear_toy_saliency_equals_the_analytic_gradient():
    toy = LinearToy()
    z = torch.randn(5)
    maps = saliency(toy, toy.agent, SampleStart(z), 4, {"value": value_target}, [2], noise_samples=1, noise_scale=0.0)
    m = maps[("value", 2)]
    expected_frame = toy.B.T @ toy.v                    # d value_2 / d frame_2; earlier/later frames do not matter
    assert torch.allclose(m.frames[2], expected_frame, atol=1e-6)
    assert m.frames[[0, 1, 3]].abs().max() == 0
    assert torch.allclose(m.agent_hx[2], toy.v, atol=1e-6) and m.agent_hx[3].abs().max() == 0
    assert torch.allclose(m.latent, toy.A[2].T @ expected_frame, atol=1e-5)


def test_smoothgrad_averages_over_copies_and_zero_noise_is_the_plain_gradient():
    toy = LinearToy()
    z = torch.randn(5)
    plain = saliency(toy, toy.agent, SampleStart(z), 4, {"value": value_target}, [3], noise_samples=1, noise_scale=0.0)
    smooth = saliency(toy, toy.agent, SampleStart(z), 4, {"value": value_target}, [3], noise_samples=9, noise_scale=0.0)
    for kind in ("frames", "agent_hx", "env_h", "latent"):
        assert torch.allclose(getattr(plain[("value", 3)], kind), getattr(smooth[("value", 3)], kind), atol=1e-5)
    batch = smoothgrad_latents(z, 9, 0.5, sphere=True, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(batch[0], z / z.norm()) and torch.allclose(batch.norm(dim=1), torch.ones(9))
    assert (batch[1:] - batch[0]).norm(dim=1).min() > 0


def test_real_model_gradient_matches_finite_differences(params, monkeypatch):
    torch.manual_seed(0)
    agent = build_agent(params.agent).double().eval().requires_grad_(False)
    simulator = build_simulator(params.simulator, agent).double().eval()
    with torch.no_grad():
        simulator.image_decoder.net[-1].weight.mul_(0.1)      # keep frames inside [0, 1]: the clamp is inactive
    monkeypatch.setattr(sim_model, "straight_through_onehot", lambda probs, index: probs)   # smooth forward
    steps = params.simulator.num_sim_steps
    z = torch.nn.functional.normalize(torch.randn(params.simulator.bottleneck_size, dtype=torch.float64), dim=0)
    unmixing = torch.randn(agent.hidden_size, dtype=torch.float64).numpy()
    target = direction_target(unmixing, torch.zeros(agent.hidden_size).numpy())
    maps = saliency(simulator, agent, SampleStart(z), steps, {"ic": target}, [steps - 1], noise_samples=1,
                    noise_scale=0.0)
    grad = maps[("ic", steps - 1)].latent

    def f(latent):
        with torch.no_grad():
            rollout = simulator.rollout(latent[None], agent, steps, modal=True)
            return float(target(rollout, steps - 1)[0])

    direction = torch.randn_like(z)
    eps = 1e-6
    numeric = (f(z + eps * direction) - f(z - eps * direction)) / (2 * eps)
    assert float(grad @ direction) == pytest.approx(numeric, rel=1e-4, abs=1e-10)
    assert maps[("ic", steps - 1)].frames[:steps - 1].abs().sum() > 0          # earlier frames matter


def test_without_env_grads_earlier_frames_act_only_through_memory(params):
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(params.simulator, agent).eval()
    with torch.no_grad():
        agent.policy_head.weight.mul_(100)   # at init (policy gain 0.01) the action path is faint: make it plain
    z = simulator.prior_latent(1)[0]
    steps = params.simulator.num_sim_steps
    with_env = saliency(simulator, agent, SampleStart(z), steps, {"value": value_target}, [steps - 1], noise_samples=3)
    without = saliency(simulator, agent, SampleStart(z), steps, {"value": value_target}, [steps - 1], noise_samples=3,
                       env_grads=False)
    a, b = with_env[("value", steps - 1)], without[("value", steps - 1)]
    assert (a.env_h[:-1] - b.env_h[:-1]).norm() > 1e-5 * a.env_h[:-1].norm()   # the action path is cut (40x this)
    assert b.frames[:-1].abs().sum() > 0                                       # memory still carries gradient


def test_combine_mode_and_id_parsing():
    latents = torch.nn.functional.normalize(torch.randn(4, 6), dim=1)
    combined = combined_start([SampleStart(latent) for latent in latents], sphere=True).latent
    assert torch.allclose(combined, latents.mean(0) / latents.mean(0).norm())
    assert parse_ids(["0 to 4"], 12, "s") == [0, 1, 2, 3] and parse_ids([3, 7, "10 to 12"], 12, "s") == [3, 7, 10, 11]
    with pytest.raises(InputError, match=r"expected ids in \[0, 12\) \(the samples in data/s.zarr\), got \[12\]"):
        parse_ids(["10 to 13"], 12, "data/s.zarr")


def tiny_models(params):
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval().requires_grad_(False)
    simulator = build_simulator(params.simulator, agent).eval()
    return agent, simulator


def test_the_cascade_reinitialises_the_top_groups_only(params):
    agent, _ = tiny_models(params)
    groups = [name for name, _ in cascade(agent)]
    assert groups == ["heads", "gru", "fc", "conv_stage_1", "conv_stage_0"]         # output first
    two = randomised(agent, 2, seed=3)
    changed = {name for name, p in two.named_parameters() if not torch.equal(p, dict(agent.named_parameters())[name])}
    assert changed == {name for name, _ in agent.named_parameters() if name.split(".")[0] in ("policy_head",
                                                                                               "value_head", "gru")}
    assert all(torch.equal(p, q) for p, q in zip(randomised(agent, 0, 3).parameters(), agent.parameters()))


def test_the_randomisation_check_fails_for_an_agent_that_learnt_nothing(params):
    """An untrained agent's maps are no more its own than a re-initialised copy's: its correlation with the copies
    is no lower than theirs with each other, so the check must not pass; the report covers every cascade step."""
    agent, simulator = tiny_models(params)
    starts = [SampleStart(z) for z in simulator.prior_latent(4, generator=torch.Generator().manual_seed(2))]
    steps, t = params.simulator.num_sim_steps, params.simulator.num_sim_steps - 1
    report = randomisation_check(simulator, agent, {"value": value_target}, starts, steps, [t], seed=5,
                                 noise_samples=1, noise_scale=0.0)
    value = report["targets"]["value"]
    assert len(value["trained_vs_randomised"]) == len(report["layers"]) == 5 and value["difference"]["samples"] == 4
    assert not value["passes"] and not report["passes"]
    assert -1 <= value["randomised_vs_randomised"]["mean"] <= 1


def test_frame_noise_changes_the_maps_and_zero_frame_noise_is_the_plain_result(params):
    agent, simulator = tiny_models(params)
    z = simulator.prior_latent(1, generator=torch.Generator().manual_seed(1))[0]
    steps = params.simulator.num_sim_steps
    targets = {"value": value_target, "action": greedy_action_target}

    def run(frame_noise_scale):
        return saliency(simulator, agent, SampleStart(z), steps, targets, [steps - 1], noise_samples=3,
                        noise_scale=0.01, frame_noise_scale=frame_noise_scale,
                        generator=torch.Generator().manual_seed(0))

    plain = saliency(simulator, agent, SampleStart(z), steps, targets, [steps - 1], noise_samples=3, noise_scale=0.01,
                     generator=torch.Generator().manual_seed(0))
    off, noisy, again = run(0.0), run(0.05), run(0.05)
    for key in plain:
        for kind in ("frames", "agent_hx", "env_h", "latent"):
            assert torch.equal(getattr(off[key], kind), getattr(plain[key], kind))
            assert torch.equal(getattr(noisy[key], kind), getattr(again[key], kind))     # deterministic per seed
            assert torch.isfinite(getattr(noisy[key], kind)).all()
        assert not torch.allclose(noisy[key].frames, plain[key].frames)


def test_each_action_target_is_its_log_probability_and_the_greedy_one_matches_its_action(params):
    agent, simulator = tiny_models(params)
    z = simulator.prior_latent(1, generator=torch.Generator().manual_seed(2))[0]
    steps = params.simulator.num_sim_steps
    with torch.no_grad():
        rollout = simulator.rollout(z[None], agent, steps, modal=True)
    t = steps - 1
    greedy = int(rollout.agent_action[t, 0])
    assert torch.allclose(action_target(greedy)(rollout, t), greedy_action_target(rollout, t))
    other = (greedy + 1) % agent.num_actions
    targets = {"greedy": greedy_action_target, "chosen": action_target(greedy), "other": action_target(other)}
    maps = saliency(simulator, agent, SampleStart(z), steps, targets, [t], noise_samples=1, noise_scale=0.0)
    assert torch.equal(maps[("greedy", t)].frames, maps[("chosen", t)].frames)
    assert not torch.allclose(maps[("other", t)].frames, maps[("chosen", t)].frames)


def test_combine_mode_is_the_saliency_at_the_mean_latent_not_the_mean_of_maps(params):
    agent, simulator = tiny_models(params)
    latents = simulator.prior_latent(3, generator=torch.Generator().manual_seed(3))
    steps = params.simulator.num_sim_steps
    t = steps - 1

    def maps(latent):
        return saliency(simulator, agent, SampleStart(latent), steps, {"value": value_target}, [t], noise_samples=1,
                        noise_scale=0.0)[("value", t)]

    combined = maps(combined_start([SampleStart(latent) for latent in latents], sphere=True).latent)
    at_mean = maps(latents.mean(0) / latents.mean(0).norm())
    assert torch.allclose(combined.frames, at_mean.frames) and torch.allclose(combined.latent, at_mean.latent)
    mean_of_maps = torch.stack([maps(latent).frames for latent in latents]).mean(0)
    assert not torch.allclose(combined.frames, mean_of_maps)


@pytest.mark.parametrize("key, value, expected", [
    ("frame_noise_scale", -0.1, "saliency.frame_noise_scale = -0.1: expected a number >= 0 and <= 1"),
    ("frame_noise_scale", 1.5, "saliency.frame_noise_scale = 1.5: expected a number >= 0 and <= 1"),
    ("actions", "some", "saliency.actions = 'some': expected a string one of greedy, all"),
    ("blur_kernel", 4, "saliency.blur_kernel = 4: expected an odd size"),
])
def test_saliency_params_out_of_range_are_rejected(params_dict, key, value, expected):
    params_dict["saliency"][key] = value
    with pytest.raises(ConfigError) as err:
        params_from_dict(params_dict)
    assert expected in str(err.value)


def test_blur_keeps_the_size_and_a_constant_map_even_at_the_borders():
    flat = torch.full((2, 16, 16), 3.0)
    blurred = blur(flat, 5, 1.0)
    assert blurred.shape == (2, 16, 16) and torch.allclose(blurred, flat)           # zero padding would darken edges
    point = torch.zeros(1, 9, 9)
    point[0, 4, 4] = 1
    assert blur(point, 3, 1.0)[0].argmax() == 4 * 9 + 4                             # not shifted
    with pytest.raises(ValueError, match="odd"):
        blur(flat, 4, 1.0)


def test_lookback_shares_per_sample_with_intervals_and_ics_against_random_directions(tmp_path):
    samples, steps, t = 5, 4, 2
    rng = np.random.default_rng(0)
    frames = {target: np.zeros((samples, 1, steps, 3, 2, 2)) for target in ("ic_0", "random_direction_0")}
    frames["ic_0"][:, :, :t] = rng.uniform(1, 2, (samples, 1, t, 3, 2, 2))            # all before t
    frames["ic_0"][:, :, t] = 1.0
    frames["random_direction_0"][:, :, t] = 1.0                                        # all at t
    shapes = {"agent_hx": (steps, 4), "env_h": (steps, 4), "latent": (4,)}
    maps = {f"{mode}/{target}/{kind}": (frames[target] if kind == "frames" else np.zeros((samples, 1, *shapes[kind])))
            for mode in MODES for target in frames for kind in KINDS}
    store = SaliencyStore(list(range(samples)), [t], list(frames), False, maps)
    share = store.share_before_t("with_env_grads", "ic_0")
    before = np.abs(frames["ic_0"][:, 0, :t]).sum((1, 2, 3, 4))
    np.testing.assert_allclose(share, before / (before + 12))
    report = store.lookback_report()["with_env_grads"]
    assert report["random_direction_0"]["mean"] == 0 and report["ic_0"]["samples"] == samples
    assert report["ic_minus_random_direction"]["ci95_low"] > 0.5
    store.first(2).save(tmp_path / "s.zarr")
    loaded = SaliencyStore.load(tmp_path / "s.zarr")
    assert loaded.samples == [0, 1] and loaded.get("with_env_grads", "ic_0", "frames").shape == (2, 1, steps, 3, 2, 2)


def test_saliency_strip_writes_a_png(tmp_path):
    frames = torch.rand(5, 3, 16, 16)
    magnitude = blur(torch.rand(5, 16, 16), 5, 1.0)
    plots.saliency_strip(frames, magnitude, tmp_path / "strip.png", "value")
    assert (tmp_path / "strip.png").stat().st_size > 2000


def test_signed_unit_maps_share_one_scale_over_the_steps_and_upsample_by_repetition():
    maps = np.array([[[2.0, -1.0], [0.0, 0.5]], [[-4.0, 1.0], [0.0, 0.0]]])
    unit = signed_unit_maps(maps, 4)
    assert unit.shape == (2, 4, 4) and unit.min() == -1 and unit.max() == 0.5
    np.testing.assert_array_equal(unit[0, :2, 2:], -0.25)                      # -1 / 4, as a 2 x 2 block
    np.testing.assert_array_equal(signed_unit_maps(np.zeros((1, 2, 2)), 4), np.zeros((1, 4, 4)))


def test_the_ics_lookback_against_random_directions_resamples_the_directions_too():
    """Eight random directions that differ from one another far more than samples do: an interval over samples
    alone would be ~20x too narrow for what another draw of directions gives."""
    from rlinterp.intervals import mean_interval
    from rlinterp.saliency_store import two_way_difference
    rng = np.random.default_rng(0)
    ics = rng.normal(0.5, 0.01, (4, 64))
    randoms = 0.4 + rng.normal(0, 0.2, (8, 1)) + rng.normal(0, 0.01, (8, 64))
    both = two_way_difference(ics, randoms)
    samples_only = mean_interval(ics.mean(0) - randoms.mean(0))
    width = lambda i: i["ci95_high"] - i["ci95_low"]  # noqa: E731
    assert both["mean"] == pytest.approx(samples_only["mean"]) and both["directions"] == 8
    assert width(both) > 5 * width(samples_only)
    assert both["ci95_low"] <= both["mean"] <= both["ci95_high"]
