"""Dynamics: Jacobians of a known linear recurrent system, cross-correlation against numpy, environment path,
labelled heat maps."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from rlinterp import plots
from rlinterp.hooks import HookPoint
from rlinterp.dynamics import consistency, cross_correlation, jacobians, lagged


class LinearSystem:
    """Agent state h_{t+1} = A h_t + B e_t; environment e_{t+1} = E e_t + F a_t; action a_t = G h_t.
    With env_grads=False the action is detached before it enters the environment (as the simulator does)."""

    def __init__(self, size=3, env=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5  # noqa: E731
        self.A, self.B, self.E, self.F, self.G = rand(size, size), rand(size, env), rand(env, env), rand(env, 2), \
            rand(2, size)
        self.agent = nn.Module()
        self.agent.hook_hx = HookPoint()

    def rollout(self, latents, agent, steps, modal, env_grads):
        h = agent.hook_hx(latents)
        e = torch.zeros(len(latents), self.E.shape[0], dtype=latents.dtype)
        states = [h]
        for _ in range(steps - 1):
            a = h @ self.G.T
            a = a if env_grads else a.detach()
            h, e = h @ self.A.T + e @ self.B.T, e @ self.E.T + a @ self.F.T
            h = agent.hook_hx(h)
            states.append(h)
        return types.SimpleNamespace(agent_hx=torch.stack(states))


def test_jacobians_of_a_linear_recurrence_are_powers_of_its_matrix():
    system = LinearSystem()
    eye = torch.eye(3, dtype=torch.float64)
    latents = torch.randn(4, 3, dtype=torch.float64)
    jac = jacobians(system, system.agent, latents, 6, 5, eye, eye, torch.zeros(3, dtype=torch.float64),
                    env_grads=False)
    per_lag = lagged(jac.mean(0).numpy(), 5)
    for k in range(6):
        np.testing.assert_allclose(per_lag[k], torch.linalg.matrix_power(system.A, k).T.numpy(), atol=1e-10)


def test_environment_path_changes_the_jacobian_exactly_where_it_contributes():
    system = LinearSystem(seed=1)
    eye = torch.eye(3, dtype=torch.float64)
    latents = torch.randn(2, 3, dtype=torch.float64)
    args = (system, system.agent, latents, 5, 4, eye, eye, torch.zeros(3, dtype=torch.float64))
    without = lagged(jacobians(*args, env_grads=False).mean(0).numpy(), 4)
    with_env = lagged(jacobians(*args, env_grads=True).mean(0).numpy(), 4)
    np.testing.assert_allclose(with_env[:2], without[:2], atol=1e-12)       # h -> a -> e -> h takes two steps
    env_path = (system.B @ system.F @ system.G).numpy()                      # d h_{t+2} / d h_t through the env
    np.testing.assert_allclose(with_env[2] - without[2], env_path.T, atol=1e-10)
    assert np.abs(with_env[3] - without[3]).max() > 1e-6


def test_cross_correlation_matches_numpy_on_known_signals():
    rng = np.random.default_rng(0)
    steps = 50
    base = rng.standard_normal(steps + 3)
    s = np.stack([base[3:], base[:-3], rng.standard_normal(steps)], axis=1)[None]   # s_1(t + 3) = s_0(t)
    m = cross_correlation(s, 5)
    z = (s[0] - s[0].mean(0)) / s[0].std(0)
    for k in range(6):
        for i in range(3):
            for j in range(3):
                expected = np.correlate(z[:, j], z[:, i], "full")[steps - 1 + k] / (steps - k)
                assert abs(m[k, i, j] - expected) < 1e-12
    assert m[3, 0, 1] > 0.9 and abs(m[3, 0, 2]) < 0.4


def test_consistency_counts_sign_agreement_against_a_shuffled_baseline():
    rng = np.random.default_rng(0)
    xcorr = rng.standard_normal((3, 6, 6))
    agreeing = xcorr * rng.uniform(0.5, 2, xcorr.shape)
    result = consistency(xcorr, agreeing, seed=0)
    assert [r["lag"] for r in result] == [1, 2]
    assert all(r["sign_agreement"] == 1.0 and r["p_value"] < 0.01 for r in result)
    assert all(r["sign_agreement_shuffled"] < 0.8 for r in result)
    assert consistency(xcorr, -xcorr, seed=0)[0]["sign_agreement"] == 0.0


def test_agreement_on_the_diagonal_alone_is_not_consistency():
    """Positive diagonals (each component's persistence) in both matrices, unrelated entries elsewhere: the old
    all-entries share rose above chance; the off-diagonal test stays a null."""
    rng = np.random.default_rng(1)
    c = 8
    xcorr, jac = rng.standard_normal((3, c, c)), rng.standard_normal((3, c, c))
    xcorr[:, np.arange(c), np.arange(c)] = jac[:, np.arange(c), np.arange(c)] = 5.0
    result = consistency(xcorr, jac, seed=0)
    off = ~np.eye(c, dtype=bool)
    assert all(r["sign_agreement"] == pytest.approx((np.sign(xcorr[r["lag"]][off]) ==
                                                      np.sign(jac[r["lag"]][off])).mean()) for r in result)
    assert all(r["p_value"] > 0.05 for r in result)


def test_heat_maps_label_the_ics_the_lag_and_the_matrix_kind(tmp_path):
    stack = np.random.default_rng(0).standard_normal((3, 4, 4))
    fig = plots.matrix_grid({"cross-correlation": stack, "Jacobian through agent only": stack / 10},
                            tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 5000
    panels, colour_bars = fig.axes[:6], fig.axes[6:]
    assert len(colour_bars) == 2
    assert [ax.get_title() for ax in panels[:4]] == [f"cross-correlation\nlag k = {k}" for k in range(3)] + \
        ["Jacobian through agent only\nlag k = 0"]
    for ax in panels:                                       # IC labels on the outer panels, ticks on all
        assert list(ax.get_xticks()) == list(ax.get_yticks()) == [0, 1, 2, 3]
        low, high = ax.images[0].get_clim()
        assert low == -high
    for ax in (panels[0], panels[3]):
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2", "3"]
    for ax in panels[3:]:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
    assert "source" in panels[0].get_ylabel() and "target" in panels[3].get_xlabel()
    assert panels[3].images[0].get_clim() == panels[5].images[0].get_clim()         # shared along the row
    assert panels[0].images[0].get_clim()[1] == pytest.approx(np.abs(stack[1:]).max())
