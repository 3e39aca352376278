"""Do the simulator's verdicts survive another training draw? (issue 23)

The verdicts that read the simulator (prediction quality against hold-last, behaviours against the untrained agent,
saliency's model-randomisation check) come from one trained simulator. This retrains it with other values of
`train_simulator.seed` (weight init, window order, sampled states; the level split has its own
`train_simulator.split_seed` and stays put), re-runs the stages that give those verdicts as DVC experiments in
temporary copies (`dvc exp run --temp`: the workspace is not touched), and prints each verdict per seed beside the
committed run's. About 30 minutes per seed on 2 cores (train_simulator ~15).

    python benchmarks/simulator_seeds.py --seeds 1,2 [--out benchmarks/results/simulator_seeds.md]
    python benchmarks/simulator_seeds.py --seeds 1,2 --collect-only     # read experiments already run
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from rlinterp.readme import format_horizons, format_interval

TARGETS = ("prediction_quality", "behaviours", "saliency")
METRICS = ("prediction_quality.json", "behaviours.json", "saliency.json")


def experiment_name(seed: int) -> str:
    return f"simulator-seed-{seed}"


def run_experiment(seed: int) -> None:
    subprocess.run(["dvc", "exp", "run", "--temp", "-n", experiment_name(seed),
                    "-S", f"train_simulator.seed={seed}", *TARGETS], check=True)


def experiment_metrics(seed: int) -> dict[str, dict]:
    """The metrics files of the newest experiment of this name (git refs under refs/exps)."""
    refs = subprocess.run(["git", "for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps"],
                          capture_output=True, text=True, check=True).stdout.split()
    matching = [ref for ref in refs if ref.rsplit("/", 1)[-1] == experiment_name(seed)]
    if not matching:
        raise SystemExit(f"no experiment named {experiment_name(seed)}: run without --collect-only first")
    return {name: json.loads(subprocess.run(["git", "show", f"{matching[0]}:metrics/{name}"], capture_output=True,
                                            text=True, check=True).stdout) for name in METRICS}


def workspace_metrics() -> dict[str, dict]:
    return {name: json.loads(Path("metrics", name).read_text()) for name in METRICS}


def verdicts(metrics: dict[str, dict]) -> dict[str, str]:
    """One line per verdict: the number, its CI, and whether it beats its baseline or null."""
    rows = {}
    quality = metrics["prediction_quality.json"]
    for measure in ("hx_mse", "value_abs_error", "obs_mse", "policy_kl"):
        versus = quality[measure]["simulator_vs_copy_last"]
        rows[f"{measure} vs hold/copy-last: advantage (95% CI); k won / lost"] = (
            f"{format_interval(versus['advantage'], '+.3g')}; {format_horizons(versus['horizons_won'])} / "
            f"{format_horizons(versus['horizons_lost'])}")
    behaviours = metrics["behaviours.json"]
    for measure in ("silhouette", "within_sample_agreement"):
        null = behaviours["nulls"]["untrained_agent"][measure]
        beats = behaviours["beats_nulls"]["untrained_agent"][measure]
        rows[f"behaviours {measure.replace('_', ' ')} vs untrained agent"] = (
            f"{format_interval(behaviours[measure])} vs {format_interval(null)}: {'beats' if beats else 'does not'}")
    check = metrics["saliency.json"]["randomisation"]
    rows[f"saliency value maps, trained vs re-initialised rank correlation (< {check['threshold']:g})"] = (
        f"{format_interval(check['value_rank_correlation'])}: {'passes' if check['passes'] else 'fails'}")
    diff = metrics["saliency.json"]["with_env_grads"]["ic_minus_random_direction"]
    rows["saliency look-back, ICs - random directions"] = format_interval(diff, "+.3f")
    return rows


def table(columns: dict[str, dict[str, str]]) -> str:
    names = list(columns)
    lines = ["| verdict | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for row in columns[names[0]]:
        lines.append(f"| {row} | " + " | ".join(columns[name][row] for name in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2", help="train_simulator.seed values besides the workspace's")
    parser.add_argument("--collect-only", action="store_true", help="only read experiments run before")
    parser.add_argument("--out", help="also write the table (markdown) here")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not args.collect_only:
        for seed in seeds:
            run_experiment(seed)
    columns = {"workspace (committed run)": verdicts(workspace_metrics())}
    columns.update({f"seed {seed}": verdicts(experiment_metrics(seed)) for seed in seeds})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    text = (f"Verdicts that read the simulator, per training draw (`train_simulator.seed`; same held-out levels), "
            f"measured at commit {commit} by `python benchmarks/simulator_seeds.py`.\n\n" + table(columns))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
