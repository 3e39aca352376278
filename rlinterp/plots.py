"""Figures people look at. Headless (Agg); each function writes one PNG atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlinterp.files import atomic_path  # noqa: E402


def save_figure(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def policy_returns(results: dict[str, dict[str, dict[str, float]]], report: dict, path: str | Path) -> None:
    """Top row: mean return with 95% CI of every evaluated policy, one panel per level set. Bottom row: the
    paired differences the agent is judged by (same episodes), with their 95% CIs and p-values."""
    comparisons = ("agent_minus_best_constant", "greedy_agent_minus_best_constant", "agent_minus_memoryless")
    tall = 0.32 * max(map(len, results.values())) + 1.5
    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), tall + 2.5), squeeze=False,
                             sharey="row", gridspec_kw={"height_ratios": [tall, 2.0]})
    for col, (levels, policies) in enumerate(results.items()):
        ax = axes[0][col]
        names = list(policies)
        means = [policies[n]["mean_return"] for n in names]
        errors = [policies[n]["mean_return"] - policies[n]["ci95_low"] for n in names]
        colours = ["tab:blue" if n.startswith("agent") else "tab:orange" if n.startswith("memoryless")
                   else "tab:green" if n.startswith("greedy") else "tab:gray" for n in names]
        ax.barh(names, means, xerr=errors, color=colours)
        for y, name in enumerate(names):          # completion rate beside each bar
            ax.text(policies[name]["ci95_high"] + 0.1, y, f"{policies[name]['completion_rate']:.0%}", va="center",
                    fontsize=7)
        ax.set_xlim(0, 11)
        ax.set_title(levels.replace("_", " "))
        ax.set_xlabel("mean episode return (95% CI); completion rate beside each bar")
        ax = axes[1][col]
        diffs = [report[levels][c] for c in comparisons]
        ax.errorbar([d["mean"] for d in diffs], range(len(diffs)), fmt="o", color="black",
                    xerr=[[d["mean"] - d["ci95_low"] for d in diffs], [d["ci95_high"] - d["mean"] for d in diffs]])
        ax.axvline(0, color="tab:gray", lw=0.8)
        ax.set_yticks(range(len(diffs)), [c.replace("_minus_", " - ") for c in comparisons], fontsize=8)
        for y, d in enumerate(diffs):
            ax.annotate(f"p = {d['p_value']:.1g}", (d["ci95_high"], y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7)
        ax.set_xlabel("paired difference in return, same episodes (95% CI)")
    axes[0][0].invert_yaxis()
    axes[1][0].invert_yaxis()
    save_figure(fig, path)


def open_loop_strip(real, simulated, mask, path: str | Path, title: str = "") -> None:
    """Rows real | simulated | |error| of one window, columns the simulated steps; tensors (K, 3, S, S) in [0, 1].
    `mask` (K,) is 0 past the real episode's end: there the real and error cells say so instead of showing the
    store's blank padding and an error against it (the metrics leave those steps out too)."""
    steps = len(real)
    fig, axes = plt.subplots(3, steps, figsize=(0.9 * steps, 3), squeeze=False)
    error = (real - simulated).abs().mean(1, keepdim=True).expand_as(real)
    for row, (label, frames) in enumerate((("real", real), ("simulated", simulated), ("|error|", error))):
        for k in range(steps):
            ax = axes[row][k]
            if row != 1 and not mask[k]:
                ax.axis("off")
                if row == 0:
                    ax.text(0.5, 0.5, "episode\nended", ha="center", va="center", fontsize=6, color="gray",
                            transform=ax.transAxes)
            else:
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
    """One panel per measure: each predictor's mean over windows against the simulated step, its 95% interval
    (bootstrapped over levels) shaded."""
    measures = list(curves)
    cols = 4
    rows = -(-len(measures) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    colours = {"simulator": "tab:blue", "simulator_closed_loop": "tab:cyan", "simulator_teacher_forced": "tab:purple",
               "copy_last": "tab:orange", "mean_frame": "tab:gray", "base_rate": "tab:green"}
    for ax, measure in zip(axes.flat, measures):
        for predictor, stats in curves[measure].items():
            steps = range(1, len(stats["mean"]) + 1)
            ax.plot(steps, stats["mean"], label=predictor, color=colours.get(predictor))
            ax.fill_between(steps, stats["ci95_low"], stats["ci95_high"], alpha=0.2, color=colours.get(predictor))
        ax.set_title(measure.replace("_", " "), fontsize=9)
        ax.set_xlabel("simulated step k", fontsize=8)
    for ax in list(axes.flat)[len(measures):]:
        ax.axis("off")
    labelled = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(labelled.values(), labelled.keys(), loc="lower center", ncol=len(labelled), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))       # room for the legend of every predictor, below the panels
    save_figure(fig, path)


def explained_variance(ratio, shuffled_ratio, path: str | Path, title: str = "") -> None:
    """Per-PC and cumulative explained variance, beside the same for column-shuffled states."""
    import numpy as np
    fig, ax = plt.subplots(figsize=(7, 3.2))
    pcs = np.arange(1, len(ratio) + 1)
    ax.bar(pcs, ratio, color="tab:blue", label="per PC")
    ax.plot(pcs, np.cumsum(ratio), color="tab:blue", label="cumulative")
    ax.plot(np.arange(1, len(shuffled_ratio) + 1), np.cumsum(shuffled_ratio), color="tab:gray", linestyle="--",
            label="cumulative, shuffled columns")
    ax.axhline(0.95, color="k", linewidth=0.5)
    ax.set_xlabel("principal component")
    ax.set_ylabel("share of variance")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def embedding_panels(coords, colours: dict, paths: list, path: str | Path, title: str = "") -> None:
    """2-D embedding coloured by each entry of `colours` (name -> (values, categorical)); `paths` are arrays of
    row indices into coords drawn as lines (example episodes in time order)."""
    fig, axes = plt.subplots(1, len(colours), figsize=(3.6 * len(colours), 3.4), squeeze=False)
    for ax, (name, (values, categorical)) in zip(axes[0], colours.items()):
        scatter = ax.scatter(coords[:, 0], coords[:, 1], c=values, s=3, cmap="tab20" if categorical else "viridis")
        for rows in paths:
            ax.plot(coords[rows, 0], coords[rows, 1], color="k", linewidth=0.6, alpha=0.8)
            ax.scatter(coords[rows[:1], 0], coords[rows[:1], 1], color="k", marker="o", s=12)
        if not categorical:
            fig.colorbar(scatter, ax=ax, fraction=0.046)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def activity_over_time(episodes: list, path: str | Path, title: str = "") -> None:
    """Heat maps of component activations (T, C) over time, one per example episode."""
    if not episodes:
        return
    fig, axes = plt.subplots(len(episodes), 1, figsize=(8, 1.8 * len(episodes)), squeeze=False)
    for ax, activity in zip(axes[:, 0], episodes):
        limit = max(float(abs(activity).max()), 1e-6)
        image = ax.imshow(activity.T, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_ylabel("IC")
        fig.colorbar(image, ax=ax, fraction=0.03)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def cluster_summary(clusters: list[dict], action_names, path: str | Path, title: str = "") -> None:
    """Per cluster (rows): exemplar frames, then the action distribution; size, mean value and reward in the label."""
    if not clusters:
        return
    frames = max(len(c["frames"]) for c in clusters)
    fig, axes = plt.subplots(len(clusters), frames + 1, figsize=(1.3 * frames + 4, 1.4 * len(clusters)),
                             squeeze=False, gridspec_kw={"width_ratios": [1] * frames + [3]})
    for row, info in zip(axes, clusters):
        for ax in row[:frames]:
            ax.axis("off")
        for ax, frame in zip(row, info["frames"]):
            ax.imshow(frame)
        row[0].set_title(f"cluster {info['cluster']}: {info['size']} steps, value {info['value']:.2f}, "
                         f"reward {info['reward']:.2f}", fontsize=7, loc="left")
        row[-1].bar(range(len(info["actions"])), info["actions"], color="tab:blue")
        row[-1].set_xticks(range(len(action_names)))
        row[-1].set_xticklabels(action_names, rotation=90, fontsize=5)
        row[-1].set_yticks([])
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def behaviour_summary(behaviours: list[dict], action_names, path: str | Path) -> None:
    """Per behaviour (rows): action distribution, and the mean IC activations over the sample (IC x step)."""
    if not behaviours:
        return
    fig, axes = plt.subplots(len(behaviours), 2, figsize=(10, 1.6 * len(behaviours)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2]})
    limit = max(float(abs(b["ic_profile"]).max()) for b in behaviours) or 1.0
    for (bars, heat), info in zip(axes, behaviours):
        bars.bar(range(len(action_names)), info["action_distribution"], color="tab:blue")
        bars.set_xticks(range(len(action_names)))
        bars.set_xticklabels(action_names, rotation=90, fontsize=5)
        bars.set_title(f"behaviour {info['behaviour']}: {info['samples']} samples, value {info['mean_value']:.2f}",
                       fontsize=7, loc="left")
        heat.imshow(info["ic_profile"].T, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit,
                    interpolation="nearest")
        heat.set_ylabel("IC", fontsize=7)
    axes[-1, 1].set_xlabel("simulated step")
    fig.tight_layout()
    save_figure(fig, path)


def lookback(curves: dict, t: int, path: str | Path) -> None:
    """Frame-saliency magnitude at each step up to t (how far back a target looks), one line per target/mode."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, values in curves.items():
        ax.plot(range(len(values)), values, marker="o", markersize=3, label=label,
                linestyle="--" if "without" in label else "-")
    ax.axvline(t, color="k", linewidth=0.5)
    ax.set_xlabel("simulated step (target at the vertical line)")
    ax.set_ylabel("sum |d target / d frame|")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    save_figure(fig, path)


def saliency_strip(frames, maps, path: str | Path, title: str = "") -> None:
    """Greyscale frames (K, 3, S, S) in [0, 1] under a heat map of saliency magnitude (K, S, S), columns the steps
    up to the explained one (the last); one colour scale for the strip, so steps compare."""
    steps = len(frames)
    limit = max(float(maps.max()), 1e-12)
    fig, axes = plt.subplots(1, steps, figsize=(1.1 * steps + 0.6, 1.5), squeeze=False)
    for k, ax in enumerate(axes[0]):
        ax.imshow(frames[k].mean(0).numpy(), cmap="gray", vmin=0, vmax=1)
        heat = ax.imshow(maps[k].numpy(), cmap="inferno", vmin=0, vmax=limit,
                         alpha=(maps[k] / limit).clamp(0, 1).numpy() * 0.8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{k} (target)" if k == steps - 1 else str(k), fontsize=7)
    fig.colorbar(heat, ax=list(axes[0]), fraction=0.02)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def action_distributions(runs: dict, action_names, path: str | Path, title: str = "") -> None:
    """Grouped bars: each run's share of every action."""
    import numpy as np
    fig, ax = plt.subplots(figsize=(8, 3))
    width = 0.8 / len(runs)
    for i, (name, shares) in enumerate(runs.items()):
        ax.bar(np.arange(len(action_names)) + i * width, shares, width, label=name)
    ax.set_xticks(np.arange(len(action_names)) + 0.4 - width / 2)
    ax.set_xticklabels(action_names, rotation=90, fontsize=7)
    ax.set_ylabel("share of steps")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def matrix_grid(matrices: dict, path: str | Path, title: str = ""):
    """Rows: named stacks of (K, C, C) IC-by-IC matrices, [k, i, j] from IC i at step t - k to IC j at step t;
    columns: lag k. One symmetric colour scale and colour bar per row, since the kinds differ in units; set by lags
    k >= 1, as k = 0 is often an identity that would wash the rest out. Returns the (closed) figure to inspect."""
    lags = max(len(m) for m in matrices.values())
    fig, axes = plt.subplots(len(matrices), lags, figsize=(2.1 * lags + 0.8, 2.3 * len(matrices)), squeeze=False,
                             layout="constrained")
    for r, (row, (name, stack)) in enumerate(zip(axes, matrices.items())):
        limit = max(float(abs(stack[1:] if len(stack) > 1 else stack).max()), 1e-9)
        ics = range(stack.shape[-1])
        for k, ax in enumerate(row):
            if k >= len(stack):
                ax.axis("off")
                continue
            image = ax.imshow(stack[k], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"{name}\nlag k = {k}", fontsize=6)
            ax.set_xticks(ics, [str(i) for i in ics])
            ax.set_yticks(ics, [str(i) for i in ics])
            ax.tick_params(labelsize=5, length=1.5, pad=1, labelleft=k == 0, labelbottom=r == len(axes) - 1)
            if k == 0:
                ax.set_ylabel("IC at step t - k (source)", fontsize=6)
            if r == len(axes) - 1:
                ax.set_xlabel("IC at step t (target)", fontsize=6)
        fig.colorbar(image, ax=row, shrink=0.8, pad=0.01).ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
    return fig


def consistency_curves(results: dict, path: str | Path) -> None:
    """Sign agreement of cross-correlation and Jacobian per lag, per gradient mode, with the shuffled baseline."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for mode, rows in results.items():
        lags = [r["lag"] for r in rows]
        ax.plot(lags, [r["sign_agreement"] for r in rows], marker="o", label=mode.replace("_", " "))
        ax.plot(lags, [r["sign_agreement_shuffled"] for r in rows], linestyle=":", color="gray")
    ax.axhline(0.5, color="k", linewidth=0.5)
    ax.set_xlabel("lag k")
    ax.set_ylabel("sign agreement (dotted: shuffled)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def validation_effects(outcomes: dict[str, dict], path: str | Path, title: str = "") -> None:
    """One panel per outcome tested against matched random edits: their effects (grey dots) and the real edit's
    (red, with its 95% CI where it is paired), so an effect reads against what an arbitrary edit of the same size
    does. The axis spans the edit's interval and the random edits' 5th-95th percentiles, so the interval stays
    visible when a few of them run far off; those beyond are drawn at the edge as triangles and counted."""
    import numpy as np
    names = [name for name, outcome in outcomes.items() if "null_effects" in outcome]
    fig, axes = plt.subplots(1, len(names), figsize=(2.3 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        outcome = outcomes[name]
        nulls, effect = np.asarray(outcome["null_effects"]), outcome["effect"]
        interval = [outcome.get("ci95_low", effect), outcome.get("ci95_high", effect)]
        low, high = min(*interval, *np.percentile(nulls, [5, 95])), max(*interval, *np.percentile(nulls, [5, 95]))
        pad = 0.1 * (high - low) or 0.1 * max(abs(high), 1e-3)
        low, high = low - pad, high + pad
        x = np.random.default_rng(0).uniform(-0.15, 0.15, len(nulls))
        inside = (nulls >= low) & (nulls <= high)
        ax.scatter(x[inside], nulls[inside], s=10, color="0.6", label="matched random edits")
        for beyond, edge, marker in ((nulls < low, low, "v"), (nulls > high, high, "^")):
            if beyond.any():
                ax.scatter(x[beyond], np.full(beyond.sum(), edge), s=14, marker=marker, color="0.4")
                ax.annotate(f"{beyond.sum()} beyond", (0.18, edge), fontsize=6, va="center")
        if "ci95_low" in outcome:
            ax.errorbar([0], [effect], yerr=[[effect - interval[0]], [interval[1] - effect]], fmt="o",
                        color="tab:red", capsize=3, label="the edit (95% CI)")
        else:
            ax.plot([0], [effect], "o", color="tab:red", label="the edit")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylim(low, high)
        ax.set_xticks([])
        ax.set_title(f"{name.replace('_', ' ')} ({outcome.get('role', '')})\n"
                     f"p vs random edits {outcome['null_p_value']:.2g} (uncorrected)", fontsize=7)
    axes[0][0].legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def signed_unit_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """Signed maps (K, S, S) -> (K, size, size) in [-1, 1], nearest-upsampled, divided by the largest |value| over
    all K maps so that steps compare; one scale for every picture that colours positive and negative saliency."""
    scale = max(float(np.abs(maps).max()), 1e-12)
    repeat = size // maps.shape[-1]
    return np.repeat(np.repeat(maps / scale, repeat, 1), repeat, 2)


def saliency_overlay(obs: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Greyscale frames with positive saliency in blue and negative in red, scaled by the clip's largest |value|."""
    maps = signed_unit_maps(maps, obs.shape[1])
    grey = obs.mean(-1, keepdims=True) * 0.5
    out = np.repeat(grey, 3, -1)
    out[..., 2] += np.clip(maps, 0, 1) * 200
    out[..., 0] += np.clip(-maps, 0, 1) * 200
    return np.clip(out, 0, 255).astype(np.uint8)
