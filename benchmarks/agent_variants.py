"""Learning curves of agent-training variants run side by side, against the reference PPO in 200k-step bins.

Each variant is the params file with `key=value` overrides, written as `dvc exp run -S` takes them; with
--seeds K it runs K times (train_agent.seed 0..K-1, named NAME_s0 ...). Every run trains in its own process
for at most --minutes, and its curve (env steps, wall seconds, mean return and completion of the last 100
training episodes) goes to OUT/<run>.csv as it is made, so a run cut off by the time limit still leaves its
curve. The encoder runs at `compute.precision`, as in the train_agent stage. OUT/curves.png draws each variant as the mean of its seeds in 200k-step bins, with the seeds' range
shaded, beside the mean of the three openai/train-procgen easy-200 CoinRun runs in the same bins (range shaded,
`results/parity/reference_bins.csv`) and, with --best-constant, the best constant action measured on each
variant's own training levels; OUT/bins.csv holds the same bin means.

    python benchmarks/agent_variants.py --out OUT --minutes 6 --device cuda \\
        default= "wide=agent.channels=[16,32,32] agent.input_pool=1"

Learning curves over env steps do not depend on the hardware, so a machine with many cores (and a GPU) can
try several CPU-profile variants in the time one takes here; steps/s on 2 cores come from ppo_throughput.py.
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import signal
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
import yaml

from rlinterp.config import read_params_file, read_yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The mean of openai/train-procgen's three easy-200 CoinRun training runs (non-recurrent IMPALA 16/32/32,
# eprewmean of the last 100 episodes) in 200k-step bins, with each run's bin mean: bin_start, bin_end, mean, runs.
REFERENCE_BINS = Path(__file__).parent / "results" / "parity" / "reference_bins.csv"
BIN = 200_000
# Per-update statistics written to each run's CSV: the curve, then what tells a healthy policy update.
LOGGED = ("episode_return", "completion_rate", "episode_length", "entropy", "approx_kl", "clip_fraction",
          "explained_variance", "value_loss", "grad_norm")


def with_overrides(params: dict, overrides: list[str]) -> dict:
    """`params` with each `section.key=value` (value in YAML) replaced; unknown keys are left to the config check."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"override {item!r}: expected section.key=value")
        section, name = key.split(".", 1)
        params.setdefault(section, {})[name] = read_yaml(value)
    return params


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    return name, overrides.split()


def train_variant(name: str, params: dict, out: Path, device: str, threads: int) -> None:
    import torch

    from rlinterp.agent.train import train_agent
    from rlinterp.config import params_from_dict
    from rlinterp.runtime import resolve_precision

    torch.set_num_threads(threads)
    config = params_from_dict(params)
    precision = resolve_precision(config.compute, torch.device(device))
    start = time.perf_counter()
    with (out / f"{name}.csv").open("w", newline="") as f, tempfile.TemporaryDirectory() as tmp:
        writer = csv.writer(f)
        writer.writerow(["step", "seconds", *LOGGED])

        def log(step: int, stats: dict[str, float]) -> None:
            writer.writerow([step, round(time.perf_counter() - start, 1), *(stats.get(k, "") for k in LOGGED)])
            f.flush()

        train_agent(config.env, config.agent, config.train_agent, Path(tmp) / "checkpoint.pt", device=device,
                    log=log, progress=False, precision=precision)


def read_curve(out: Path, name: str, column: str = "episode_return") -> tuple[list[int], list[float]]:
    with (out / f"{name}.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get(column)]
    return [int(r["step"]) for r in rows], [float(r[column]) for r in rows]


def csv_from_dvclive(directory: Path, out: Path) -> None:
    """A train_agent run's DVCLive curves (one TSV per statistic) as one CSV in this script's format."""
    columns = {}
    for name in LOGGED:
        path = directory / "plots" / "metrics" / f"{name}.tsv"
        rows = [line.split("\t") for line in path.read_text().splitlines()[1:]] if path.is_file() else []
        columns[name] = {int(step): value for step, value in rows}
    steps = sorted(set().union(*map(set, columns.values())))
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "seconds", *LOGGED])
        writer.writerows([step, "", *(columns[name].get(step, "") for name in LOGGED)] for step in steps)


def reference_bins() -> dict[int, tuple[float, float, float]]:
    """bin start -> (mean, lowest run, highest run) of the reference's 200k-step bins."""
    with REFERENCE_BINS.open() as f:
        rows = list(csv.DictReader(f))
    runs = [k for k in rows[0] if k.startswith("run")]
    return {int(r["bin_start"]): (float(r["mean"]), min(float(r[k]) for k in runs), max(float(r[k]) for k in runs))
            for r in rows}


def binned(steps: list[int], returns: list[float]) -> dict[int, float]:
    """bin start -> mean of the readings whose step lies in (start, start + BIN]; only complete bins."""
    steps_a, returns_a = np.asarray(steps), np.asarray(returns)
    last = steps_a.max() if len(steps_a) else 0
    return {start: float(returns_a[(steps_a > start) & (steps_a <= start + BIN)].mean())
            for start in range(0, int(last) - BIN + 1, BIN) if ((steps_a > start) & (steps_a <= start + BIN)).any()}


def variant_runs(out: Path, names: list[str]) -> dict[str, list[str]]:
    """variant -> its runs: NAME_s0, NAME_s1 ... where --seeds made them, else NAME alone."""
    groups: dict[str, list[str]] = {}
    for name in names:
        seeded = sorted(p.stem for p in out.glob(f"{name}_s*.csv"))
        groups[name] = seeded or [name]
    return groups


def plot_curves(out: Path, names: list[str], best_constant: dict[str, float]) -> None:
    """Every variant's seed-mean in 200k-step bins (seed range shaded) against the reference's bins; writes
    OUT/curves.png and OUT/bins.csv."""
    reference = reference_bins()
    fig, (ax, entropy_ax) = plt.subplots(1, 2, figsize=(16, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    table: dict[str, dict[int, float]] = {}
    for i, (name, runs) in enumerate(variant_runs(out, names).items()):
        entropy = [binned(*read_curve(out, run, "entropy")) for run in runs]
        shared = sorted(set.intersection(*(set(b) for b in entropy)))
        entropy_ax.plot(np.array(shared) + BIN / 2, [np.mean([b[s] for b in entropy]) for s in shared], marker=".",
                        linestyle=("-", "--", ":")[i // 10 % 3])
        per_run = [binned(*read_curve(out, run)) for run in runs]
        starts = sorted(set.intersection(*(set(b) for b in per_run)))
        if not starts:
            continue
        values = np.array([[b[s] for s in starts] for b in per_run])
        table[name] = dict(zip(starts, values.mean(0)))
        centres = np.array(starts) + BIN / 2
        line, = ax.plot(centres, values.mean(0), marker=".", linestyle=("-", "--", ":")[i // 10 % 3],
                        label=f"{name} ({len(runs)} seed{'s' * (len(runs) > 1)})")
        if len(runs) > 1:
            ax.fill_between(centres, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
        if name in best_constant:
            ax.axhline(best_constant[name], color=line.get_color(), linestyle=":", lw=1)
    last = max((max(t) for t in table.values()), default=3 * BIN) + BIN
    starts = [s for s in sorted(reference) if s < last]
    centres = np.array(starts) + BIN / 2
    ax.plot(centres, [reference[s][0] for s in starts], "k--", marker="o", ms=3,
            label="reference PPO: mean of 3 runs (non-recurrent 16/32/32, 200 levels)")
    ax.fill_between(centres, [reference[s][1] for s in starts], [reference[s][2] for s in starts], color="k",
                    alpha=0.1)
    ax.set(xlabel="env steps", ylabel="mean return of the last 100 training episodes, 200k-step bins",
           ylim=(3, 10), title="dotted: best constant action on each variant's training levels")
    ax.legend(fontsize=8)
    entropy_ax.set(xlabel="env steps", ylabel="policy entropy (nats), 200k-step bins",
                   title=f"a policy drifting towards random rises to ln 15 = {np.log(15):.2f}")
    fig.savefig(out / "curves.png", dpi=100, bbox_inches="tight")
    with (out / "bins.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["bin_start", "bin_end", "reference", *table])
        for start in sorted(set().union(*table.values())) if table else []:
            writer.writerow([start, start + BIN, f"{reference[start][0]:.3f}" if start in reference else "",
                             *(f"{t[start]:.3f}" if start in t else "" for t in table.values())])


def measure_best_constant(params: dict, episodes: int = 256) -> float:
    """Mean return of the best constant action on the training levels of `params`' environment."""
    from rlinterp.agent.evaluate import ConstantPolicy, play_episodes
    from rlinterp.config import params_from_dict
    from rlinterp.envs import NUM_ACTIONS

    config = params_from_dict(params)
    envs = 64
    return max(float(play_episodes(config.env, ConstantPolicy(a), envs, episodes // envs, seed=1,
                                   start_level=config.env.start_level, num_levels=config.env.num_levels,
                                   progress=False).returns.mean()) for a in range(NUM_ACTIONS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help='NAME=OVERRIDES, e.g. "wide=agent.channels=[16,32,32]"')
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock limit per variant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per variant")
    parser.add_argument("--seeds", type=int, default=1, help="runs per variant (train_agent.seed 0..K-1)")
    parser.add_argument("--best-constant", action="store_true", help="measure the best constant action on each "
                        "variant's training levels (256 episodes per action) and draw it beside the curve")
    parser.add_argument("--replot", action="store_true", help="train nothing: redraw OUT/curves.png from the "
                        "named variants' CSVs (several runs' CSVs can be gathered in one OUT)")
    parser.add_argument("--from-dvclive", metavar="NAME=DIR", action="append", default=[],
                        help="with --replot: first write OUT/NAME.csv from a train_agent stage's DVCLive curves in "
                        "DIR (e.g. the long run's), so it is drawn beside the variants")
    args = parser.parse_args()
    for item in args.from_dvclive:
        name, _, directory = item.partition("=")
        csv_from_dvclive(Path(directory), args.out / f"{name}.csv")
    variants = [parse_variant(v) for v in args.variants]
    base = read_params_file(args.params)
    configs = {name: with_overrides(yaml.safe_load(yaml.safe_dump(base)), overrides) for name, overrides in variants}
    args.out.mkdir(parents=True, exist_ok=True)
    constants_path = args.out / "best_constant.json"
    constants = json.loads(constants_path.read_text()) if constants_path.exists() else {}
    if args.best_constant:
        constants.update({name: measure_best_constant(config) for name, config in configs.items()
                          if name not in constants})
        constants_path.write_text(json.dumps(constants, indent=2) + "\n")
    if args.replot:
        plot_curves(args.out, list(configs), constants)
        return
    runs = {(f"{name}_s{seed}" if args.seeds > 1 else name): with_overrides(
                yaml.safe_load(yaml.safe_dump(config)), [f"train_agent.seed={seed}"] if args.seeds > 1 else [])
            for name, config in configs.items() for seed in range(args.seeds)}
    context = mp.get_context("spawn")
    processes = [context.Process(target=train_variant, name=run, daemon=True,
                                 args=(run, config, args.out, args.device, args.threads))
                 for run, config in runs.items()]
    for process in processes:
        process.start()
    # A SIGTERM to this script (e.g. pkill) must stop its runs too: spawned children outlive a killed parent.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    deadline = time.monotonic() + 60 * args.minutes
    try:
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    plot_curves(args.out, list(configs), constants)
    reference = reference_bins()
    for run in runs:
        bins = binned(*read_curve(args.out, run))
        gaps = [f"{s / 1e6:.1f}M {bins[s]:.2f} ({bins[s] - reference[s][0]:+.2f})" for s in sorted(bins)[-3:]]
        print(f"{run:24s} last bins, return (minus the reference's): {'; '.join(gaps)}")


if __name__ == "__main__":
    main()
