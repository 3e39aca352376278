"""Hidden-state interventions: projector algebra, swaps, no-op specs, effects on a synthetic agent, and edited
real-environment runs recorded and compared with their control."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rlinterp.agent.checkpoint import build_agent
from rlinterp.analysis.decompose import data_like_directions, fit_basis
from rlinterp.envs import NUM_ACTIONS
from rlinterp.hooks import attached
from rlinterp.interventions import intervene, Intervention
from rlinterp.record import record_rollouts
from rlinterp.store import RolloutStore, RolloutWriter, real_rollout_fields
from rlinterp.validation import (PRIMARY, EditMonitor, EpisodeOutcomes, MatchedRandomEdit, change_outcome,
                                 null_test, paired_outcome, readout_values, real_outcomes,
                                 size_match)
from rlinterp.verdicts import family_p_values, holm, outcome_table, verdict


@pytest.fixture(scope="module")
def basis():
    rng = np.random.default_rng(0)
    sources = np.stack([rng.exponential(1, 4000) - 1, rng.laplace(0, 1, 4000), rng.uniform(-2, 2, 4000),
                        rng.exponential(1, 4000) - 1], axis=1)
    x = sources @ rng.standard_normal((4, 8)) + 0.05 * rng.standard_normal((4000, 8))
    fitted, _ = fit_basis(x, 8, 4, 2, seed=0, outlier_sigma=0)
    return fitted


@pytest.mark.parametrize("kind", ["ica", "pca"])
def test_collapse_removes_its_component_and_keeps_the_others(basis, kind):
    edit = Intervention.from_spec(basis, kind, [1], [None])
    hx = torch.randn(5, 8)
    edited = edit(hx)
    activations = (edited - edit.mean) @ edit.readout.T
    assert activations[:, 1].abs().max() < 1e-4                                         # component 1 is gone
    others = (hx - edit.mean) @ edit.readout.T
    assert torch.allclose(activations[:, [0, 2, 3]], others[:, [0, 2, 3]], atol=1e-4)   # nothing else moves
    # the projector I - d_1 u_1^T: hx moves only along the component's own direction
    assert torch.allclose(edited, hx - others[:, [1]] * edit.directions[1], atol=1e-5)


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


def test_matched_random_edits_move_hx_by_the_given_sizes_towards_the_mean_in_their_own_direction(basis):
    edit = Intervention.from_spec(basis, "ica", [0], [None])
    hx = torch.randn(32, 8) * 2
    sizes = [torch.rand(32) * 3 for _ in range(2)]
    nulls = [MatchedRandomEdit(u, edit.mean, sizes) for u in data_like_directions(basis, 3, seed=0)]
    for null in nulls:
        for size in (*sizes, torch.stack(sizes).mean(0)):                         # past the sequence: row means
            move = null(hx) - hx
            along = move @ null.direction
            before = (hx - edit.mean) @ null.direction
            assert torch.allclose(move.norm(dim=-1), along.abs(), atol=1e-5)           # along its own direction
            assert torch.allclose(along.abs(), size, atol=1e-5)                         # exactly as far, every row
            assert (torch.sign(along) == -torch.sign(before)).all()                    # towards the mean
    assert abs(float(nulls[0].direction @ nulls[1].direction)) < 0.999                 # each its own direction


def test_random_edits_are_matched_to_the_edits_own_trajectory_not_to_their_own_states(basis):
    """On its own states collapsing IC 0 moves hx little; on states far along IC 0 it would move them a lot. The
    null must replay the former, whatever states it meets."""
    edit = Intervention.from_spec(basis, "ica", [0], [None])
    own = EditMonitor(edit, edit.mean)
    quiet = edit.mean + 0.05 * torch.randn(200, 16, 8)                                # near the mean: small edits
    for hx in quiet:
        own(hx)
    u = data_like_directions(basis, 1, seed=0)[0]
    null = EditMonitor(MatchedRandomEdit(u, edit.mean, own.sizes), edit.mean)
    loud = edit.mean + 3 * edit.directions[0] + 0.05 * torch.randn(200, 16, 8)        # far along IC 0
    for hx in loud:
        null(hx)
    match = size_match(own, null)
    assert match["random_edit"] == pytest.approx(match["edit"], rel=1e-5) and match["edit"] > 0
    on_its_own_states = float(torch.stack([(edit(hx) - hx).norm(dim=-1) for hx in loud]).mean())
    assert on_its_own_states > 10 * match["edit"]                                      # what the old null replayed


def test_states_outside_the_unedited_ball_are_counted(basis):
    edit = Intervention.from_spec(basis, "ica", [0], [None])
    control = EditMonitor(None, edit.mean)
    hx = edit.mean + torch.randn(64, 8)
    assert control(hx) is hx                                                            # the control is the identity
    radius = control.largest_norm()
    push = EditMonitor(lambda h: h + torch.where(torch.arange(len(h))[:, None] < 16, 100.0, 0.0), edit.mean, radius)
    push(hx)
    assert push.off_manifold() == pytest.approx(0.25)
    unedited = EditMonitor(None, edit.mean, radius)
    unedited(hx)
    assert unedited.off_manifold() == 0                                                # its own states lie inside


def test_repeated_matched_random_edits_stay_bounded(basis):
    """Applied step after step, as in a rollout, the null edit cannot push the state away without end."""
    edit = Intervention.from_spec(basis, "ica", [0], [None])
    null = MatchedRandomEdit(data_like_directions(basis, 1, seed=1)[0], edit.mean, [torch.full((16,), 2.0)])
    hx = torch.randn(16, 8)
    for _ in range(500):
        hx = torch.tanh(null(hx)) * 0.5 + null(hx) * 0.5                              # a leaky, GRU-like carry
    assert torch.isfinite(hx).all() and hx.abs().max() < 50


def test_outcomes_read_from_a_store_equal_those_collected_while_playing(real_runs):
    from rlinterp.config import params_from_dict
    from tests.conftest import tiny_params_dict
    params = params_from_dict(tiny_params_dict())
    _, unhooked, _, _ = real_runs
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval()
    collected = EpisodeOutcomes(NUM_ACTIONS)
    record_rollouts(params.env, agent, collected, 3, 1, seed=5, progress=False)      # the run `unhooked` recorded
    stored = EpisodeOutcomes.from_store(unhooked, NUM_ACTIONS)
    for name, values in stored.by_level().items():
        np.testing.assert_allclose(collected.by_level()[name], values, rtol=1e-6, err_msg=name)
    np.testing.assert_array_equal(collected.action_counts, stored.action_counts)


def test_an_edit_without_downstream_effect_measures_zero_and_a_real_one_does_not(real_runs):
    """Collapsing an IC changes the recorded hx by construction; only what follows it is measured."""
    basis, unhooked, control, edited = real_runs
    outcome = {name: EpisodeOutcomes.from_store(store, NUM_ACTIONS) for name, store in
               (("unhooked", unhooked), ("control", control), ("edited", edited))}
    assert np.abs(basis.ica(np.asarray(edited["hx"][:]))[:, 0]).max() < 1e-4     # the agent acted on IC 0 = 0
    same = real_outcomes(outcome["control"], outcome["unhooked"], [outcome["unhooked"]], outcome["control"],
                         samples=200, seed=0)
    for name in ("real_return", "real_value", "real_completed", "real_length"):
        assert same[name]["effect"] == 0 and same[name]["p_value"] == 1 and same[name]["null_effects"] == [0.0]
    assert same["real_action_change"]["effect"] == 0
    changed = real_outcomes(outcome["control"], outcome["edited"], [outcome["unhooked"]], outcome["control"],
                            samples=200, seed=0)
    assert changed["real_value"]["effect"] != 0                                   # the tiny agent's value reads IC 0
    runs = {name: o.by_level() for name, o in outcome.items()}
    assert changed["real_value"]["effect"] == pytest.approx((runs["edited"]["value"] - runs["control"]["value"]).mean())
    assert changed["real_value"]["ci95_low"] <= changed["real_value"]["effect"] <= changed["real_value"]["ci95_high"]
    assert sum(outcome["edited"].end_causes().values()) == pytest.approx(1.0)


def test_an_edit_the_agent_never_reads_changes_its_hx_but_no_outcome(tmp_path):
    """Heads on the conv features: the hx is edited (the old IC-shift metric moved) but nothing downstream."""
    from rlinterp.config import params_from_dict
    from tests.conftest import tiny_params_dict
    raw = tiny_params_dict()
    raw["agent"]["heads_input"] = "features"
    params = params_from_dict(raw)
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval()
    probe = EpisodeOutcomes(NUM_ACTIONS)
    hx = []
    with attached(agent, hx=lambda step, h: hx.append(h.clone())):
        record_rollouts(params.env, agent, probe, 3, 1, seed=5, progress=False)
    basis, _ = fit_basis(torch.cat(hx).numpy(), 8, 4, 2, seed=0, outlier_sigma=0)
    collapse = Intervention.from_spec(basis, "ica", [0], [None])
    runs = {}
    for name, edit in (("control", dataclasses.replace(collapse, pairs=())), ("edited", collapse)):
        runs[name], seen = EpisodeOutcomes(NUM_ACTIONS), []
        with intervene(agent, edit), attached(agent, hx=lambda step, h: seen.append(h.clone())):
            record_rollouts(params.env, agent, runs[name], 3, 1, seed=5, progress=False)
        runs[name].hx = torch.cat(seen)
    assert (runs["edited"].hx - runs["control"].hx).abs().max() > 0.01             # the state did change
    result = real_outcomes(runs["control"], runs["edited"], [runs["edited"]], runs["control"], samples=200, seed=0)
    assert all(result[name]["effect"] == 0 for name in ("real_return", "real_value", "real_completed", "real_length"))
    assert result["real_action_change"]["effect"] == 0


def test_an_edit_that_only_changes_what_the_value_head_reads_has_no_effect_beyond_the_readout(tmp_path):
    """A memoryless GRU and a policy blind to IC 0: collapsing IC 0 changes the value the head reads in the edited
    step and nothing after it. No primary outcome may move, and the whole value effect is the one-step readout."""
    from rlinterp.config import params_from_dict
    from tests.conftest import tiny_params_dict
    params = params_from_dict(tiny_params_dict())
    torch.manual_seed(0)
    agent = build_agent(params.agent).eval()
    h = agent.hidden_size
    with torch.no_grad():                       # h' = tanh(W_in x + b_in): the update gate shut, nothing of h read
        agent.gru.weight_hh.zero_(), agent.gru.bias_hh.zero_(), agent.gru.bias_ih[h:2 * h].fill_(-1e4)

    def record(name, edit):
        fields = real_rollout_fields(h, NUM_ACTIONS)
        with RolloutWriter(tmp_path / f"{name}.zarr", fields, {"stage": "test"}, 32, 128) as writer:
            with intervene(agent, edit):
                record_rollouts(params.env, agent, writer, 3, 1, seed=5, progress=False)
        return RolloutStore(tmp_path / f"{name}.zarr")

    probe = record("probe", EditMonitor(None, torch.zeros(h)))
    basis, _ = fit_basis(np.asarray(probe["hx"][:]), 8, 4, 2, seed=0, outlier_sigma=0)
    collapse = Intervention.from_spec(basis, "ica", [0], [None])
    d = collapse.directions[0]
    with torch.no_grad():                                     # the policy cannot see IC 0; the value reads it
        agent.policy_head.weight -= torch.outer(agent.policy_head.weight @ d, d) / (d @ d)
        agent.value_head.weight.copy_(5 * d[None] / d.norm())
    control, edited = record("control", EditMonitor(None, collapse.mean)), record("edited", collapse)
    assert np.abs(np.asarray(edited["hx"][:]) - np.asarray(control["hx"][:])).max() > 0.01   # the state changed
    runs = {name: EpisodeOutcomes.from_store(store, NUM_ACTIONS) for name, store in
            (("control", control), ("edited", edited))}
    readout = EpisodeOutcomes.from_store(control, NUM_ACTIONS, readout_values(agent, control, collapse))
    result = real_outcomes(runs["control"], runs["edited"], [runs["control"]] * 3, readout, samples=200, seed=0)
    assert all(result[name]["effect"] == 0 for name in PRIMARY if name.startswith("real"))
    assert "real_value" not in PRIMARY and abs(result["real_value"]["effect"]) > 1e-3     # the head reads IC 0
    assert abs(result["real_value_beyond_readout"]["effect"]) < 1e-4
    assert result["real_value_readout"]["effect"] == pytest.approx(result["real_value"]["effect"], abs=1e-4)


def test_edits_are_corrected_together_on_the_larger_of_their_two_p_values_and_a_constant_is_no_test():
    def report(ps, null_ps=None):
        outcomes = {name: {"p_value": p, "null_p_value": q, "constant": name == "sim_action_change", "role": "primary"}
                    for name, p, q in zip(PRIMARY, ps, null_ps or ps)}
        return {"outcomes": outcomes, "primary": [name for name in PRIMARY if name != "sim_action_change"]}
    reports = {"a": report((0.001, 0.01, 0.5, 1.0)), "b": report((0.004, 0.2, 0.5, 1.0))}
    family = family_p_values(reports)                   # 6 tests: .001 .004 .01 .2 .5 .5
    assert family["a"] == pytest.approx({"real_return": 0.006, "real_completed": 0.04, "real_action_change": 1.0})
    assert family["b"] == pytest.approx({"real_return": 0.02, "real_completed": 0.6, "real_action_change": 1.0})
    assert [verdict(reports["a"], name, family["a"]) for name in PRIMARY] == ["yes", "yes", "no", "constant"]
    reports["a"] = report((0.001, 0.01, 0.5, 1.0), null_ps=(0.3, 0.01, 0.5, 1.0))   # ordinary among random edits
    assert verdict(reports["a"], "real_return", family_p_values(reports)["a"]) == "no"
    table = outcome_table(reports["a"], family_p_values(reports)["a"])
    assert [row["measure"] for row in table] == ["return", "completed", "action_change"]


def test_an_effect_is_tested_against_a_normal_fitted_to_the_random_edits_or_else_their_rank():
    nulls = np.random.default_rng(0).normal(0, 1, 20)
    far = null_test(6.0, nulls, two_sided=True)
    assert far["null_test"] == "normal" and far["null_p_value"] < 1e-3               # below the rank's floor
    assert far["null_monte_carlo_p"] == pytest.approx(1 / 21)
    assert null_test(0.1, nulls, two_sided=True)["null_p_value"] > 0.5
    assert null_test(-6.0, nulls, two_sided=True)["null_p_value"] < 1e-3
    assert null_test(-6.0, nulls, two_sided=False)["null_p_value"] > 0.99             # one-sided: larger only
    skewed = np.r_[np.zeros(17), 50.0, 60.0, 70.0]                                    # no normal fits this
    rank = null_test(100.0, skewed, two_sided=True)
    assert rank["null_test"] == "monte_carlo" and rank["null_p_value"] == pytest.approx(1 / 21)
    assert paired_outcome(np.zeros(8), np.zeros(8), np.zeros(5), 100, 0)["constant"]


def test_an_action_change_is_judged_against_the_random_edits():
    result = change_outcome(0.3, np.array([0.05, 0.1, 0.2, 0.35]))
    assert result["null_percentile"] == 0.75 and result["null_monte_carlo_p"] == pytest.approx(2 / 5)
    assert change_outcome(0.5, np.full(19, 0.1))["null_p_value"] == pytest.approx(1 / 20)    # no spread: the rank
