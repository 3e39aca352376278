"""Stage prediction_quality: the simulator against held-out real rollouts (the test levels; the validation levels
when comparing designs), step by step, beside trivial predictors; a curve file per measure for `dvc plots diff`,
headline metrics, and open-loop videos."""
import csv
from pathlib import Path

import numpy as np

from rlinterp import plots
from rlinterp.config import load_params
from rlinterp.runtime import setup_torch, stage_main, stage_paths
from rlinterp.files import atomic_path, write_json
from rlinterp.simulator.data import describe_split, simulator_split
from rlinterp.simulator.prediction import predict_heldout
from rlinterp.simulator.sample import frames_to_obs
from rlinterp.simulator.checkpoint import load_agent_and_simulator
from rlinterp.store import RolloutStore
from rlinterp.video import write_gif


def write_curve(path: Path, stats: dict[str, dict[str, list[float]]]) -> None:
    """k, then per predictor its mean over windows (the column named after the predictor) and 95% interval."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["k"] + [f"{p}{s}" for p in stats for s in ("", "_ci95_low", "_ci95_high")])
        for k in range(len(next(iter(stats.values()))["mean"])):
            writer.writerow([k + 1] + [f"{stats[p][s][k]:.6g}" for p in stats for s in ("mean", "ci95_low",
                                                                                           "ci95_high")])


@stage_main
def main() -> None:
    paths = stage_paths("agent", "simulator", "real", "metrics", "curves", "figures")
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    config = params.prediction_quality
    agent, simulator = load_agent_and_simulator(paths.agent, paths.simulator, params.agent, params.simulator,
                                                device)
    real = RolloutStore(paths.real)
    split = simulator_split(real, params.train_simulator)
    result = predict_heldout(simulator, agent, real, split, config.levels, config, device)
    write_json(paths.metrics, {"levels": config.levels, "windows": result.windows, "num_steps": config.num_steps,
                               "split": describe_split(real, split), "event_base_rates": result.base_rates,
                               "window_events": result.event_shares, **result.headline})
    out = Path(paths.curves)
    out.mkdir(parents=True, exist_ok=True)
    for measure, stats in result.curves.items():
        write_curve(out / f"{measure}.csv", stats)
    figures = Path(paths.figures)
    figures.mkdir(parents=True, exist_ok=True)
    plots.prediction_curves(result.curves, figures / "curves.png")
    real_obs, sim_obs = (frames_to_obs(result.example[k], simulator) for k in ("real", "simulated"))
    error = (np.abs(real_obs.astype(np.int16) - sim_obs.astype(np.int16))).astype(np.uint8)
    for b in range(min(config.videos, real_obs.shape[1])):
        steps = int(result.example["mask"][:, b].sum())
        write_gif(figures / f"open_loop_{b}.gif", np.concatenate([real_obs[:steps, b], sim_obs[:steps, b],
                                                             error[:steps, b]], axis=2), fps=6)


if __name__ == "__main__":
    main()
