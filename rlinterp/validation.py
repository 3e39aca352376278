"""Measuring what an intervention on the hidden state does to behaviour, against what an arbitrary edit of the same
size does.

Only what lies downstream of the edit is measured: the return, completion and how episodes end, the value the agent
predicts and the actions it takes, in the real environment (same level seeds as an unaltered control) and in the
simulator (same latents). The edited state itself is not an outcome: a collapsed IC reads 0 by construction.

The null is a set of matched random edits (`MatchedRandomEdit`): each moves the hidden state, at every step, along
its own random direction drawn from the states' covariance, by exactly as much as the real edit would (the same
|delta hx| at every step; each run records both sizes). The real edit's effect is read as a percentile of
their effects, and a small set of primary outcomes is tested, paired, and corrected across (Holm).
"""
from __future__ import annotations


import numpy as np
import torch

from rlinterp.config import EnvConfig, ValidateConfig
from rlinterp.analysis.decompose import Basis
from rlinterp.errors import InputError
from rlinterp.interventions import Intervention, intervene
from rlinterp.record import record_rollouts
from rlinterp.store import RolloutStore

TIMEOUT_STEPS = 1000   # Procgen ends an episode after 1000 steps
# Primary outcomes, tested and Holm-corrected together: three in the real environment, two in the simulator.
PRIMARY = ("real_return", "real_value", "real_action_change", "sim_value", "sim_action_change")


def named_edit(config: ValidateConfig, name: str, basis: Basis) -> Intervention:
    """The intervention `validate.interventions[name]` on `basis`; an unknown name or a bad spec is an InputError."""
    if name not in config.interventions:
        raise InputError(f"validate {name!r}: no such intervention in params.yaml validate.interventions "
                         f"(expected one of {', '.join(config.interventions)})")
    spec = config.interventions[name]
    try:
        return Intervention.from_spec(basis, config.basis, list(spec.source), list(spec.target))
    except ValueError as err:
        raise InputError(f"validate.interventions {name}: {err}") from err


def data_like_directions(basis: Basis, count: int, seed: int) -> np.ndarray:
    """(count, hidden) random unit directions drawn from the states' own covariance (random mixtures of the PCs,
    each weighted by its standard deviation): directions along which states vary as much as along the edited ones,
    unlike uniformly random directions, along which real states barely vary."""
    rng = np.random.default_rng(seed)
    loadings = rng.standard_normal((count, len(basis.pca_variance))) * np.sqrt(basis.pca_variance)
    directions = (loadings @ basis.pca_components) * basis.scale
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


class MatchedRandomEdit:
    """The null for what an arbitrary edit of the same size does: at each step (row by row) it moves hx along one
    fixed direction u (from `data_like_directions`) by exactly as far as `edit` would move it, towards the real
    states' mean (`edit.mean`), crossing it when the step is longer than the way there. Heading for the mean keeps
    the state where the agent has seen states (its component along u never exceeds the larger of its previous
    value and the step); a push of fixed sign leaves the GRU's range and feeds back (the size the edit would apply
    grows with it) until the state diverges."""

    def __init__(self, edit, direction: np.ndarray):
        self.edit = edit
        self.direction = torch.as_tensor(direction, dtype=torch.float32)
        self.sizes = np.zeros(3)   # rows, summed |delta hx| the edit would make, summed |delta hx| this one made

    def __call__(self, hx: torch.Tensor) -> torch.Tensor:
        size = (self.edit(hx) - hx).norm(dim=-1)
        u = self.direction.to(hx)
        along = (hx - self.edit.mean.to(hx)) @ u
        towards_mean = torch.where(along > 0, -1.0, 1.0).to(hx)
        edited = hx + (towards_mean * size)[:, None] * u
        self.sizes += [len(hx), float(size.sum()), float((edited - hx).norm(dim=-1).sum())]
        return edited

    def size_report(self) -> dict[str, float]:
        """Mean |delta hx| per edited state (over every run this edit was applied in, real and simulated) that the
        matched edit would have made, and the mean this edit made."""
        rows = max(self.sizes[0], 1)
        return {"edit": float(self.sizes[1] / rows), "random_edit": float(self.sizes[2] / rows)}


class EpisodeOutcomes:
    """What validation compares of each episode of a real run, without frames: a stand-in for the RolloutWriter
    that `record.record_rollouts` fills (it only needs `add_episode`), or read back from a recorded store."""

    def __init__(self, num_actions: int):
        self.num_actions = num_actions
        self.rows: list[tuple[int, float, bool, int, float]] = []   # level, return, completed, length, mean value
        self.action_counts = np.zeros(num_actions, dtype=np.int64)

    def add_episode(self, steps: dict[str, np.ndarray], **summary) -> None:
        self.rows.append((int(summary["level_seed"]), float(summary["return"]), bool(summary["completed"]),
                          len(steps["action"]), float(np.mean(steps["value"]))))
        self.action_counts += np.bincount(steps["action"], minlength=self.num_actions)

    @classmethod
    def from_store(cls, store: RolloutStore, num_actions: int) -> EpisodeOutcomes:
        outcomes = cls(num_actions)
        info = store.episode_info()
        value, action = np.asarray(store["value"][:]), np.asarray(store["action"][:])
        for e, (start, end) in enumerate(zip(store.episode_starts, store.episode_ends)):
            outcomes.add_episode({"value": value[start:end], "action": action[start:end]},
                                 **{k: info[k][e] for k in ("level_seed", "return", "completed")})
        return outcomes

    def by_level(self) -> dict[str, np.ndarray]:
        """Per-episode arrays sorted by level seed: runs on the same seeds line up episode by episode (a run lists
        its episodes in the order they finish)."""
        rows = sorted(self.rows, key=lambda row: row[0])
        return {name: np.array([row[i] for row in rows])
                for i, name in enumerate(("level_seed", "return", "completed", "length", "value"))}

    def end_causes(self) -> dict[str, float]:
        """Share of episodes that reached the coin, timed out, or ended otherwise (the agent died)."""
        runs = self.by_level()
        coin, timeout = runs["completed"], ~runs["completed"] & (runs["length"] >= TIMEOUT_STEPS)
        return {"coin": float(coin.mean()), "timeout": float(timeout.mean()), "died": float((~coin & ~timeout).mean())}


def level_order(store: RolloutStore) -> np.ndarray:
    """Episode indices sorted by level seed: a store lists episodes as they finish, so this is what lines two
    runs on the same level seeds up episode by episode."""
    return np.argsort(store.episode_info()["level_seed"], kind="stable")


def play_with_edit(env_config: EnvConfig, agent, edit, sink, config: ValidateConfig, levels: tuple[int, int],
                   device: str | torch.device = "cpu") -> None:
    """The agent, `edit` applied to its hidden state at every step, plays `config.num_envs` x `episodes_per_env`
    episodes on `levels` (start, count) into `sink` (a RolloutWriter or EpisodeOutcomes). Every run draws the same
    level seeds: each env's level sequence depends on `config.seed` only."""
    with intervene(agent, edit):
        record_rollouts(env_config, agent, sink, config.num_envs, config.episodes_per_env, config.seed, *levels,
                        device, progress=False)


@torch.no_grad()
def simulate_edit(simulator, agent, latents: torch.Tensor, edit, steps: int):
    """Closed-loop simulated rollouts from `latents` with `edit` applied to the agent's hidden state at every step."""
    with intervene(agent, edit):
        return simulator.rollout(latents, agent, steps, modal=True)


def total_variation(counts: np.ndarray, reference: np.ndarray) -> float:
    """Total-variation distance between two action distributions given as counts."""
    p, q = counts / max(counts.sum(), 1), reference / max(reference.sum(), 1)
    return float(0.5 * np.abs(p - q).sum())


def sign_flip_pvalue(diff: np.ndarray, samples: int, seed: int) -> float:
    """Two-sided p-value of a paired permutation (sign-flip) test of zero mean difference."""
    flips = np.random.default_rng(seed).choice([-1.0, 1.0], size=(samples, len(diff)))
    return float((1 + (np.abs((flips * diff).mean(1)) >= abs(diff.mean()) - 1e-12).sum()) / (samples + 1))


def bootstrap_interval(diff: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of paired differences."""
    means = diff[np.random.default_rng(seed).integers(len(diff), size=(samples, len(diff)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def null_percentile(effect: float, null_effects: np.ndarray) -> float:
    """Share of the matched random edits whose |effect| is smaller than the real edit's."""
    return float((np.abs(null_effects) < abs(effect)).mean())


def paired_outcome(edited: np.ndarray, control: np.ndarray, null_effects: np.ndarray, samples: int,
                   seed: int) -> dict:
    """A paired outcome (same levels or latents): mean edited - control, bootstrap CI, sign-flip p-value, and the
    effect's percentile among the matched random edits' effects."""
    diff = np.asarray(edited, dtype=np.float64) - np.asarray(control, dtype=np.float64)
    lo, hi = bootstrap_interval(diff, samples, seed)
    return {"control": float(np.mean(control)), "edited": float(np.mean(edited)), "effect": float(diff.mean()),
            "ci95_low": lo, "ci95_high": hi, "p_value": sign_flip_pvalue(diff, samples, seed),
            "null_effects": [float(e) for e in null_effects],
            "null_percentile": null_percentile(float(diff.mean()), null_effects)}


def change_outcome(effect: float, null_effects: np.ndarray) -> dict:
    """An unpaired change (e.g. how far the action distribution moved): its p-value is the share of matched random
    edits that moved it at least as far (with the usual +1), so it can only be small with enough random edits."""
    null_effects = np.asarray(null_effects, dtype=np.float64)
    return {"effect": float(effect), "null_effects": null_effects.tolist(),
            "null_percentile": null_percentile(effect, null_effects),
            "p_value": float((1 + (null_effects >= effect).sum()) / (len(null_effects) + 1))}


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control across the given tests)."""
    order = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[name]))
        adjusted[name] = running
    return adjusted


def real_outcomes(control: EpisodeOutcomes, edited: EpisodeOutcomes, nulls: list[EpisodeOutcomes],
                  samples: int, seed: int) -> dict:
    """Edited vs control on the same level seeds: return, value (each episode's mean), completion, length, and how
    far the action distribution moved, each beside the matched random edits' effects."""
    runs = [run.by_level() for run in (control, edited, *nulls)]
    if any(not np.array_equal(run["level_seed"], runs[0]["level_seed"]) for run in runs):
        raise ValueError("validation runs were played on different level seeds; expected the same seeds for all")
    base, changed, null_runs = runs[0], runs[1], runs[2:]
    out = {}
    for name in ("return", "value", "completed", "length"):
        null_effects = np.array([float(np.mean(run[name].astype(float) - base[name])) for run in null_runs])
        out[f"real_{name}"] = paired_outcome(changed[name].astype(float), base[name].astype(float), null_effects,
                                             samples, seed)
    out["real_action_change"] = change_outcome(
        total_variation(edited.action_counts, control.action_counts),
        np.array([total_variation(run.action_counts, control.action_counts) for run in nulls]))
    return out


def simulated_outcomes(control: dict[str, np.ndarray], edited: dict[str, np.ndarray],
                       nulls: list[dict[str, np.ndarray]], samples: int, seed: int) -> dict:
    """The same in the simulator, from the same latents: each sample's mean value (paired), and the share of steps
    whose most likely action differs from the control's. Runs hold `value` and `action`, both (steps, samples)."""
    def changed(run: dict[str, np.ndarray]) -> float:
        return float((run["action"] != control["action"]).mean())

    value = {name: run["value"].mean(0) for name, run in (("control", control), ("edited", edited))}
    return {"sim_value": paired_outcome(value["edited"], value["control"],
                                        np.array([float(np.mean(run["value"].mean(0) - value["control"]))
                                                  for run in nulls]), samples, seed),
            "sim_action_change": change_outcome(changed(edited), np.array([changed(run) for run in nulls]))}


def primary_tests(outcomes: dict) -> dict:
    """Holm-adjusted p-values of the primary outcomes, and which of them survive at 0.05."""
    adjusted = holm({name: outcomes[name]["p_value"] for name in PRIMARY if name in outcomes})
    return {"holm_p_values": adjusted, "significant": [name for name, p in adjusted.items() if p < 0.05]}


def agreement(outcomes: dict) -> dict:
    """Where the real environment and the simulator say the same: the sign of the value effect, and whether each
    moved the actions more than most matched random edits."""
    real, sim = outcomes["real_value"]["effect"], outcomes["sim_value"]["effect"]
    return {"value_effect_real": real, "value_effect_simulated": sim, "value_same_sign": bool(np.sign(real) ==
                                                                                                 np.sign(sim)),
            "action_change_beyond_median_null": {
                where: outcomes[f"{where}_action_change"]["null_percentile"] > 0.5 for where in ("real", "sim")}}


def validation_report(control: EpisodeOutcomes, edited: EpisodeOutcomes, nulls: list[EpisodeOutcomes],
                      simulated: dict[str, dict[str, np.ndarray]], samples: int, seed: int) -> dict:
    """Every outcome (real and simulated, each beside the matched random edits), the Holm-corrected primary tests,
    where real and simulated agree, and how episodes end. `simulated` maps control, edited and null_0 ... to
    rollouts' `value` and `action` (steps, samples)."""
    null_sims = [simulated[f"null_{k}"] for k in range(len(nulls))]
    outcomes = {**real_outcomes(control, edited, nulls, samples, seed),
                **simulated_outcomes(simulated["control"], simulated["edited"], null_sims, samples, seed)}
    return {"random_edits": len(nulls), "outcomes": outcomes, **primary_tests(outcomes),
            "agreement": agreement(outcomes),
            "end_causes": {"control": control.end_causes(), "edited": edited.end_causes()}}
