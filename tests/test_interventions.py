"""Hidden-state interventions: projector algebra, swaps, no-op specs, effects on a synthetic agent, and edited
real-environment runs recorded and compared with their control."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rlinterp.agent.checkpoint import build_agent
from rlinterp.analysis.decompose import fit_basis
from rlinterp.envs import NUM_ACTIONS
from rlinterp.interventions import intervene, Intervention
from rlinterp.record import record_rollouts
from rlinterp.store import RolloutStore, RolloutWriter, real_rollout_fields
from rlinterp.validation import compare_real, episode_ic_means, level_order


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


def test_collapsing_a_used_direction_changes_policy_and_value_and_an_unused_one_does_not(params):
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval()
    h = agent.hidden_size
    directions = torch.linalg.qr(torch.randn(h, h))[0].T[:2]          # two orthonormal directions in hx space
    edit_used = Intervention(directions, directions, torch.zeros(h), ((0, None),))
    edit_unused = Intervention(directions, directions, torch.zeros(h), ((1, None),))
    with torch.no_grad():                                             # both heads read only direction 0
        agent.policy_head.weight.copy_(torch.randn(agent.num_actions, 1) * 5 * directions[0])
        agent.value_head.weight.copy_(5 * directions[0][None])
    obs = torch.randint(0, 256, (64, 64, 64, 3), dtype=torch.uint8)
    first = torch.zeros(64, dtype=torch.bool)
    state = torch.randn(64, h, generator=torch.Generator().manual_seed(1)) * 3     # varied incoming states

    def step(edit=None):
        with torch.no_grad(), intervene(agent, edit or dataclasses.replace(edit_used, pairs=())):
            out = agent.step(obs, state, first)
        return out.logits.softmax(-1), out.value

    def total_variation(p, q):
        return 0.5 * (p - q).abs().sum(-1).mean()

    control_policy, control_value = step()
    assert len(control_policy.argmax(-1).unique()) > 1
    used_policy, used_value = step(edit_used)
    assert total_variation(used_policy, control_policy) > 0.3
    assert (used_value - control_value).abs().mean() > 0.5
    unused_policy, unused_value = step(edit_unused)
    assert total_variation(unused_policy, control_policy) < 1e-5
    assert torch.allclose(unused_value, control_value, atol=1e-5)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """One agent on the same seeds: unhooked, hooked with an empty edit, and with IC 0 collapsed."""
    from rlinterp.config import params_from_dict
    from tests.conftest import tiny_params_dict
    params = params_from_dict(tiny_params_dict())
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval()
    folder = tmp_path_factory.mktemp("validation")

    def record(name, edit=None):
        fields = real_rollout_fields(params.agent.hidden_size, NUM_ACTIONS)
        with RolloutWriter(folder / f"{name}.zarr", fields, {"stage": "test"}, 32, 128) as writer:
            if edit is None:
                record_rollouts(params.env, agent, writer, 3, 1, seed=5, progress=False)
            else:
                with intervene(agent, edit):
                    record_rollouts(params.env, agent, writer, 3, 1, seed=5, progress=False)
        return RolloutStore(folder / f"{name}.zarr")

    unhooked = record("unhooked")
    basis, _ = fit_basis(np.asarray(unhooked["hx"][:]), 8, 4, 2, seed=0, outlier_sigma=0)
    collapse = Intervention.from_spec(basis, "ica", [0], [None])
    return basis, unhooked, record("control", dataclasses.replace(collapse, pairs=())), record("edited", collapse)


def test_an_empty_edit_records_bit_identical_rollouts(real_runs):
    _, unhooked, control, _ = real_runs
    assert control.fields == unhooked.fields and control.num_steps == unhooked.num_steps
    for field in unhooked.fields:
        np.testing.assert_array_equal(control[field][:], unhooked[field][:], err_msg=field)
    for name, values in unhooked.episode_info().items():
        np.testing.assert_array_equal(control.episode_info()[name], values, err_msg=name)


def test_real_comparison_reads_the_recorded_runs(real_runs):
    basis, unhooked, control, edited = real_runs
    assert np.abs(basis.ica(np.asarray(edited["hx"][:]))[:, 0]).max() < 1e-4     # the agent acted on IC 0 = 0
    report = compare_real(edited, control, basis, samples=200, seed=0)
    shift = report["ic_activation_shift"]
    assert len(shift) == 4
    control_means, control_abs_means = episode_ic_means(control, basis, level_order(control))
    assert shift[0]["difference"] == pytest.approx(-control_means[:, 0].mean(), abs=1e-4)
    assert report["ic_abs_activation_shift"][0]["difference"] == pytest.approx(-control_abs_means[:, 0].mean(),
                                                                          abs=1e-4)
    assert all(s["ci95_low"] <= s["difference"] <= s["ci95_high"] for s in shift)
    info = control.episode_info()
    assert report["return"]["control"] == pytest.approx(info["return"].mean())
    assert report["length"]["control"] == pytest.approx(info["length"].mean())
    assert sum(report["end_causes"]["edited"].values()) == pytest.approx(1.0)
    same = compare_real(control, unhooked, basis, samples=200, seed=0)
    assert same["return"]["difference"] == 0 and same["return"]["p_value"] == 1
    assert same["action_distribution"]["total_variation"] == 0
    assert all(s["difference"] == 0 for s in same["ic_activation_shift"] + same["ic_abs_activation_shift"])


def synthetic_run(path, basis, lengths, level_seeds, sources):
    """A store whose hx reads back, through `basis`, as the given (steps, C) sources of each episode."""
    hidden = basis.ica_unmixing.shape[1]
    fields = real_rollout_fields(hidden, NUM_ACTIONS, obs_shape=(4, 4, 3))
    with RolloutWriter(path, fields, {"stage": "test"}, 32, 128) as writer:
        for length, level_seed, s in zip(lengths, level_seeds, sources):
            hx = np.zeros((length, hidden), dtype=np.float32)
            hx[:, :s.shape[1]] = s
            steps = {name: np.zeros((length, *spec.shape), spec.dtype) for name, spec in fields.items()}
            writer.add_episode({**steps, "hx": hx, "level_seed": np.full(length, level_seed)},
                               **{"return": 0.0, "level_seed": level_seed, "completed": False})
    return RolloutStore(path)


def test_a_collapse_shows_in_the_mean_magnitude_of_its_ic_and_not_in_its_mean(basis, tmp_path):
    """IC 0 held at 0 (its mean) in the edited run; every other IC drawn afresh from the control's distribution.
    The edited run lists its episodes in another order, as runs finish levels in their own order."""
    rng = np.random.default_rng(0)
    axes = dataclasses.replace(basis, mean=np.zeros(8), ica_unmixing=np.eye(4, 8))    # IC c = hx[:, c]
    seeds = np.arange(24)

    def sources():
        lengths = rng.integers(20, 60, len(seeds))
        return lengths, [rng.laplace(0, 1, (n, 4)) for n in lengths]

    lengths, control_sources = sources()
    control = synthetic_run(tmp_path / "control.zarr", axes, lengths, seeds, control_sources)
    lengths, edited_sources = sources()
    for s in edited_sources:
        s[:, 0] = 0
    edited = synthetic_run(tmp_path / "edited.zarr", axes, lengths[::-1], seeds[::-1], edited_sources[::-1])
    report = compare_real(edited, control, axes, samples=1000, seed=0)
    mean_shift, abs_shift = report["ic_activation_shift"], report["ic_abs_activation_shift"]
    assert abs_shift[0]["difference"] < -0.5 and abs_shift[0]["ci95_high"] < 0 and abs_shift[0]["p_value"] < 0.05
    assert mean_shift[0]["p_value"] > 0.05 and mean_shift[0]["ci95_low"] < 0 < mean_shift[0]["ci95_high"]
    assert all(s["p_value"] > 0.05 for s in abs_shift[1:])
