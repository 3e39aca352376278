"""Which simulator design gives the agent frames it reads correctly? (issue 39, item 2)

Trains each design for the same CPU minutes (its windows set from its own seconds per batch, measured first), on
the training levels, then measures it as the prediction_quality stage does, on the validation levels (the test
levels stay unread): the agent's value and hx on simulated frames against holding the last real ones, and frame
SSIM against copying the last frame, teacher-forced (the posterior sees every real frame: the decoder's error
alone) and open loop (the prior and the recorded actions), paired by window with level-bootstrapped intervals.
A design meets the issue's target where teacher-forced value and hx win every horizon k >= 4, open loop every
k >= 8, and SSIM every k >= 4.

Each design's training curves and full prediction-quality metrics (with how often its open-loop windows hold a
reward and an end beside the real windows, and each window's mean value error teacher-forced and open loop) are kept
in OUT/<design>/; OUT/summary.md holds the table, where every design also meets `base` on the same windows (paired
by window: far tighter than reading two rows' intervals against the baseline). `--trained
RUN` measures a run trained elsewhere instead (RUN/params.yaml, RUN/checkpoint.pt and RUN/curves/, as
benchmarks/results/simulator_long_run/ keeps them), as the row named after RUN; `--paired-with ROW` pairs every
row with ROW instead of `base` (a long run's right pair is another long run).

`--warm-start CHECKPOINT` trains each design from a trained simulator's weights instead of from initialisation
(fresh Adam moments, a constant `--warm-lr`; designs that change a loss weight only, as the weights must fit): what
a design's loss does to a simulator already trained for hours, where minutes from scratch tell designs apart
poorly. `base` then continues the checkpoint's own losses for the same minutes, the control every row is read
against.

    python benchmarks/simulator_designs.py --minutes 10 [--designs base,features] [--out DIR]
    python benchmarks/simulator_designs.py --trained benchmarks/results/simulator_long_run
    python benchmarks/simulator_designs.py --trained RUN --paired-with simulator_long_run --out DIR
    python benchmarks/simulator_designs.py --warm-start data/simulator/checkpoint.pt --designs base,value_100 \
        --out benchmarks/results/simulator_warm_designs
"""
from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rlinterp.agent.checkpoint import load_agent, save_checkpoint
from rlinterp.plots import plt, save_figure
from rlinterp.config import params_from_dict, read_params_file
from rlinterp.files import file_sha256
from rlinterp.runtime import resolve_precision, setup_torch
from rlinterp.simulator.checkpoint import FORMAT, build_simulator, load_simulator
from rlinterp.simulator.data import simulator_split, window_loader
from rlinterp.simulator.losses import window_from_batch, window_loss
from rlinterp.simulator.prediction import (EVENTS, HIGHER_IS_BETTER, HeldoutPrediction, compare, horizons_mark,
                                           predict_heldout)
from rlinterp.simulator.train import encoder_precision, train_simulator, train_step, training_config
from rlinterp.store import RolloutStore

# name -> params changed from params.yaml ("section.key": value, as `dvc exp run -S`). features_weight 0.1 puts the
# features term beside the image term (at 1 it is ~10x the image loss on the CPU profile's simulator); value_weight
# 100 / 1000 put the value term (0.5 x squared error summed over a 24-step window, ~1.2 at today's error) at about a
# half / five times the image term (~240 at image_weight 4), where today's 10 makes it a twentieth; kl_weight 3 / 1
# let the posterior carry more of each real frame (a quarter / a twelfth of the KL's price); stoch_groups 32 doubles
# its bits (64 to 128 a step), and 32 classes as well give the original's 32 x 32 (160 bits); deeper_loosest joins
# the two from-scratch designs that beat base open loop, paired (benchmarks/results/simulator_posterior_designs).
# summary.md files written before a row's design was dropped keep it (image_weight 4 and 24-step windows, once the
# designs "sharper" and "long_windows", are today's params).
DESIGNS = {
    "base": {},
    "features": {"train_simulator.features_weight": 0.1},
    "value_100": {"train_simulator.value_weight": 100.0},
    "value_1000": {"train_simulator.value_weight": 1000.0},
    "looser_kl": {"train_simulator.kl_weight": 3.0},
    "loosest_kl": {"train_simulator.kl_weight": 1.0},
    "deeper_decoder": {"simulator.decoder_depth": 32},
    "wider_posterior": {"simulator.stoch_groups": 32},
    "original_posterior": {"simulator.stoch_groups": 32, "simulator.stoch_classes": 32},
    "deeper_loosest": {"simulator.decoder_depth": 32, "train_simulator.kl_weight": 1.0},
}
CURVE_TERMS = ("image", "open_loop_image")     # the training curves drawn in OUT/curves.png
# (measure, simulator mode) each design is compared with the paired row (`base`) on, by window (same windows, seed)
PAIRED = [("value_abs_error", "simulator_teacher_forced"), ("value_abs_error", "simulator")]
# (measure, simulator mode, baseline, first horizon the target asks to win from)
TARGETS = [("value_abs_error", "simulator_teacher_forced", "copy_last", 4),
           ("hx_mse", "simulator_teacher_forced", "copy_last", 4),
           ("value_abs_error", "simulator", "copy_last", 8),
           ("hx_mse", "simulator", "copy_last", 8),
           ("obs_ssim", "simulator", "copy_last", 4)]


def design_params(base: dict, changes: dict):
    data = json.loads(json.dumps(base))
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        data[section][key] = value
    return params_from_dict(data)


def seconds_per_batch(params, agent, store: RolloutStore, precision: torch.dtype | None, batches: int = 6
                      ) -> float:
    """One training batch's wall time for this design, as train_simulator runs it (after a warm-up batch)."""
    sim, config = params.simulator, params.train_simulator
    torch.manual_seed(config.seed)
    simulator = build_simulator(sim, agent)
    optimizer = torch.optim.Adam(simulator.parameters(), lr=config.learning_rate)
    loader = window_loader(str(store.path), simulator_split(store, config).train, sim.num_init_steps,
                           sim.num_init_steps + sim.num_sim_steps - 1, config.batch_size, config.seed, 0)
    with encoder_precision(agent, precision):
        for index in range(batches + 1):
            if index == 1:
                start = time.perf_counter()
            train_step(lambda window: window_loss(simulator, agent, window, config), simulator, optimizer,
                       window_from_batch(next(loader), simulator), config.max_grad_norm)
    return (time.perf_counter() - start) / batches


def plot_curves(out: Path, names: list[str]) -> None:
    """OUT/curves.png: each measured run's teacher-forced and open-loop image loss against the windows it trained."""
    fig, axes = plt.subplots(1, len(CURVE_TERMS), figsize=(6 * len(CURVE_TERMS), 4.5), sharex=True)
    for name in names:
        with open(out / name / "curves.csv") as f:
            rows = list(csv.DictReader(f))
        for ax, term in zip(axes, CURVE_TERMS):
            ax.plot([int(r["windows"]) for r in rows], [float(r[term]) for r in rows], label=name, lw=1)
    for ax, term in zip(axes, CURVE_TERMS):
        ax.set(xscale="log", yscale="log", xlabel="training windows", title=f"{term} loss per window")
    axes[0].legend(fontsize=8)
    fig.suptitle("training curves (a 24-step design's window sums 1.5x the frames of a 16-step one)")
    save_figure(fig, out / "curves.png")


def window_means(result: HeldoutPrediction) -> dict:
    """For each PAIRED measure and mode, every window's mean over its measured steps, with the windows' levels:
    what `paired_cells` compares a design with its reference row on."""
    means = {"levels": result.levels.tolist()}
    for measure, mode in PAIRED:
        values, mask = result.values[measure][mode], result.masks[measure].float()
        means[f"{measure} {mode}"] = ((values * mask).sum(0) / mask.sum(0).clamp_min(1)).tolist()
    return means


def paired_cells(record: dict, reference: dict | None) -> list[str]:
    """Each PAIRED measure of a design against the `reference` row (`base`, or `--paired-with`) on the same windows:
    the mean advantage (positive = the design better) with its 95% interval over levels; blank for the reference
    itself, and where either run kept no window means or they measured other windows."""
    mine, theirs = record.get("window_means"), (reference or {}).get("window_means")
    if mine is None or theirs is None or mine is theirs or mine["levels"] != theirs["levels"]:
        return [""] * len(PAIRED)
    levels = np.array(mine["levels"])
    cells = []
    for measure, mode in PAIRED:
        ours, reference_values = np.array([mine[f"{measure} {mode}"]]), np.array([theirs[f"{measure} {mode}"]])
        a = compare(ours, reference_values, np.ones_like(ours, bool), measure in HIGHER_IS_BETTER, levels)["advantage"]
        cells.append(f"{a['mean']:+.3g} [{a['ci95_low']:+.3g}, {a['ci95_high']:+.3g}]")
    return cells


def write_warm_start(path: Path, weights: dict, params, store_path: str, agent_sha256: str) -> None:
    """A checkpoint of `params`'s run at batch 0 holding `weights`: train_simulator resumes it (without optimiser
    state: fresh Adam moments), so the design trains on from those weights. Written as train_simulator writes its
    own checkpoints, which this must follow."""
    generator = torch.Generator().manual_seed(params.train_simulator.seed)
    save_checkpoint(path, {"model": weights, "batch": 0, "agent_sha256": agent_sha256,
                           "config": training_config(params.simulator, params.train_simulator, store_path),
                           "generator": generator.get_state()}, fmt=FORMAT)


def target_cells(headline: dict) -> list[str]:
    cells = []
    for measure, mode, baseline, first in TARGETS:
        verdict = headline[measure][f"{mode}_vs_{baseline}"]
        advantage = verdict["advantage"]
        cells.append(f"{advantage['mean']:+.3g} [{advantage['ci95_low']:+.3g}, {advantage['ci95_high']:+.3g}] "
                     f"{horizons_mark(verdict, first)}")
    return cells


def event_cells(record: dict) -> list[str]:
    """How often open-loop windows hold each event, simulated and real, with 'matches' where their difference's
    interval holds 0; blank for a design measured before the event shares were kept."""
    shares = record.get("window_events", {}).get("simulator")
    if shares is None:
        return [""] * len(EVENTS)
    return [f"{shares[e]['simulated']['mean']:.1%} / {shares[e]['real']['mean']:.1%}"
            f"{' matches' if shares[e]['matches'] else ''}" for e in EVENTS]


def changed_params(base: dict, run: dict) -> dict:
    """The params `run` sets otherwise than `base`, as "section.key": value."""
    return {f"{section}.{key}": value for section, values in run.items() for key, value in values.items()
            if base.get(section, {}).get(key) != value}


def measure_trained(run: Path, base: dict, agent, agent_path: str, store: RolloutStore, out: Path) -> None:
    """OUT/<run's name>/: the finished simulator trained in `run`, measured as the designs are."""
    data = read_params_file(run / "params.yaml")
    params = params_from_dict(data)
    simulator, meta = load_simulator(run / "checkpoint.pt", agent, file_sha256(agent_path),
                                     expected=params.simulator)
    if meta["batch"] * params.train_simulator.batch_size < params.train_simulator.total_windows:
        raise SystemExit(f"{run}: the run is at batch {meta['batch']}, short of its total_windows; finish it first")
    curves = {}
    for term in CURVE_TERMS:
        with open(run / f"curves/plots/metrics/{term}.tsv") as f:
            curves[term] = {int(row["step"]): row[term] for row in csv.DictReader(f, delimiter="\t")}
    result = predict_heldout(simulator, agent, store, simulator_split(store, params.train_simulator), "validation",
                             params.prediction_quality)
    (out / run.name).mkdir(parents=True, exist_ok=True)
    with open(out / run.name / "curves.csv", "w", newline="") as f:   # as the designs' runs keep theirs
        csv.writer(f).writerows([["windows", *CURVE_TERMS],
                                 *([w, *(curves[t][w] for t in CURVE_TERMS)] for w in sorted(curves["image"]))])
    (out / run.name / "prediction_quality.json").write_text(json.dumps(
        {"changes": changed_params(base, data), "windows": meta["batch"] * params.train_simulator.batch_size,
         "seconds_per_batch": None, "train_minutes": None, "threads": None, "trained_in": str(run),
         "window_events": result.event_shares, "window_means": window_means(result), **result.headline}, indent=1))
    print(f"{run.name}: {' | '.join(target_cells(result.headline))}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--agent", default="data/agent/checkpoint.pt")
    parser.add_argument("--store", default="data/rollouts.zarr")
    parser.add_argument("--minutes", type=float, default=10.0, help="training CPU minutes per design")
    parser.add_argument("--designs", default=",".join(DESIGNS))
    parser.add_argument("--out", default="benchmarks/results/simulator_designs")
    parser.add_argument("--trained", type=Path, help="measure the finished run in this folder instead of training")
    parser.add_argument("--warm-start", type=Path, help="train each design on from this simulator checkpoint's weights")
    parser.add_argument("--warm-lr", type=float, default=5e-5,
                        help="a warm start's constant learning rate (the long run's own at ~120,000 of its 200,000 "
                             "windows)")
    parser.add_argument("--paired-with", default="base",
                        help="the row every design is compared with by window in summary.md (a long run's pair is "
                             "another long run)")
    args = parser.parse_args()
    base = read_params_file(args.params)
    params = params_from_dict(base)
    device = setup_torch(params.compute)
    precision = resolve_precision(params.compute, device)
    agent, _ = load_agent(args.agent, device, expected=params.agent)
    agent.requires_grad_(False)
    sha = file_sha256(args.agent)
    store = RolloutStore(args.store)
    out = Path(args.out)
    if args.trained is not None:
        measure_trained(args.trained, base, agent, args.agent, store, out)
        write_summary(out, args.paired_with)
        return
    names = args.designs.split(",")
    warm = {}
    if args.warm_start is not None:
        warm = {"train_simulator.learning_rate": args.warm_lr, "train_simulator.learning_rate_halflife": 0}
        warm_weights = load_simulator(args.warm_start, agent, sha, expected=params.simulator)[0].state_dict()
        for name in names:
            if design_params(base, DESIGNS[name]).simulator != params.simulator:
                raise SystemExit(f"design {name} changes the simulator itself ({DESIGNS[name]}); --warm-start "
                                 f"trains designs that change loss weights only")
    for name in names:
        changes = {**DESIGNS[name], **warm}
        params = design_params(base, changes)
        config = params.train_simulator
        per_batch = seconds_per_batch(params, agent, store, precision)
        windows = max(1, int(args.minutes * 60 / per_batch)) * config.batch_size
        params = design_params(base, {**changes, "train_simulator.total_windows": windows})
        (out / name).mkdir(parents=True, exist_ok=True)
        curve = []
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            if args.warm_start is not None:
                write_warm_start(Path(tmp) / "simulator.pt", warm_weights, params, args.store, sha)
            simulator, _ = train_simulator(params.simulator, params.train_simulator, args.store, agent, sha,
                                           Path(tmp) / "simulator.pt", str(device),
                                           log=lambda step, stats: curve.append({"windows": step, **stats}),
                                           precision=precision)
        minutes = (time.perf_counter() - start) / 60
        with open(out / name / "curves.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(curve[-1]))
            writer.writeheader()
            writer.writerows(curve)
        result = predict_heldout(simulator, agent, store, simulator_split(store, params.train_simulator),
                                 "validation", params.prediction_quality)
        (out / name / "prediction_quality.json").write_text(json.dumps(
            {"changes": DESIGNS[name], "windows": windows, "seconds_per_batch": per_batch,
             "warm_start": None if args.warm_start is None else {"from": str(args.warm_start), "lr": args.warm_lr},
             "train_minutes": minutes, "threads": torch.get_num_threads(), "window_events": result.event_shares,
             "window_means": window_means(result), **result.headline}, indent=1))
        print(f"{name}: {' | '.join(target_cells(result.headline))}", flush=True)
    write_summary(out, args.paired_with)


def write_summary(out: Path, paired_with: str = "base") -> None:
    """OUT/summary.md: a row for every design measured in OUT (runs of this script may measure some each), each
    paired by window with the row `paired_with`."""
    def mode_name(mode: str) -> str:
        return mode.removeprefix("simulator").strip("_") or "open_loop"

    header = ["design", "changes", "s/batch", "windows", "train min", "threads", "last image loss",
              *(f"{m} {mode_name(mode)} vs {b} (k >= {k})" for m, mode, b, k in TARGETS),
              *(f"open-loop windows with a {e}: simulated / real" for e in EVENTS),
              *(f"{m} {mode_name(mode)} vs {paired_with}, paired" for m, mode in PAIRED)]
    table = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    measured = sorted((p.parent.name for p in out.glob("*/prediction_quality.json")),
                      key=lambda name: (name not in DESIGNS, list(DESIGNS).index(name) if name in DESIGNS else name))
    records = {name: json.loads((out / name / "prediction_quality.json").read_text()) for name in measured}
    for name in measured:       # the designs in their order, then runs trained elsewhere
        record = records[name]
        with open(out / name / "curves.csv") as f:
            last = list(csv.DictReader(f))[-1]
        per_batch, minutes, threads = record["seconds_per_batch"], record["train_minutes"], record["threads"]
        table.append("| " + " | ".join([name, json.dumps(record["changes"]),
                                        "" if per_batch is None else f"{per_batch:.2f}", str(record["windows"]),
                                        "" if minutes is None else f"{minutes:.1f}",
                                        "" if threads is None else str(threads),
                                        f"{float(last['image']):.0f}", *target_cells(record),
                                        *event_cells(record), *paired_cells(record, records.get(paired_with))]) + " |")
    note = ("Validation levels; advantage over the baseline (positive = better) with its 95% interval over levels; "
            "'met' = every horizon from k won (simultaneous band), else horizons won / needed. Each design trained "
            f"for the same CPU minutes (train min, on as many threads), torch {torch.__version__}; a "
            "row without minutes is a run trained elsewhere over sittings (its folder: the JSON's trained_in). Event "
            "columns: the share of windows the simulator expects to reward / end open loop, beside the real share "
            "(blank: measured before they were kept, and before the imagined steps' event calibration). Paired "
            f"columns: the design against {paired_with} on the same windows, each window's mean (blank: not kept).")
    warm_starts = {json.dumps(record.get("warm_start")) for record in records.values()} - {"null"}
    if warm_starts:
        note += (" Warm starts (train min and windows count from them; fresh Adam moments, a constant learning rate): "
                 + "; ".join(sorted(warm_starts)) + ".")
    (out / "summary.md").write_text(note + "\n\n" + "\n".join(table) + "\n")
    plot_curves(out, measured)
    print("\n".join(table))


if __name__ == "__main__":
    main()
