"""Learning curves of agent-training variants run side by side: how the CPU profile's agent was chosen.

Each variant is the params file with `key=value` overrides, written as `dvc exp run -S` takes them. Every
variant trains in its own process for at most --minutes, and its curve (env steps, wall seconds, mean return
and completion of the last 100 training episodes) goes to OUT/<name>.csv as it is made, so a variant cut
off by the time limit still leaves its curve. OUT/curves.png draws them all beside the reference PPO's
published curve and the best constant action.

    python benchmarks/agent_variants.py --out OUT --minutes 6 --device cuda \\
        default= "wide=agent.channels=[16,32,32] agent.input_pool=1"

Learning curves over env steps do not depend on the hardware, so a machine with many cores (and a GPU) can
try several CPU-profile variants in the time one takes here; steps/s on 2 cores come from ppo_throughput.py.
"""
from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# openai/train-procgen, easy, 200 levels, non-recurrent IMPALA (REFERENCE.md section 2): steps -> return
# (to 1.3M single readings, beyond that means over 200k steps around each point)
REFERENCE_CURVE = [(131e3, 5.8), (200e3, 6.7), (360e3, 7.3), (540e3, 7.6), (650e3, 8.2), (1.0e6, 8.25),
                   (1.3e6, 8.5), (1.5e6, 8.4), (2.0e6, 8.5), (2.5e6, 8.8), (3.0e6, 8.6)]
BEST_CONSTANT = 6.97  # RIGHT+UP on the default training levels (metrics/agent.json)


def with_overrides(params: dict, overrides: list[str]) -> dict:
    """`params` with each `section.key=value` (value in YAML) replaced; unknown keys are left to the config check."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"override {item!r}: expected section.key=value")
        section, name = key.split(".", 1)
        params.setdefault(section, {})[name] = yaml.safe_load(value)
    return params


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    return name, overrides.split()


def train_variant(name: str, params: dict, out: Path, device: str, threads: int) -> None:
    import torch

    from rlinterp.agent.train import train_agent
    from rlinterp.config import params_from_dict

    torch.set_num_threads(threads)
    config = params_from_dict(params)
    start = time.perf_counter()
    with (out / f"{name}.csv").open("w", newline="") as f, tempfile.TemporaryDirectory() as tmp:
        writer = csv.writer(f)
        writer.writerow(["step", "seconds", "episode_return", "completion_rate", "episode_length"])

        def log(step: int, stats: dict[str, float]) -> None:
            writer.writerow([step, round(time.perf_counter() - start, 1), stats.get("episode_return", ""),
                             stats.get("completion_rate", ""), stats.get("episode_length", "")])
            f.flush()

        train_agent(config.env, config.agent, config.train_agent, Path(tmp) / "checkpoint.pt", device=device,
                    log=log, progress=False)


def read_curve(out: Path, name: str) -> tuple[list[int], list[float]]:
    with (out / f"{name}.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["episode_return"]]
    return [int(r["step"]) for r in rows], [float(r["episode_return"]) for r in rows]


def plot_curves(out: Path, names: list[str], smooth: int = 1) -> None:
    """All curves in one figure; `smooth` > 1 averages that many consecutive updates (a 100-episode mean is
    itself noisy, +-0.4 or so), so that curves a few tenths apart can be told apart."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, name in enumerate(names):
        steps, returns = read_curve(out, name)
        kernel = np.ones(min(smooth, len(returns))) / min(smooth, len(returns))
        ax.plot(steps[len(kernel) - 1:], np.convolve(returns, kernel, mode="valid"), label=name,
                linestyle=("-", "--", ":")[i // 10 % 3])  # the colour cycle has 10 colours
    steps, returns = zip(*REFERENCE_CURVE)
    ax.plot(steps, returns, "k--", marker="o", label="reference PPO (non-recurrent, 200 levels, GPU)")
    ax.axhline(BEST_CONSTANT, color="grey", linestyle=":", label="best constant action")
    ax.axhline(max(7.5, BEST_CONSTANT + 0.8), color="red", linestyle=":", label="issue bar")
    ylabel = "mean return, last 100 training episodes" + (f" (mean of {smooth} updates)" if smooth > 1 else "")
    ax.set(xlabel="env steps", ylabel=ylabel, ylim=(0, 10))
    ax.legend(fontsize=8)
    fig.savefig(out / "curves.png", dpi=100, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help='NAME=OVERRIDES, e.g. "wide=agent.channels=[16,32,32]"')
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock limit per variant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per variant")
    parser.add_argument("--smooth", type=int, default=1, help="updates averaged per plotted point")
    parser.add_argument("--replot", action="store_true", help="train nothing: redraw OUT/curves.png from the "
                        "named variants' CSVs (several runs' CSVs can be gathered in one OUT)")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in args.variants]
    if args.replot:
        plot_curves(args.out, [name for name, _ in variants], args.smooth)
        return
    base = yaml.safe_load(Path(args.params).read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    context = mp.get_context("spawn")
    processes = [context.Process(target=train_variant, name=name, daemon=True,
                                 args=(name, with_overrides(yaml.safe_load(yaml.safe_dump(base)), overrides),
                                       args.out, args.device, args.threads))
                 for name, overrides in variants]
    for process in processes:
        process.start()
    deadline = time.monotonic() + 60 * args.minutes
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.terminate()
            process.join()
    plot_curves(args.out, [name for name, _ in variants], args.smooth)
    for name, _ in variants:
        steps, returns = read_curve(args.out, name)
        late = [r for s, r in zip(steps, returns) if s >= steps[-1] / 2] if steps else []
        if late:
            print(f"{name:24s} {steps[-1]:9d} steps: return {returns[-1]:.2f}, "
                  f"mean over the second half {np.mean(late):.2f}")


if __name__ == "__main__":
    main()
