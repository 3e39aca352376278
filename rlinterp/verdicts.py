"""How interventions' metrics become verdicts: one rule, read by the README's findings table and by the panel, so the
two can never disagree. Torch-free: it reads the validate stages' metrics JSON only.

An edit changes a primary outcome when both of its tests reject (an intersection-union test, so the larger p-value
is the test's): the paired test against the control (same levels or latents), where the outcome is paired, and the
test against the matched random edits (`null_p_value`). Those p-values are Holm-corrected across every edit and
every primary outcome together (`family_p_values`); an outcome constant by construction is no test and is left out.
"""
from __future__ import annotations

from typing import Any

ALPHA = 0.05
# Per side of an outcome, the numbers a reader compares (absent ones stay None: action change has no control).
SIDE_FIELDS = ("control", "edited", "effect", "ci95_low", "ci95_high", "median_effect", "null_p_value",
               "null_percentile")


def holm(pvalues: dict[Any, float]) -> dict[Any, float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control across the given tests)."""
    order = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[name]))
        adjusted[name] = running
    return adjusted


def outcome_p_value(outcome: dict[str, Any]) -> float:
    """One outcome's p-value before correction: the larger of the paired test's and the random-edit test's."""
    return max(outcome.get("p_value", 0.0), outcome["null_p_value"])


def family_p_values(reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Holm-adjusted p-values of every edit's primary outcomes, corrected together: {edit: {outcome: p}}."""
    adjusted = holm({(edit, name): outcome_p_value(report["outcomes"][name])
                     for edit, report in reports.items() for name in report["primary"]})
    family: dict[str, dict[str, float]] = {edit: {} for edit in reports}
    for (edit, name), p in adjusted.items():
        family[edit][name] = p
    return family


def verdict(report: dict[str, Any], outcome: str, adjusted: dict[str, float]) -> str:
    """'yes' (the edit changes this primary outcome), 'no', 'constant' (no test: nothing can move it), or
    'secondary' (reported with its interval, never tested as a finding)."""
    if report["outcomes"][outcome].get("constant"):
        return "constant"
    if outcome not in report["primary"]:
        return "secondary"
    return "yes" if adjusted[outcome] < ALPHA else "no"


def outcome_table(report: dict[str, Any], adjusted: dict[str, float]) -> list[dict[str, Any]]:
    """One row per measure, primary ones first, with the real and the simulated run side by side: control, edited,
    effect with its interval and median, the random-edit test's p and percentile, the Holm p over the whole family
    (`adjusted`, this edit's part of `family_p_values`) and the verdict; a side the report lacks is None."""
    outcomes = report["outcomes"]
    ordered = sorted(outcomes, key=lambda name: outcomes[name].get("role") != "primary")
    measures = list(dict.fromkeys(name.split("_", 1)[1] for name in ordered))

    def side(name: str) -> dict[str, Any] | None:
        if name not in outcomes:
            return None
        return {**{key: outcomes[name].get(key) for key in SIDE_FIELDS}, "holm_p": adjusted.get(name),
                "verdict": verdict(report, name, adjusted)}

    return [{"measure": measure, "primary": any(outcomes.get(f"{where}_{measure}", {}).get("role") == "primary"
                                                for where in ("real", "sim")),
             "real": side(f"real_{measure}"), "sim": side(f"sim_{measure}")} for measure in measures]
