"""The README's result tables, rendered from the committed metrics so that no number in it is typed by hand.

`python -m rlinterp.readme` rewrites every block between `<!-- metrics:NAME -->` and `<!-- /metrics:NAME -->`
in README.md from `metrics/`; `tests/test_readme.py` fails when the README and the metrics disagree.
"""
from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from rlinterp.verdicts import family_p_values, outcome_p_value, verdict

LEVELS = ("train_levels", "unseen_levels")


def _ci(result: dict) -> str:
    return f"{result['mean_return']:.2f} ({result['ci95_low']:.2f} to {result['ci95_high']:.2f})"


def _paired(diff: dict) -> str:
    p = diff["p_value"]
    return (f"{diff['mean']:+.2f} ({diff['ci95_low']:+.2f} to {diff['ci95_high']:+.2f}), "
            f"p {'< 1e-4' if p < 1e-4 else f'= {p:.2g}'}")


def agent_table(metrics: Path) -> str:
    """The studied agent beside its baselines and the paired differences it is judged by."""
    agent = json.loads((metrics / "agent.json").read_text())
    train_agent = json.loads((metrics / "train_agent.json").read_text())
    sides = [agent[levels] for levels in LEVELS]
    best = sides[0]["best_constant"]["action_name"]
    rows = [("agent (sampled actions)", lambda s: _ci(s["agent"]), lambda s: s["agent"]["completion_rate"]),
            ("agent, hx zeroed every step", lambda s: _ci(s["memoryless_agent"]),
             lambda s: s["memoryless_agent"]["completion_rate"]),
            ("agent, most likely action", lambda s: _ci(s["greedy_agent"]),
             lambda s: s["greedy_agent"]["completion_rate"]),
            (f"best constant action ({best} on training levels)", lambda s: _ci(s["best_constant"]),
             lambda s: s["best_constant"]["completion_rate"]),
            ("uniformly random", lambda s: _ci(s["random"]), lambda s: s["random"]["completion_rate"])]
    lines = [f"Agent after {train_agent['total_steps']:,} env steps ({train_agent['train_seconds'] / 3600:.1f} h "
             f"of training at {train_agent['steps_per_s']:,.0f} env steps/s); {agent['episodes_per_policy']:,} "
             "episodes per policy and level set, the same level seeds for every policy.", "",
             "| policy | training levels: return (95% CI) | complete | unseen levels: return (95% CI) | complete |",
             "| --- | --- | --- | --- | --- |"]
    for name, value, completion in rows:
        lines.append(f"| {name} | " + " | ".join(f"{value(s)} | {completion(s):.0%}" for s in sides) + " |")
    lines += ["", "| paired over the same episodes | training levels | unseen levels |", "| --- | --- | --- |"]
    for key, label in (("agent_minus_best_constant", "agent - best constant action"),
                       ("greedy_agent_minus_best_constant", "most likely action - best constant action"),
                       ("agent_minus_memoryless", "agent - agent with hx zeroed")):
        lines.append(f"| {label} | " + " | ".join(_paired(s[key]) for s in sides) + " |")
    lines.append("| steps where the most likely action is not the best constant one | "
                 + " | ".join(f"{s['greedy_actions_not_best_constant']:.0%}" for s in sides) + " |")
    bar = agent["bar"]
    lines += ["", "Issue-22 bar: " + "; ".join(f"{name.replace('_', ' ')} **{'yes' if ok else 'no'}**"
                                                for name, ok in bar.items()) + "."]
    return "\n".join(lines)


def format_horizons(ks: list[int]) -> str:
    """[1, 2, 3, 7, 8] -> '1-3, 7-8'; [] -> 'none'."""
    runs: list[list[int]] = []
    for k in ks:
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs) or "none"


def prediction_table(metrics: Path) -> str:
    """The simulator against its trivial predictors, per measure and horizon: open loop, and teacher-forced (the
    decoder's error alone) for what the agent reads off frames."""
    quality = json.loads((metrics / "prediction_quality.json").read_text())
    split = quality["split"]
    lines = [f"{quality['windows']} held-out windows of {quality['num_steps']} simulated steps, from "
             f"{len(split[quality['levels'] + '_level_seeds'])} {quality['levels']} levels no training window came "
             f"from{' and no design was chosen on' if quality['levels'] == 'test' else ''}; open loop: the prior and the recorded actions; teacher-forced: the "
             "posterior sees every real frame. Advantage = how much better the simulator is (positive: better), "
             "paired by window, 95% CI bootstrapped over levels; horizons k where a band simultaneous over every "
             "horizon, Bonferroni-corrected across every comparison in the metrics, lies above / below 0. The simulator "
             "and baseline columns pool every step; the advantage averages per-window means (a window an episode end "
             "cuts short weighs as much as a whole one), so near 0 the two can differ in sign.", "",
             "| measure | mode | baseline | simulator | baseline's | advantage (95% CI) | k won | k lost |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    modes = (("simulator", "open loop", None),
             ("simulator_teacher_forced", "teacher-forced", ("obs_ssim", "hx_mse", "value_abs_error")))
    for mode, mode_name, measures in modes:
        for measure, result in quality.items():
            if not isinstance(result, dict) or "mean" not in result or (measures and measure not in measures):
                continue
            for key, verdict in result.items():
                if not key.startswith(f"{mode}_vs_"):
                    continue
                baseline = key.removeprefix(f"{mode}_vs_")
                a = verdict["advantage"]
                lines.append(f"| {measure.replace('_', ' ')} | {mode_name} | {baseline.replace('_', ' ')} | "
                             f"{result['mean'][mode]:.3g} | {result['mean'][baseline]:.3g} | "
                             f"{a['mean']:+.3g} ({a['ci95_low']:+.3g} to {a['ci95_high']:+.3g}) | "
                             f"{format_horizons(verdict['horizons_won'])} | "
                             f"{format_horizons(verdict['horizons_lost'])} |")
    return "\n".join(lines)


def format_interval(d: dict, fmt: str = ".2f") -> str:
    """{'mean', 'ci95_low', 'ci95_high'} -> 'mean (low to high)'."""
    return f"{d['mean']:{fmt}} ({d['ci95_low']:{fmt}} to {d['ci95_high']:{fmt}})"


def _yes(ok: bool) -> str:
    return "**yes**" if ok else "no"


# Nulls that anything with smooth structure beats: passing them is a sanity check, not a finding.
SANITY_NULLS = ("gaussian", "shuffled_columns")
# What each analysed state is, for the findings table.
ANALYSED = {"agent_hx_real": "real agent hx", "agent_hx_sim": "simulated agent hx", "env_h": "simulator state",
            "latent": "bottleneck latents"}


def _verdict(null: str, beats: bool) -> str:
    """'beats it' against a null that can fail; against a sanity null, whether the check passed."""
    if null in SANITY_NULLS:
        return "a check: " + ("passed" if beats else "**failed**")
    return _yes(beats)


def _null(name: str, interval: dict) -> str:
    """A null's name and interval; a null pooled over draws (`rlinterp.intervals.envelope`) says how many."""
    draws = f" ({len(interval['draws'])} initialisations)" if "draws" in interval else ""
    return f"{name.replace('_', ' ')}{draws}: {format_interval(interval)}"


FINDINGS_HEADER = ("analysis", "measured", "null or baseline", "beats it")


def findings_table(metrics: Path) -> str:
    """The findings as a Markdown table (the panel shows the same rows)."""
    lines = ["| " + " | ".join(FINDINGS_HEADER) + " |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in findings_rows(metrics)]
    return "\n".join(lines)


def findings_rows(metrics: Path) -> list[tuple[str, str, str, str]]:
    """Every later analysis: its headline number beside the null or baseline it must beat, and whether it does."""
    read = lambda name: json.loads((metrics / name).read_text())  # noqa: E731
    sample, behaviours = read("sample.json"), read("behaviours.json")
    saliency, dynamics = read("saliency.json"), read("dynamics.json")
    rows = []
    for kind in ("prior", "informed"):
        s = sample[kind]
        windows = ("the same episodes' steps the samples simulate" if kind == "informed"
                   else "windows from every step of the test-level episodes")
        stored, total = s["samples"], s["event_samples"]
        counted = f"{total:,}" if total == stored else f"{total:,}: the {stored:,} stored and {total - stored:,} more"
        for event, happens in (("reward", "reward"), ("end", "end")):
            e = s[event]
            rows.append((f"{kind} samples ({counted}) that {happens} within {s['window_steps']} steps (95% CI)",
                         format_interval(e["simulated"], ".1%"), f"real: {format_interval(e['real'], '.1%')}, "
                         f"{windows}", "matches: " + ("yes" if e["matches"] else "**no**")))
    quality = read("prediction_quality.json")
    for event, happens in (("reward", "reward"), ("done", "end")):
        e = quality["window_events"]["simulator"][event]
        rows.append((f"{quality['levels']}-level windows that {happens} within {quality['num_steps']} steps, as the "
                     "simulator expects open loop (95% CI over levels)", format_interval(e["simulated"], ".1%"),
                     f"real: {format_interval(e['real'], '.1%')}, the same windows",
                     "matches: " + ("yes" if e["matches"] else "**no**")))
    for measure in ("silhouette", "within_sample_agreement"):
        for null in ("untrained_agent", "gaussian"):
            rows.append((f"behaviours: {measure.replace('_', ' ')}, mean over samples (95% CI)",
                         format_interval(behaviours[measure]), _null(null, behaviours["nulls"][null][measure]),
                         _verdict(null, behaviours["beats_nulls"][null][measure])))
    for path in sorted((metrics / "analysis").glob("*.json")):
        analysis = json.loads(path.read_text())
        ours = analysis["like_for_like"]
        for measure, label in (("ica_mean_abs_excess_kurtosis", "ICs' mean absolute excess kurtosis"),
                               ("ica_median_abs_excess_kurtosis", "ICs' median absolute excess kurtosis"),
                               ("silhouette", f"cluster silhouette in {ours['silhouette_dims']} PCs")):
            for null in ("untrained_agent", "gaussian", "shuffled_columns"):
                if null not in analysis["nulls"]:
                    continue
                theirs = analysis["nulls"][null][measure]
                rows.append((f"{ANALYSED.get(path.stem, path.stem)}: {label} (95% CI over episodes; measured as the "
                             f"nulls are, {analysis['measured_rows']} of {analysis['rows']} rows)",
                             format_interval(ours[measure]), _null(null, theirs),
                             _verdict(null, ours[measure]["ci95_low"] > theirs["ci95_high"])))
    check = saliency["randomisation"]
    for name, target in check["targets"].items():
        rows.append((f"saliency: rank correlation of {name.replace('_', ' ')} maps, trained vs fully re-initialised "
                     f"agent (95% CI; the cascade over {len(check['layers'])} layer groups in metrics/saliency.json)",
                     format_interval(target["trained_vs_randomised"][-1]),
                     f"two fully re-initialised agents: {format_interval(target['randomised_vs_randomised'])}",
                     _yes(target["passes"])))
    diff = saliency["with_env_grads"]["ic_minus_random_direction"]
    rows.append(("saliency: share of frame saliency before the explained step, hx ICs - random hx directions, "
                 "paired by sample (95% CI; the claim: ICs look back further)", format_interval(diff, "+.3f"),
                 "0 (ICs look back as far as random directions)",
                 "no: the opposite, ICs look back less" if diff["ci95_high"] < 0 else _yes(diff["ci95_low"] > 0)))
    lags = dynamics["groups"]["all"]["consistency_with_env"]
    agreeing = [lag["lag"] for lag in lags if lag["p_value"] < 0.05 / len(lags)]
    per_lag = " ".join(f"{lag['sign_agreement']:.2f}" for lag in lags)
    rows.append((f"dynamics: correlation and Jacobian signs agree, all samples (per lag {lags[0]['lag']} to "
                 f"{lags[-1]['lag']}: {per_lag})",
                 f"{dynamics['sign_agreement_with_env']:.3f}",
                 f"shuffled: {dynamics['sign_agreement_with_env_shuffled']:.3f}; lags with permutation p < 0.05 / "
                 f"{len(lags)} (Bonferroni): {len(agreeing)} of {len(lags)}"
                 + (f" ({format_horizons(agreeing)})" if agreeing else ""), _yes(bool(agreeing))))
    rows += edit_rows(metrics)
    return rows


def validation_reports(metrics: Path) -> dict[str, dict]:
    """Every intervention's metrics (`metrics/validation/NAME.json`), by name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted((metrics / "validation").glob("*.json"))}


def edit_rows(metrics: Path) -> list[tuple[str, str, str, str]]:
    """Each edit's primary outcomes, Holm-corrected across every edit and outcome together (rlinterp.verdicts),
    and the value effect beyond its one-step readout, a secondary outcome with its interval only."""
    reports = validation_reports(metrics)
    family = family_p_values(reports)
    tests = sum(len(p) for p in family.values())
    rows = []
    for name, edit in reports.items():
        outcomes, sizes = edit["outcomes"], edit["off_manifold"]["real"]
        left = f"states outside the unedited ball: {sizes['edited']:.1%} of the edit's steps"
        for outcome in edit["primary"]:
            o = outcomes[outcome]
            paired = "ci95_low" in o
            effect = (f"{o['effect']:+.3g} ({o['ci95_low']:+.3g} to {o['ci95_high']:+.3g}), median "
                      f"{o['median_effect']:+.3g}" if paired else f"{o['effect']:.3g}")
            rows.append((f"edit {name}: {outcome.replace('_', ' ')}, edited - control{' (95% CI)' * paired}",
                         effect, f"{edit['random_edits']} matched random edits: {_spread(o['null_effects'])}, p "
                         f"{o['null_p_value']:.2g} ({o['null_test'].replace('_', ' ')}); test p "
                         f"{outcome_p_value(o):.2g}, Holm over {tests}: {family[name][outcome]:.2g}; {left}",
                         _yes(verdict(edit, outcome, family[name]) == "yes")))
        beyond = outcomes["real_value_beyond_readout"]
        rows.append((f"edit {name}: real value beyond its one-step readout, edited - read out (95% CI; secondary)",
                     format_interval({"mean": beyond["effect"], **beyond}, "+.3f"),
                     f"one-step readout alone: {outcomes['real_value_readout']['effect']:+.3f} of "
                     f"{outcomes['real_value']['effect']:+.3f}", "secondary: not tested"))
    return rows


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):+.3g} +- {statistics.stdev(values):.2g}" if len(values) > 1 else "-"


def null_by_construction(metrics: Path) -> str:
    """What the current agent and simulator make null by construction, said from the metrics, so each sentence goes
    away when the agent or simulator that made it true changes."""
    agent = json.loads((metrics / "agent.json").read_text())["train_levels"]
    behaviours = json.loads((metrics / "behaviours.json").read_text())["behaviours"]
    sentences = []
    greedy_other = agent["greedy_actions_not_best_constant"]
    if greedy_other < 0.10:
        sentences.append(
            f"The agent's most likely action is {agent['best_constant']['action_name']}, the best constant action, at "
            f"{1 - greedy_other:.0%} of steps on its training levels (`metrics/agent.json`): whatever concerns actions "
            f"(action saliency, action agreement, the edits' action changes) is null by construction, and a return "
            f"effect can only come through sampled actions.")
    tops = {b["top_action"] for b in behaviours}
    if len(tops) == 1 and min(max(b["action_distribution"]) for b in behaviours) >= 0.99:
        sentences.append(f"Every behaviour cluster's actions are {tops.pop()} "
                         f"(`metrics/behaviours.json`): the clusters cannot be told apart by what the agent does.")
    edits = list(validation_reports(metrics).values())
    constant = [name for name in (edits[0]["outcomes"] if edits else {})
                if all(name in edit.get("constant", ()) for edit in edits)]
    if constant:
        sentences.append(f"{', '.join(f'`{n}`' for n in constant)} {'takes' if len(constant) == 1 else 'take'} the "
                         f"same value for every edit and every matched random edit (`metrics/validation/`): constant "
                         f"by construction, so not a test.")
    return " ".join(sentences) or "Nothing in these results is null by construction for the current agent."


TABLES: dict[str, Callable[[Path], str]] = {"agent": agent_table, "prediction": prediction_table,
                                            "findings": findings_table, "null_by_construction": null_by_construction}


def render(readme: str, metrics: Path) -> str:
    """`readme` with every metrics block re-rendered."""
    def block(match: re.Match) -> str:
        name = match.group(1)
        if name not in TABLES:
            raise KeyError(f"README block metrics:{name}: no such table (expected one of {', '.join(TABLES)})")
        return f"<!-- metrics:{name} -->\n{TABLES[name](metrics)}\n<!-- /metrics:{name} -->"
    return re.sub(r"<!-- metrics:(\w+) -->.*?<!-- /metrics:\1 -->", block, readme, flags=re.S)


def main(root: Path = Path(".")) -> None:
    path = root / "README.md"
    path.write_text(render(path.read_text(), root / "metrics"))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("."))
