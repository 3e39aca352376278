"""How well the simulator predicts held-out real rollouts, step by step over the simulated horizon.

Informed initialisation: the simulator encodes a real window's context frames, starts the agent from the real
hx, and simulates from its prior: open loop (`simulator`, driven by the recorded actions, so simulated step k
can be compared with real step k) and closed loop (`simulator_closed_loop`, the agent's own actions, as samples
are made). Teacher-forced (`simulator_teacher_forced`): its posterior sees every real frame and the recorded
actions drive it, so only the decoder's reconstruction separates the agent's reading from the real one: the floor
open loop can reach. Each measure is reported for both and for trivial predictors on the same windows:
    copy_last  the last real context frame / the agent's last real hx, policy and value / no reward, no done
    mean_frame the mean training frame (frame measures only)
    base_rate  the training episodes' share of steps with a reward / an end, at every step (event measures only)
Rewards and ends are rare (about one step in 80 in CoinRun), so they are scored as events with proper scores, never
by absolute error, which predicting "never" wins: the Brier score of the predicted probability over every
transition, and the probability predicted at the steps where the real event happened (which a predictor can only
raise above the base rate by knowing when it comes, as the Brier score checks it does not cry wolf elsewhere).
Open and closed loop read the heads through the calibration fitted on training windows' open-loop rollouts after
training (`Simulator.fit_event_calibration`); teacher-forced steps read them raw.
Comparisons are paired by window: per horizon k over the windows still running at k, and overall over each
window's mean. Intervals bootstrap the levels the windows come from (windows of one level share its layout, and one
level can supply many windows). A horizon counts as won or lost only where a simultaneous band over every horizon
(the bootstrap's largest standardised deviation) excludes 0, at a level Bonferroni-corrected across every
comparison `summarise` reports; `better` reads the overall interval at the same corrected level. PSNR is +inf where
a predictor copies the real frame exactly (copy_last, at k = 1 when the frame did not change); such steps are left
out for every predictor and counted.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from rlinterp.agent.model import RecurrentAgent
from rlinterp.config import PredictionQualityConfig
from rlinterp.intervals import group_bootstrap_weights, percentile_interval, resampled_means
from rlinterp.simulator import quality
from rlinterp.simulator.data import Split, batches_of, heldout_windows
from rlinterp.simulator.evaluate import open_loop, teacher_forced
from rlinterp.simulator.losses import window_from_batch
from rlinterp.simulator.model import Simulator
from rlinterp.simulator.train import real_steps
from rlinterp.store import RolloutStore

HIGHER_IS_BETTER = {"obs_psnr", "obs_ssim", "hx_cosine", "action_agreement", "reward_prob_at_event",
                    "done_prob_at_event"}
# open loop (recorded actions), closed loop (the agent acts), teacher-forced (the posterior sees every real frame)
SIMULATORS = ("simulator", "simulator_closed_loop", "simulator_teacher_forced")
BASELINES = ("copy_last", "mean_frame", "base_rate")
PREDICTION_FIELDS = ["obs", "hx", "logits", "value", "action", "reward", "done"]
EVENTS = ("reward", "done")


def event_base_rates(reward: np.ndarray, done: np.ndarray) -> dict[str, float]:
    """Per-step rates of a nonzero reward and of an end over real steps (each step is a transition)."""
    return {"reward": float((reward != 0).mean()), "done": float(done.mean())}


def event_probs(simulator: Simulator, rollout) -> dict[str, torch.Tensor]:
    """The simulator's probability (K, B) of a nonzero reward and of an end at each step."""
    nonzero = (simulator.reward_support != 0).to(rollout.reward_logits.dtype)
    return {"reward": rollout.reward_logits.softmax(-1) @ nonzero, "done": torch.sigmoid(rollout.done_logit)}


def measure_mask(measure: str, window, happened: dict[str, torch.Tensor]) -> torch.Tensor:
    """The (K, B) steps a measure is defined on: an event's Brier score, the episode's transitions; the
    probability at an event, the transitions where it happened; every other measure, the episode's frames."""
    for event in EVENTS:
        if measure == f"{event}_brier":
            return window.label_mask
        if measure == f"{event}_prob_at_event":
            return window.label_mask * happened[event]
    return window.mask


@torch.no_grad()
def prediction_quality(simulator: Simulator, agent: RecurrentAgent, batches: list[dict[str, torch.Tensor]],
                       mean_frame: torch.Tensor, base_rates: dict[str, float]
                       ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor], dict,
                                  dict[str, dict[str, torch.Tensor]]]:
    """measure -> predictor -> (K, W) values over all W windows; measure -> the (K, W) mask of the steps it is
    defined on (events' Brier scores: transitions of the episode; at the event: the transitions with the real
    event; the rest: its frames); the first batch's frames (real, simulated) for videos; and, per simulator mode
    and for `real`, event -> (W,) the chance that each window holds it (for the simulator 1 - prod(1 - p_k) over
    the window's transitions: the share its drawn events would have, without the draws' noise).
    `base_rates`: `event_base_rates` of the training episodes."""
    c = simulator.config.num_init_steps
    values: dict[str, dict[str, list[torch.Tensor]]] = {}
    masks: dict[str, list[torch.Tensor]] = {}
    example = {}
    in_window: dict[str, dict[str, list[torch.Tensor]]] = {}

    def add(measure: str, predictor: str, value: torch.Tensor) -> None:
        values.setdefault(measure, {}).setdefault(predictor, []).append(value.float().cpu())

    for batch in batches:
        window = window_from_batch(batch, simulator)
        rollouts = {"simulator": open_loop(simulator, agent, window),
                    "simulator_closed_loop": open_loop(simulator, agent, window, closed=True),
                    "simulator_teacher_forced": teacher_forced(simulator, agent, window)}
        steps = len(window.frames)
        real_logits, real_value = batch["logits"][:, c - 1:].transpose(0, 1), batch["value"][:, c - 1:].t()
        last_logits = batch["logits"][:, c - 2].expand(steps, -1, -1)
        last_value = batch["value"][:, c - 2].expand(steps, -1)
        frames = {**{name: r.frames for name, r in rollouts.items()},
                  "copy_last": window.context[:, -1].expand_as(window.frames),
                  "mean_frame": mean_frame.expand_as(window.frames)}
        for name, predicted in frames.items():
            add("obs_mse", name, quality.mse(predicted, window.frames))
            add("obs_psnr", name, quality.psnr(predicted, window.frames))
            add("obs_ssim", name, quality.ssim(predicted, window.frames))
        last_hx = window.hx_prev.expand_as(window.hx)
        for name, hx, logits, value in (*((name, r.agent_hx, r.agent_logits, r.agent_value)
                                          for name, r in rollouts.items()),
                                        ("copy_last", last_hx, last_logits, last_value)):
            add("hx_mse", name, quality.mse(hx, window.hx))
            add("hx_cosine", name, quality.cosine(hx, window.hx))
            add("action_agreement", name, quality.action_agreement(logits, real_logits))
            add("policy_kl", name, quality.policy_kl(logits, real_logits))
            add("value_abs_error", name, (value - real_value).abs())
        happened = {"reward": (window.reward != 0).float(), "done": window.done}
        predicted = {**{name: event_probs(simulator, r) for name, r in rollouts.items()},
                     "copy_last": {e: torch.zeros_like(real) for e, real in happened.items()},   # no reward, no end
                     "base_rate": {e: torch.full_like(real, base_rates[e]) for e, real in happened.items()}}
        for name, probs in predicted.items():
            for event, real in happened.items():
                add(f"{event}_brier", name, (probs[event] - real).pow(2))
                if name != "copy_last":               # its probability at an event is 0 by construction
                    add(f"{event}_prob_at_event", name, probs[event])
        for event, real in happened.items():
            transitions = window.label_mask
            in_window.setdefault("real", {}).setdefault(event, []).append((real * transitions).amax(0).cpu())
            for name in rollouts:
                chance = 1 - (1 - predicted[name][event] * transitions).prod(0)
                in_window.setdefault(name, {}).setdefault(event, []).append(chance.cpu())
        for measure in values:
            masks.setdefault(measure, []).append(measure_mask(measure, window, happened).bool().cpu())
        if not example:
            example = {"real": window.frames.cpu(), "simulated": rollouts["simulator"].frames.cpu(),
                       "mask": window.mask.cpu()}
    joined = {m: {p: torch.cat(v, dim=1) for p, v in by.items()} for m, by in values.items()}
    events = {name: {e: torch.cat(v) for e, v in by.items()} for name, by in in_window.items()}
    return joined, {m: torch.cat(v, dim=1) for m, v in masks.items()}, example, events


def window_event_shares(events: dict[str, dict[str, torch.Tensor]], levels: np.ndarray, seed: int = 0) -> dict:
    """Per simulator mode and event: the share of windows the simulator expects to hold the event beside the real
    share on the same windows, and their paired difference, each with a 95% interval bootstrapped over levels;
    the simulator rewards and ends at the real rate where the difference's interval holds 0."""
    index, weights = group_bootstrap_weights(levels, BOOTSTRAP_RESAMPLES, seed)

    def share(x: np.ndarray) -> dict[str, float]:
        return percentile_interval(x.mean(), resampled_means(x, index, weights))

    report = {}
    for mode in (name for name in SIMULATORS if name in events):
        report[mode] = {}
        for event, chance in events[mode].items():
            simulated, real = chance.double().numpy(), events["real"][event].double().numpy()
            difference = share(simulated - real)
            report[mode][event] = {"simulated": share(simulated), "real": share(real), "difference": difference,
                                   "matches": bool(difference["ci95_low"] <= 0 <= difference["ci95_high"])}
    return report


BOOTSTRAP_RESAMPLES = 2000   # resamples of the levels behind every interval and band


def level_means(values: np.ndarray, valid: np.ndarray, index: np.ndarray, weights: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Means over the valid windows of (K, W) `values`, per row k: on the data (K,), and for each bootstrap
    resample of levels (R, K) (`weights` (R, G) counts of each level, `index` (W,) each window's level)."""
    groups = weights.shape[1]
    sums = np.stack([np.bincount(index, np.where(valid[k], values[k], 0.0), minlength=groups)
                     for k in range(len(values))])
    counts = np.stack([np.bincount(index, valid[k].astype(np.float64), minlength=groups) for k in range(len(values))])
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums.sum(1) / counts.sum(1), (weights @ sums.T) / (weights @ counts.T)


def compare(simulated: np.ndarray, baseline: np.ndarray, valid: np.ndarray, higher_is_better: bool,
            levels: np.ndarray, alpha: float = 0.05, seed: int = 0) -> dict:
    """Paired comparison of (K, W) values where `valid`, windows drawn from `levels` (W,): the simulator's
    advantage (positive = better) over each window's mean with its 95% interval, and the horizons k (1-based)
    where a simultaneous band at level `alpha` lies above 0 (won) or below (lost)."""
    advantage = (simulated - baseline) * (1 if higher_is_better else -1)
    index, weights = group_bootstrap_weights(levels, BOOTSTRAP_RESAMPLES, seed)
    counts = valid.sum(0)
    windows = counts > 0
    per_window = np.where(valid, advantage, 0).sum(0)[windows] / counts[windows]
    point, resampled = level_means(per_window[None], np.ones((1, windows.sum()), bool), index[windows], weights)
    overall = {**percentile_interval(point[0], resampled[:, 0]), "windows": int(windows.sum()),
               "levels": len(np.unique(levels[windows]))}
    corrected = np.nanpercentile(resampled[:, 0], [100 * alpha / 2, 100 * (1 - alpha / 2)])
    per_step, resampled = level_means(advantage, valid, index, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)        # a step no window reaches: NaN
        spread = np.nanstd(resampled, axis=0)
    tested = valid.sum(1) >= 2
    varies = tested & (spread > 0)                  # where every resample agrees, the band has no width
    largest = np.nanmax(np.abs(resampled[:, varies] - per_step[varies]) / spread[varies], axis=1) if varies.any() \
        else np.zeros(1)
    half = np.nanpercentile(largest, 100 * (1 - alpha)) * spread
    horizons = {"won": [], "lost": [], "tied": []}
    for k in np.flatnonzero(tested):
        verdict = "won" if per_step[k] - half[k] > 0 else "lost" if per_step[k] + half[k] < 0 else "tied"
        horizons[verdict].append(int(k) + 1)
    return {"advantage": overall, "better": bool(corrected[0] > 0), "alpha": alpha,
            **{f"horizons_{verdict}": ks for verdict, ks in horizons.items()}}


def horizons_mark(verdict: dict, first: int) -> str:
    """'met' where a `compare` verdict won every horizon it tested from `first` on, else 'won/needed'."""
    needed = [k for k in verdict["horizons_won"] + verdict["horizons_lost"] + verdict["horizons_tied"] if k >= first]
    won = len(set(verdict["horizons_won"]) & set(needed))
    return "met" if needed and won == len(needed) else f"{won}/{len(needed)}"


def summarise(values: dict[str, dict[str, torch.Tensor]], masks: dict[str, torch.Tensor],
              levels: np.ndarray, seed: int = 0) -> tuple[dict, dict]:
    """(headline, curves). headline, per measure: each predictor's mean over all valid steps and windows, how many
    steps were left out (infinite PSNR), and each simulator mode against each trivial baseline (`compare`, its
    level Bonferroni-corrected across all of them); curves: per step k each predictor's mean over the windows the
    verdicts compare (means, not medians: events and action agreement are mostly 0 or 1) with a 95% interval
    bootstrapped over levels. `levels` (W,): the level of each window."""
    comparisons = sum(mode in by and baseline in by for by in values.values() for mode in SIMULATORS
                      for baseline in BASELINES)
    headline, curves = {}, {}
    for measure, by in values.items():
        arrays = {p: v.double().numpy() for p, v in by.items()}
        mask = masks[measure].bool().numpy()
        valid = mask & np.logical_and.reduce([np.isfinite(v) for v in arrays.values()])
        higher = measure in HIGHER_IS_BETTER
        headline[measure] = {
            "higher_is_better": higher, "excluded_steps": int((mask & ~valid).sum()),
            "mean": {p: float(v[valid].mean()) for p, v in arrays.items()},
            **{f"{mode}_vs_{baseline}": compare(arrays[mode], arrays[baseline], valid, higher, levels,
                                                0.05 / comparisons, seed)
               for mode in SIMULATORS for baseline in BASELINES if mode in arrays and baseline in arrays}}
        curves[measure] = {p: step_means(v, valid, levels, seed) for p, v in arrays.items()}
    return headline, curves


def step_means(values: np.ndarray, valid: np.ndarray, levels: np.ndarray, seed: int = 0) -> dict[str, list[float]]:
    """Per step k of (K, W) `values`: the mean over the `valid` windows and its 95% interval bootstrapped over the
    windows' `levels` (NaN where no window is valid)."""
    index, weights = group_bootstrap_weights(levels, BOOTSTRAP_RESAMPLES, seed)
    means, resampled = level_means(values, valid, index, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)        # a step no window reaches: NaN
        low, high = np.nanpercentile(resampled, [2.5, 97.5], axis=0)
    return {"mean": means.tolist(), "ci95_low": low.tolist(), "ci95_high": high.tolist()}


@dataclass(frozen=True)
class HeldoutPrediction:
    """`predict_heldout`'s result: what the windows were and what `summarise` and `window_event_shares` read."""
    windows: int
    levels: np.ndarray                 # (W,) the level each window was played on
    base_rates: dict[str, float]       # `event_base_rates` of the training episodes
    headline: dict
    curves: dict
    event_shares: dict
    example: dict                      # the first batch's real and open-loop frames, for videos
    values: dict                       # measure -> predictor -> (K, W), and
    masks: dict                        # measure -> (K, W) its steps: `prediction_quality`'s, to pair runs by window


def predict_heldout(simulator: Simulator, agent: RecurrentAgent, store: RolloutStore, split: Split, levels: str,
                    config: PredictionQualityConfig, device: str | torch.device = "cpu") -> HeldoutPrediction:
    """The simulator against `config.windows` real windows of the `levels` set of `split` (test, or validation
    while choosing a design), beside the trivial predictors, whose mean frame and event base rates come from the
    training episodes: all of `prediction_quality`, `summarise` and `window_event_shares` in one call."""
    context = simulator.config.num_init_steps
    windows = heldout_windows(store, split.of(levels), context, context + config.num_steps - 1, config.windows,
                              config.seed, PREDICTION_FIELDS)
    train_rows = store.episode_steps(split.train)
    base_rates = event_base_rates(store.rows("reward", train_rows), store.rows("done", train_rows))
    mean_frame = real_steps(store, split.train, simulator)["frames"].mean(0).to(device)
    values, masks, example, events = prediction_quality(simulator, agent, batches_of(windows, config.batch_size,
                                                                                     device), mean_frame, base_rates)
    window_levels = store.rows("level_seed", windows["start"].numpy())
    headline, curves = summarise(values, masks, window_levels, config.seed)
    return HeldoutPrediction(len(windows["mask"]), window_levels, base_rates, headline, curves,
                             window_event_shares(events, window_levels, config.seed), example, values, masks)
