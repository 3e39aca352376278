"""Measuring what an intervention on the hidden state does to behaviour, against what an arbitrary edit of the same
size does.

Only what lies downstream of the edit is measured: the return, completion and how episodes end, the value the agent
predicts and the actions it takes, in the real environment (same level seeds as an unaltered control) and in the
simulator (same latents). The edited state itself is not an outcome: a collapsed IC reads 0 by construction.

Primary outcomes (`PRIMARY`) are those that follow the edit through the environment: return, completion and the
actions taken. The value is secondary: the value head reads the edited state in the step it is edited, so part of
any value effect is that one-step readout; `real_value_readout` measures it on the control's own states (no
environment) and `real_value_beyond_readout` what remains.

The null is a set of matched random edits (`MatchedRandomEdit`): each moves the hidden state, at every step, along
its own random direction drawn from the states' covariance, by as much as the real edit moved it at the same step of
its own run (`EditMonitor` records that sequence). Each effect is tested twice: paired against the control (sign
flips over levels or latents), and against the random edits' effects (a normal fitted to them, its fit checked;
their Monte Carlo rank where the fit fails); an outcome that is the same for the control, the edit and every random
edit is constant by construction and no test. `rlinterp.verdicts` corrects across every edit and outcome together.
Steps whose state leaves the unedited states' ball (`EditMonitor`) are counted, and paired effects come with their
median and trimmed mean beside the mean.
"""
from __future__ import annotations


import numpy as np
import torch
from scipy import stats

from rlinterp.config import EnvConfig, ValidateConfig
from rlinterp.analysis.decompose import Basis
from rlinterp.errors import InputError
from rlinterp.interventions import Intervention, intervene
from rlinterp.record import record_rollouts
from rlinterp.store import RolloutStore

TIMEOUT_STEPS = 1000   # Procgen ends an episode after 1000 steps
# Primary outcomes, what follows the edit through the environment; `rlinterp.verdicts` corrects them across edits.
PRIMARY = ("real_return", "real_completed", "real_action_change", "sim_action_change")
NORMAL_FIT_ALPHA = 0.01   # a Shapiro-Wilk p below this rejects the normal fitted to the random edits' effects
TRIM = 0.1                # share cut from each end for the trimmed mean of paired differences


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


class EditMonitor:
    """Wraps an edit (or the identity, `None`) for one run: records each pass's |delta hx| per row (the sequence a
    matched random edit replays) and counts states outside the ball of radius `radius` around `mean`. The radius is
    the largest distance from the mean that an unedited run's states reached (its monitor's `largest_norm`): the
    bound of the states the agent produces by itself."""

    def __init__(self, edit, mean: torch.Tensor, radius: float = float("inf")):
        self.edit, self.mean, self.radius = edit, mean, radius
        self.sizes: list[torch.Tensor] = []
        self.norms: list[torch.Tensor] = []

    def __call__(self, hx: torch.Tensor) -> torch.Tensor:
        edited = hx if self.edit is None else self.edit(hx)
        self.sizes.append((edited - hx).norm(dim=-1).detach().cpu())
        self.norms.append((edited - self.mean.to(hx)).norm(dim=-1).detach().cpu())
        return edited

    def off_manifold(self) -> float:
        """Share of states (rows x passes) this run left outside the unedited states' ball."""
        norms = torch.cat(self.norms) if self.norms else torch.zeros(0)
        return float((norms > self.radius).float().mean()) if len(norms) else 0.0

    def largest_norm(self) -> float:
        return float(torch.cat(self.norms).max()) if self.norms else 0.0


class MatchedRandomEdit:
    """The null for what an arbitrary edit of the same size does: at pass t it moves row b's hx along one fixed
    direction u (from `decompose.data_like_directions`) by `sizes[t][b]`, the |delta hx| the real edit made at the same pass of
    its own run (`EditMonitor.sizes`; past the end of that run, the row's mean size), towards the real states' mean,
    crossing it when the step is longer than the way there. Heading for the mean keeps the state where the agent
    has seen states; a push of fixed sign leaves the GRU's range."""

    def __init__(self, direction: np.ndarray, mean: torch.Tensor, sizes: list[torch.Tensor]):
        self.direction = torch.as_tensor(direction, dtype=torch.float32)
        self.mean, self.sizes = mean, sizes
        self.row_mean = torch.stack(sizes).mean(0) if sizes else None
        self.passes = 0

    def __call__(self, hx: torch.Tensor) -> torch.Tensor:
        size = self.sizes[self.passes] if self.passes < len(self.sizes) else self.row_mean
        self.passes += 1
        u = self.direction.to(hx)
        along = (hx - self.mean.to(hx)) @ u
        towards_mean = torch.where(along > 0, -1.0, 1.0).to(hx)
        return hx + (towards_mean * size.to(hx))[:, None] * u


def size_match(edit: EditMonitor, null: EditMonitor) -> dict[str, float]:
    """Mean |delta hx| per state that the edit made on its own run and that the matched random edit made, over the
    passes both runs made (where the null replays the edit's sequence), and the null's over its whole run."""
    common = min(len(edit.sizes), len(null.sizes))
    mean = lambda sizes: float(torch.cat(sizes).mean()) if sizes else 0.0  # noqa: E731
    return {"edit": mean(edit.sizes[:common]), "random_edit": mean(null.sizes[:common]),
            "random_edit_whole_run": mean(null.sizes)}


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
    def from_store(cls, store: RolloutStore, num_actions: int, value: np.ndarray | None = None) -> EpisodeOutcomes:
        """The run recorded in `store`; `value` (one per step) replaces the recorded value (`readout_values`)."""
        outcomes = cls(num_actions)
        info = store.episode_info()
        value = np.asarray(store["value"][:]) if value is None else value
        action = np.asarray(store["action"][:])
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
def readout_values(agent, store: RolloutStore, edit, device: str | torch.device = "cpu",
                   batch: int = 2048) -> np.ndarray:
    """Per step of a recorded (unedited) run, the value the agent's head reads from the edited state, once, with no
    environment after it: the part of a value effect that is only the readout of the edit itself."""
    values = []
    for start in range(0, store.num_steps, batch):
        rows = slice(start, min(start + batch, store.num_steps))
        obs = torch.from_numpy(np.asarray(store["obs"][rows])).to(device)
        hx = torch.from_numpy(np.asarray(store["hx"][rows])).to(device)
        values.append(agent.heads(agent.encode(obs), edit(hx))[1].float().cpu().numpy())
    return np.concatenate(values) if values else np.zeros(0, np.float32)


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


def null_test(effect: float, null_effects: np.ndarray, two_sided: bool) -> dict:
    """How unusual the edit's effect is among the matched random edits' effects: the p-value of a new draw from the
    normal fitted to them (t prediction interval) where a Shapiro-Wilk test does not reject that fit, else their
    Monte Carlo rank (whose floor is 1 / (edits + 1)); two-sided around their mean, or one-sided (larger)."""
    null_effects = np.asarray(null_effects, dtype=np.float64)
    n, centre = len(null_effects), float(np.mean(null_effects))
    spread = float(np.std(null_effects, ddof=1)) if n > 1 and np.ptp(null_effects) > 0 else 0.0
    fit_p = float(stats.shapiro(null_effects).pvalue) if n >= 3 and spread > 0 else float("nan")
    distance = effect - centre
    beyond = np.abs(null_effects - centre) >= abs(distance) - 1e-12 if two_sided else null_effects >= effect - 1e-12
    monte_carlo = float((1 + beyond.sum()) / (n + 1))
    if fit_p >= NORMAL_FIT_ALPHA:
        t = distance / (spread * np.sqrt(1 + 1 / n))
        p, method = float(2 * stats.t.sf(abs(t), n - 1) if two_sided else stats.t.sf(t, n - 1)), "normal"
    else:
        p, method = monte_carlo, "monte_carlo"
    return {"null_p_value": p, "null_test": method, "null_fit_p": fit_p, "null_monte_carlo_p": monte_carlo}


def is_constant(effect: float, null_effects: np.ndarray) -> bool:
    """The edit and every matched random edit leave the outcome exactly where the control has it: a measure
    nothing can move is constant by construction and no test."""
    return effect == 0 and all(e == 0 for e in null_effects)


def paired_difference(edited: np.ndarray, control: np.ndarray, samples: int, seed: int) -> dict:
    """Mean edited - control over pairs (same levels or latents) with its bootstrap CI, median and trimmed mean, and
    the sign-flip p-value."""
    diff = np.asarray(edited, dtype=np.float64) - np.asarray(control, dtype=np.float64)
    lo, hi = bootstrap_interval(diff, samples, seed)
    return {"control": float(np.mean(control)), "edited": float(np.mean(edited)), "effect": float(diff.mean()),
            "ci95_low": lo, "ci95_high": hi, "median_effect": float(np.median(diff)),
            "trimmed_mean_effect": float(stats.trim_mean(diff, TRIM)), "p_value": sign_flip_pvalue(diff, samples, seed)}


def paired_outcome(edited: np.ndarray, control: np.ndarray, null_effects: np.ndarray, samples: int,
                   seed: int) -> dict:
    """`paired_difference`, and the effect beside the matched random edits' effects (`null_test`)."""
    out = paired_difference(edited, control, samples, seed)
    null_effects = np.asarray(null_effects, dtype=np.float64)
    return {**out, "null_effects": null_effects.tolist(), "null_percentile": null_percentile(out["effect"],
                                                                                             null_effects),
            **null_test(out["effect"], null_effects, True), "constant": is_constant(out["effect"], null_effects)}


def change_outcome(effect: float, null_effects: np.ndarray) -> dict:
    """An unpaired change (e.g. how far the action distribution moved), tested only against the matched random
    edits, one-sided: did the edit move it further than they do?"""
    null_effects = np.asarray(null_effects, dtype=np.float64)
    return {"effect": float(effect), "null_effects": null_effects.tolist(),
            "null_percentile": null_percentile(effect, null_effects), **null_test(effect, null_effects, False),
            "constant": is_constant(effect, null_effects)}


def real_outcomes(control: EpisodeOutcomes, edited: EpisodeOutcomes, nulls: list[EpisodeOutcomes],
                  readout: EpisodeOutcomes, samples: int, seed: int) -> dict:
    """Edited vs control on the same level seeds: return, value (each episode's mean), completion, length, and how
    far the action distribution moved, each beside the matched random edits' effects; and the value effect split
    into its one-step readout (`readout`: the control's episodes with the value read from edited states) and what
    remains beyond it."""
    runs = [run.by_level() for run in (control, edited, readout, *nulls)]
    if any(not np.array_equal(run["level_seed"], runs[0]["level_seed"]) for run in runs):
        raise ValueError("validation runs were played on different level seeds; expected the same seeds for all")
    base, changed, read, null_runs = runs[0], runs[1], runs[2], runs[3:]
    out = {}
    for name in ("return", "value", "completed", "length"):
        null_effects = np.array([float(np.mean(run[name].astype(float) - base[name])) for run in null_runs])
        out[f"real_{name}"] = paired_outcome(changed[name].astype(float), base[name].astype(float), null_effects,
                                             samples, seed)
    out["real_value_readout"] = paired_difference(read["value"], base["value"], samples, seed)
    out["real_value_beyond_readout"] = paired_difference(changed["value"], read["value"], samples, seed)
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


def agreement(outcomes: dict) -> dict:
    """Where the real environment and the simulator say the same: the sign of the value effect, and whether each
    moved the actions more than most matched random edits."""
    real, sim = outcomes["real_value"]["effect"], outcomes["sim_value"]["effect"]
    return {"value_effect_real": real, "value_effect_simulated": sim, "value_same_sign": bool(np.sign(real) ==
                                                                                                 np.sign(sim)),
            "action_change_beyond_median_null": {
                where: outcomes[f"{where}_action_change"]["null_percentile"] > 0.5 for where in ("real", "sim")}}


def validation_report(control: EpisodeOutcomes, edited: EpisodeOutcomes, nulls: list[EpisodeOutcomes],
                      readout: EpisodeOutcomes, simulated: dict[str, dict[str, np.ndarray]],
                      monitors: dict[str, dict[str, EditMonitor]], samples: int, seed: int) -> dict:
    """Every outcome (real and simulated, each beside the matched random edits) with its role (primary or
    secondary), where real and simulated agree, how episodes end, how many states left the unedited states' ball,
    and how closely the random edits matched the edit's sizes. `simulated` maps control, edited and null_0 ... to
    rollouts' `value` and `action` (steps, samples); `monitors` maps real and sim to the same names' EditMonitors."""
    null_names = [f"null_{k}" for k in range(len(nulls))]
    outcomes = {**real_outcomes(control, edited, nulls, readout, samples, seed),
                **simulated_outcomes(simulated["control"], simulated["edited"],
                                     [simulated[name] for name in null_names], samples, seed)}
    for name, outcome in outcomes.items():
        outcome["role"] = "primary" if name in PRIMARY else "secondary"
    off_manifold = {where: {"radius": runs["edited"].radius, "edited": runs["edited"].off_manifold(),
                            "random_edits": [runs[name].off_manifold() for name in null_names],
                            "edited_largest_distance": runs["edited"].largest_norm()}
                    for where, runs in monitors.items()}
    return {"random_edits": len(nulls), "outcomes": outcomes,
            "primary": [name for name in PRIMARY if not outcomes[name]["constant"]],
            "constant": [name for name, outcome in outcomes.items() if outcome.get("constant")],
            "agreement": agreement(outcomes), "off_manifold": off_manifold,
            "end_causes": {"control": control.end_causes(), "edited": edited.end_causes()},
            "random_edit_sizes": {where: [size_match(runs["edited"], runs[name]) for name in null_names]
                                  for where, runs in monitors.items()}}
