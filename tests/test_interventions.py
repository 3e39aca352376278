"""Hidden-state interventions: projector algebra, swaps, no-op specs, and effects on a synthetic agent."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rlinterp.agent.checkpoint import build_agent
from rlinterp.analysis.decompose import fit_basis
from rlinterp.interventions import HookedIntervention, Intervention


@pytest.fixture(scope="module")
def basis():
    rng = np.random.default_rng(0)
    sources = np.stack([rng.exponential(1, 4000) - 1, rng.laplace(0, 1, 4000), rng.uniform(-2, 2, 4000),
                        rng.exponential(1, 4000) - 1], axis=1)
    x = sources @ rng.standard_normal((4, 8)) + 0.05 * rng.standard_normal((4000, 8))
    fitted, _ = fit_basis(x, 8, 4, 2, seed=0, outlier_sigma=0)
    return fitted


@pytest.mark.parametrize("kind", ["ica", "pca"])
def test_collapse_is_a_projector_that_removes_its_direction(basis, kind):
    edit = Intervention.from_spec(basis, kind, [1], [None])
    P = edit.collapse_matrix(1)
    assert torch.allclose(P @ edit.directions[1], torch.zeros(8), atol=1e-5)           # P v = 0
    assert torch.allclose(P @ P, P, atol=1e-5)                                         # P^2 = P
    hx = torch.randn(5, 8)
    edited = edit(hx)
    activations = (edited - edit.mean) @ edit.readout.T
    assert activations[:, 1].abs().max() < 1e-4                                         # component 1 is gone
    others = (hx - edit.mean) @ edit.readout.T
    assert torch.allclose(activations[:, [0, 2, 3]], others[:, [0, 2, 3]], atol=1e-4)   # nothing else moves
    assert torch.allclose(edited - edit.mean, (hx - edit.mean) @ P.T, atol=1e-5)


def test_swap_exchanges_activations_and_is_its_own_inverse(basis):
    edit = Intervention.from_spec(basis, "ica", [0], [2])
    hx = torch.randn(6, 8)
    once = edit(hx)
    s, s1 = (hx - edit.mean) @ edit.readout.T, (once - edit.mean) @ edit.readout.T
    assert torch.allclose(s1[:, 0], s[:, 2], atol=1e-4) and torch.allclose(s1[:, 2], s[:, 0], atol=1e-4)
    assert torch.allclose(edit(once), hx, atol=1e-4)


def test_empty_spec_is_bit_identical_and_bad_specs_are_refused(basis):
    hx = torch.randn(3, 8)
    assert torch.equal(Intervention.from_spec(basis, "ica", [], [])(hx), hx)
    with pytest.raises(ValueError, match="equal length"):
        Intervention.from_spec(basis, "ica", [0, 1], [None])
    with pytest.raises(ValueError, match="expected 0 <= k < 4"):
        Intervention.from_spec(basis, "ica", [7], [None])


def test_collapsing_a_used_direction_changes_actions_and_an_unused_one_does_not(params):
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval()
    h = agent.hidden_size
    directions = torch.linalg.qr(torch.randn(h, h))[0].T[:2]          # two orthonormal directions in hx space
    edit_used = Intervention(directions, directions, torch.zeros(h), ((0, None),))
    edit_unused = Intervention(directions, directions, torch.zeros(h), ((1, None),))
    with torch.no_grad():                                             # the policy reads only direction 0
        agent.policy_head.weight.copy_(torch.randn(agent.num_actions, 1) * 5 * directions[0])
    obs = torch.randint(0, 256, (64, 64, 64, 3), dtype=torch.uint8)
    first = torch.zeros(64, dtype=torch.bool)
    state = torch.randn(64, h, generator=torch.Generator().manual_seed(1)) * 3     # varied incoming states

    def actions(edit=None):
        with torch.no_grad():
            if edit is None:
                return agent.step(obs, state, first).logits.argmax(-1)
            with HookedIntervention(agent, edit):
                return agent.step(obs, state, first).logits.argmax(-1)

    control = actions()
    assert len(control.unique()) > 1
    assert (actions(edit_used) != control).float().mean() > 0.3
    assert torch.equal(actions(edit_unused), control)
