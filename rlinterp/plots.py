"""Figures people look at. Headless (Agg); each function writes one PNG atomically."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def policy_returns(results: dict[str, dict[str, dict[str, float]]], path: str | Path) -> None:
    """Mean return with 95% CI of every evaluated policy, one panel per level set."""
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 0.32 * max(map(len, results.values())) + 1.5),
                             sharey=True, squeeze=False)
    for ax, (levels, policies) in zip(axes[0], results.items()):
        names = list(policies)
        means = [policies[n]["mean_return"] for n in names]
        errors = [policies[n]["mean_return"] - policies[n]["ci95_low"] for n in names]
        colours = ["tab:blue" if n.startswith("agent") else "tab:orange" if n.startswith("memoryless")
                   else "tab:gray" for n in names]
        ax.barh(names, means, xerr=errors, color=colours)
        ax.invert_yaxis()
        ax.set_title(levels.replace("_", " "))
        ax.set_xlabel("mean episode return (95% CI)")
    save_figure(fig, path)


def open_loop_strip(real, simulated, path: str | Path, title: str = "") -> None:
    """Rows real | simulated | |error| of one window, columns the simulated steps; tensors (K, 3, S, S) in [0, 1]."""
    steps = len(real)
    fig, axes = plt.subplots(3, steps, figsize=(0.9 * steps, 3), squeeze=False)
    error = (real - simulated).abs().mean(1, keepdim=True).expand_as(real)
    for row, (label, frames) in enumerate((("real", real), ("simulated", simulated), ("|error|", error))):
        for k in range(steps):
            ax = axes[row][k]
            ax.imshow(frames[k].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(label, fontsize=8)
            if row == 0:
                ax.set_title(str(k), fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def prediction_curves(curves: dict[str, dict[str, dict[str, list[float]]]], path: str | Path) -> None:
    """One panel per measure: median over windows against the simulated step, IQR shaded, per predictor."""
    measures = list(curves)
    cols = 4
    rows = -(-len(measures) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    colours = {"simulator": "tab:blue", "copy_last": "tab:orange", "mean_frame": "tab:gray"}
    for ax, measure in zip(axes.flat, measures):
        for predictor, stats in curves[measure].items():
            steps = range(1, len(stats["median"]) + 1)
            ax.plot(steps, stats["median"], label=predictor, color=colours.get(predictor))
            ax.fill_between(steps, stats["q25"], stats["q75"], alpha=0.2, color=colours.get(predictor))
        ax.set_title(measure.replace("_", " "), fontsize=9)
        ax.set_xlabel("simulated step k", fontsize=8)
    for ax in list(axes.flat)[len(measures):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
