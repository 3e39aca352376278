"""Is the simulator's agent-value and hx error a dynamics problem or a reconstruction one?

On the held-out windows of `train_simulator`, the agent is run on three sequences of frames from the same start
(real hx and previous action), and its value and hx compared with the recorded ones:
  real frames       the recorded frames at the simulator's resolution (0 error: the resolution loses nothing the
                    agent reads)
  teacher-forced    frames decoded with the posterior, which sees every real frame: reconstruction error only
  open loop         frames decoded from the prior with the recorded actions: reconstruction and dynamics
  x{0.5, 0.25}      real frames plus that share of the teacher-forced frames' error: how much of the
                    reconstruction error has to go before the agent's value and hx beat holding the last ones
beside holding the last real value / hx. Prints each error per horizon and its ratio to hold-last. `--levels train`
measures the simulator's own training levels instead: where it beats hold-last there and not on unseen levels, the
gap is generalisation (more levels), not capacity or training time. Last, the value errors apart in windows that
hold a reward (the coin reached), an end without one (a death) and neither: where the agent's value goes wrong.
And item 2's target read for each row as prediction_quality reads it (paired by window against hold-last, a
simultaneous band over horizons at its corrected level, levels bootstrapped): how small the reconstruction error has
to get before the target can be met on these levels at all.

    python benchmarks/reconstruction_floor.py [--simulator data/simulator/checkpoint.pt] [--levels train]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rlinterp.agent.checkpoint import load_agent
from rlinterp.config import load_params
from rlinterp.files import file_sha256
from rlinterp.simulator.checkpoint import load_simulator
from rlinterp.simulator.data import batches_of, heldout_windows, simulator_split
from rlinterp.simulator.losses import open_loop_rollout, window_from_batch
from rlinterp.simulator.prediction import compare, horizons_mark
from rlinterp.store import RolloutStore

ERROR_SHARES = (0.5, 0.25)
# row -> the first horizon item 2's target asks it to win from (the error-share rows are teacher-forced frames)
TARGET_FROM = {"teacher-forced": 4, "open loop": 8, **{f"teacher-forced error x{share}": 4 for share in ERROR_SHARES}}


def agent_on_frames(agent, simulator, frames: torch.Tensor, hx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The agent's values (K, B) and hx (K, B, H) stepping through `frames` (K, B, 3, S, S) from `hx`."""
    values, states = [], []
    for frame in frames:
        out = agent.step_pixels(simulator.agent_pixels(frame), hx)
        hx = out.hx
        values.append(out.value)
        states.append(hx)
    return torch.stack(values), torch.stack(states)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--agent", default="data/agent/checkpoint.pt")
    parser.add_argument("--simulator", default="data/simulator/checkpoint.pt")
    parser.add_argument("--store", default="data/rollouts.zarr")
    parser.add_argument("--levels", default="validation", choices=("validation", "train"),
                        help="which of the simulator's level splits the windows come from")
    parser.add_argument("--metrics", default="metrics/prediction_quality.json",
                        help="prediction_quality's metrics: the corrected level its verdicts use")
    args = parser.parse_args()
    params = load_params(args.params)
    torch.manual_seed(0)
    agent, _ = load_agent(args.agent, "cpu", expected=params.agent)
    simulator = load_simulator(args.simulator, agent, file_sha256(args.agent), expected=params.simulator)[0].eval()
    sim, config = params.simulator, params.train_simulator
    store = RolloutStore(args.store)
    episodes = getattr(simulator_split(store, config), args.levels)
    windows = heldout_windows(store, episodes, sim.num_init_steps, sim.num_init_steps + sim.num_sim_steps - 1,
                              config.eval_windows, config.split_seed)
    errors: dict[str, list[torch.Tensor]] = {}
    masks, outcomes = [], []
    for batch in batches_of(windows, 64):
        window = window_from_batch(batch, simulator)
        latent = simulator.encode(window.context, sample=False).value
        steps = len(window.frames)
        teacher = simulator.rollout(latent, agent, steps, frames=window.frames, actions=window.action,
                                    agent_hx=window.hx_prev, action_prev=window.action_prev, imagine_from=steps)
        opened = open_loop_rollout(simulator, agent, latent, window)
        predicted = {"real frames": agent_on_frames(agent, simulator, window.frames, window.hx_prev),
                     "teacher-forced": (teacher.agent_value, teacher.agent_hx),
                     "open loop": (opened.agent_value, opened.agent_hx),
                     **{f"teacher-forced error x{share}": agent_on_frames(
                         agent, simulator, window.frames + share * (teacher.frames - window.frames), window.hx_prev)
                        for share in ERROR_SHARES},
                     "hold-last": (batch["value"][:, sim.num_init_steps - 2].float().expand_as(window.value),
                                   window.hx_prev.expand_as(window.hx))}
        for name, (value, hx) in predicted.items():
            errors.setdefault(f"value |error| {name}", []).append((value - window.value).abs())
            errors.setdefault(f"hx MSE {name}", []).append((hx - window.hx).pow(2).mean(-1))
        masks.append(window.mask)
        rewarded = (window.reward * window.label_mask).gt(0).any(0)
        ended = (window.done * window.label_mask).gt(0).any(0)
        outcomes.append(torch.where(rewarded, 0, torch.where(ended, 1, 2)))
    mask, outcome = torch.cat(masks, 1), torch.cat(outcomes)
    errors = {name: torch.cat(parts, 1) for name, parts in errors.items()}       # (K, W) each
    means = {}
    horizons = [k for k in (1, 2, 4, 8) if k < len(mask)] + [len(mask)]
    print(f"{len(mask[0])} windows of {len(mask)} steps on {args.levels} levels; means over all steps, then at k = "
          f"{horizons}")
    for name, error in errors.items():
        per_step = (error * mask).sum(1) / mask.sum(1).clamp_min(1)
        means[name] = float((error * mask).sum() / mask.sum())
        shown = [float(per_step[k - 1]) for k in horizons]
        print(f"{name:32s} mean {means[name]:.4f}   " + " ".join(f"{x:.3f}" for x in shown))
    for measure in ("value |error|", "hx MSE"):
        hold = means[f"{measure} hold-last"]
        print(f"{measure}: teacher-forced / hold-last {means[f'{measure} teacher-forced'] / hold:.2f}, "
              f"open loop / hold-last {means[f'{measure} open loop'] / hold:.2f}")
    groups = {"a reward": outcome == 0, "an end without reward": outcome == 1, "neither": outcome == 2}
    for name in ("teacher-forced", "open loop", "hold-last"):
        error = errors[f"value |error| {name}"] * mask
        print(f"value |error| {name:15s} in windows with " + ", ".join(
            f"{group} ({int(rows.sum())}) {float(error[:, rows].sum() / mask[:, rows].sum().clamp_min(1)):.3f}"
            for group, rows in groups.items()))
    alpha = json.loads(Path(args.metrics).read_text())["value_abs_error"]["simulator_teacher_forced_vs_copy_last"][
        "alpha"]
    levels = store.rows("level_seed", windows["start"].numpy())
    valid = mask.bool().numpy()
    print(f"item 2's target against hold-last ({len(np.unique(levels))} levels, alpha {alpha:.3g} as "
          f"prediction_quality): horizons won of those needed, overall advantage [95% interval]")
    for measure in ("value |error|", "hx MSE"):
        hold = errors[f"{measure} hold-last"].double().numpy()
        for name, first in TARGET_FROM.items():
            verdict = compare(errors[f"{measure} {name}"].double().numpy(), hold, valid, False, levels, alpha)
            a = verdict["advantage"]
            print(f"{measure + ' ' + name:46s} k >= {first}: {horizons_mark(verdict, first)}   "
                  f"{a['mean']:+.3f} [{a['ci95_low']:+.3f}, {a['ci95_high']:+.3f}]")


if __name__ == "__main__":
    main()
