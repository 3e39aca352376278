"""How an intervention's metrics become verdicts: one rule, read by the README's findings table and by the panel,
so the two can never disagree. Torch-free: it reads the validate stage's metrics JSON only."""
from __future__ import annotations

from typing import Any

# Per side of an outcome, the numbers a reader compares (absent ones stay None: action change has no control).
SIDE_FIELDS = ("control", "edited", "effect", "ci95_low", "ci95_high", "null_percentile")


def edit_verdict(report: dict[str, Any], outcome: str) -> bool:
    """The edit changes `outcome`: its Holm-corrected p is below 0.05 (the report lists it as significant) and its
    effect is larger than 95% of the matched random edits' effects."""
    return outcome in report["significant"] and report["outcomes"][outcome]["null_percentile"] >= 0.95


def outcome_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per measure, primary ones (those Holm-corrected) first, with the real and the simulated run side by
    side: control, edited, effect and its interval, Holm p (primary only), percentile among the matched random
    edits, and the verdict ('yes' / 'no'); a side the report lacks is None."""
    outcomes, holm = report["outcomes"], report["holm_p_values"]
    measures = list(dict.fromkeys(name.split("_", 1)[1] for name in [*holm, *outcomes]))

    def side(name: str) -> dict[str, Any] | None:
        if name not in outcomes:
            return None
        return {**{key: outcomes[name].get(key) for key in SIDE_FIELDS}, "holm_p": holm.get(name),
                "verdict": "yes" if edit_verdict(report, name) else "no"}

    return [{"measure": measure, "primary": f"real_{measure}" in holm or f"sim_{measure}" in holm,
             "real": side(f"real_{measure}"), "sim": side(f"sim_{measure}")} for measure in measures]
