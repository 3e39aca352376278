"""How well the simulator predicts held-out real rollouts, step by step over the simulated horizon.

Informed initialisation: the simulator encodes a real window's context frames, starts the agent from the real
hx, and simulates open loop (prior states, recorded actions), so simulated step k can be compared with real
step k. Each measure is reported for the simulator and for trivial predictors on the same windows:
    copy_last  the last real context frame / the agent's last real hx, policy and value / no reward, no done
    mean_frame the mean training frame (frame measures only)
"""
from __future__ import annotations

import torch

from rlinterp.agent.model import RecurrentAgent
from rlinterp.simulator import quality
from rlinterp.simulator.evaluate import open_loop
from rlinterp.simulator.losses import window_from_batch
from rlinterp.simulator.model import Simulator

FRAME_MEASURES = ("obs_mse", "obs_psnr", "obs_ssim")
HIGHER_IS_BETTER = {"obs_psnr", "obs_ssim", "hx_cosine", "action_agreement"}
PREDICTION_FIELDS = ["obs", "hx", "logits", "value", "action", "reward", "done"]


@torch.no_grad()
def prediction_quality(simulator: Simulator, agent: RecurrentAgent, batches: list[dict[str, torch.Tensor]],
                       mean_frame: torch.Tensor) -> tuple[dict[str, dict[str, torch.Tensor]], torch.Tensor, dict]:
    """measure -> predictor -> (K, W) values over all W windows; the (K, W) mask of real steps; and the
    first batch's frames (real, simulated) for videos."""
    c = simulator.config.num_init_steps
    values: dict[str, dict[str, list[torch.Tensor]]] = {}
    masks = []
    example = {}

    def add(measure: str, predictor: str, value: torch.Tensor) -> None:
        values.setdefault(measure, {}).setdefault(predictor, []).append(value.float().cpu())

    for batch in batches:
        window = window_from_batch(batch, simulator)
        rollout = open_loop(simulator, agent, window)
        steps = len(window.frames)
        real_logits, real_value = batch["logits"][:, c - 1:].transpose(0, 1), batch["value"][:, c - 1:].t()
        last_logits = batch["logits"][:, c - 2].expand(steps, -1, -1)
        last_value = batch["value"][:, c - 2].expand(steps, -1)
        frames = {"simulator": rollout.frames, "copy_last": window.context[:, -1].expand_as(window.frames),
                  "mean_frame": mean_frame.expand_as(window.frames)}
        for name, predicted in frames.items():
            add("obs_mse", name, quality.mse(predicted, window.frames))
            add("obs_psnr", name, quality.psnr(predicted, window.frames))
            add("obs_ssim", name, quality.ssim(predicted, window.frames))
        last_hx = window.hx_prev.expand_as(window.hx)
        for name, hx, logits, value, reward, done in (
                ("simulator", rollout.agent_hx, rollout.agent_logits, rollout.agent_value, rollout.reward,
                 torch.sigmoid(rollout.done_logit)),
                ("copy_last", last_hx, last_logits, last_value, torch.zeros_like(window.reward),
                 torch.zeros_like(window.done))):
            add("hx_mse", name, quality.mse(hx, window.hx))
            add("hx_cosine", name, quality.cosine(hx, window.hx))
            add("action_agreement", name, quality.action_agreement(logits, real_logits))
            add("policy_kl", name, quality.policy_kl(logits, real_logits))
            add("value_abs_error", name, (value - real_value).abs())
            add("reward_abs_error", name, (reward - window.reward).abs())
            add("done_abs_error", name, (done - window.done).abs())
        masks.append(window.mask.cpu())
        if not example:
            example = {"real": window.frames.cpu(), "simulated": rollout.frames.cpu(), "mask": window.mask.cpu()}
    joined = {m: {p: torch.cat(v, dim=1) for p, v in by.items()} for m, by in values.items()}
    return joined, torch.cat(masks, dim=1), example


def summarise(values: dict[str, dict[str, torch.Tensor]], mask: torch.Tensor) -> tuple[dict, dict]:
    """(headline, curves): headline = per measure and predictor the mean over all real steps and windows, and the
    simulator's margin over the best trivial predictor; curves = per step k the median and IQR over windows."""
    headline, curves = {}, {}
    weight = mask.float()
    for measure, by in values.items():
        finite = {p: torch.where(torch.isfinite(v), v, torch.full_like(v, 100.0)) for p, v in by.items()}  # psnr
        means = {p: float((v * weight).sum() / weight.sum()) for p, v in finite.items()}
        best_baseline = (max if measure in HIGHER_IS_BETTER else min)(
            (means[p] for p in means if p != "simulator"))
        headline[measure] = {**means, "best_baseline": best_baseline,
                             "simulator_beats_baselines": bool(means["simulator"] > best_baseline
                                                               if measure in HIGHER_IS_BETTER
                                                               else means["simulator"] < best_baseline)}
        curves[measure] = {p: quality.median_iqr(v, mask) for p, v in finite.items()}
    return headline, curves
