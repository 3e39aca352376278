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
