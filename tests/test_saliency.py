"""Saliency: analytic gradients on a linear toy, finite differences on the real model, SmoothGrad limits."""
from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from rlinterp.agent.checkpoint import build_agent
from rlinterp.agent.model import HookPoint
from rlinterp.saliency import (combined_latent, direction_target, parse_ids, saliency, smoothgrad_latents,
                               value_target)
from rlinterp.simulator import model as sim_model
from rlinterp.simulator.model import Rollout
from rlinterp.simulator.train import build_simulator


class LinearToy:
    """frame_i = A_i z ; hx_i = hook_hx(B frame_i) ; value_i = v . hx_i ; env_h_i = frame_i (the same leaves)."""

    def __init__(self, steps=4, latent=5, pixels=3, hidden=2):
        g = torch.Generator().manual_seed(0)
        self.A = torch.randn(steps, pixels, latent, generator=g)
        self.B = torch.randn(hidden, pixels, generator=g)
        self.v = torch.randn(hidden, generator=g)
        self.config = types.SimpleNamespace(bottleneck="vae")
        self.agent = nn.Module()
        self.agent.hook_hx = HookPoint()

    def rollout(self, latent, agent, steps, modal, env_grads, hooks):
        frames, hxs, values, envs = [], [], [], []
        for i in range(steps):
            frame = latent @ self.A[i].T
            env = hooks["env_h"](i, frame)
            frame = hooks["frame"](i, frame)
            hx = agent.hook_hx(frame @ self.B.T)
            frames.append(frame)
            envs.append(env)
            hxs.append(hx)
            values.append(hx @ self.v)
        stack = torch.stack
        return Rollout(frames=stack(frames), reward=None, done_logit=None, env_h=stack(envs), env_z=None,
                       prior_logits=None, post_logits=None, imagined=None, env_update=None, agent_hx=stack(hxs),
                       agent_logits=None, agent_value=stack(values), agent_action=None)


def test_linear_toy_saliency_equals_the_analytic_gradient():
    toy = LinearToy()
    z = torch.randn(5)
    maps = saliency(toy, toy.agent, z, 4, {"value": value_target}, [2], noise_samples=1, noise_scale=0.0)
    m = maps[("value", 2)]
    expected_frame = toy.B.T @ toy.v                    # d value_2 / d frame_2; earlier/later frames do not matter
    assert torch.allclose(m.frames[2], expected_frame, atol=1e-6)
    assert m.frames[[0, 1, 3]].abs().max() == 0
    assert torch.allclose(m.agent_hx[2], toy.v, atol=1e-6) and m.agent_hx[3].abs().max() == 0
    assert torch.allclose(m.latent, toy.A[2].T @ expected_frame, atol=1e-5)


def test_smoothgrad_averages_over_copies_and_zero_noise_is_the_plain_gradient():
    toy = LinearToy()
    z = torch.randn(5)
    plain = saliency(toy, toy.agent, z, 4, {"value": value_target}, [3], noise_samples=1, noise_scale=0.0)
    smooth = saliency(toy, toy.agent, z, 4, {"value": value_target}, [3], noise_samples=9, noise_scale=0.0)
    assert torch.allclose(plain[("value", 3)].latent, smooth[("value", 3)].latent, atol=1e-5)
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
    maps = saliency(simulator, agent, z, steps, {"ic": target}, [steps - 1], noise_samples=1, noise_scale=0.0)
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
    z = simulator.prior_latent(1)[0]
    steps = params.simulator.num_sim_steps
    with_env = saliency(simulator, agent, z, steps, {"value": value_target}, [steps - 1], noise_samples=3)
    without = saliency(simulator, agent, z, steps, {"value": value_target}, [steps - 1], noise_samples=3,
                       env_grads=False)
    a, b = with_env[("value", steps - 1)], without[("value", steps - 1)]
    assert not torch.allclose(a.env_h[:-1], b.env_h[:-1])                     # the action path is cut
    assert b.frames[:-1].abs().sum() > 0                                       # memory still carries gradient


def test_combine_mode_and_id_parsing():
    latents = torch.nn.functional.normalize(torch.randn(4, 6), dim=1)
    combined = combined_latent(latents, sphere=True)
    assert torch.allclose(combined, latents.mean(0) / latents.mean(0).norm())
    assert parse_ids(["0 to 4"]) == [0, 1, 2, 3] and parse_ids([3, 7, "10 to 12"]) == [3, 7, 10, 11]
