"""Stage panel: export samples, episodes, hidden states, saliency, behaviours and interventions into a static
site, data/panel (open data/panel/index.html in a browser; no server or network needed)."""
from pathlib import Path

from rlinterp.config import load_params
from rlinterp.panel import PanelSources, export_panel
from rlinterp.runtime import stage_main
from rlinterp.files import atomic_directory, write_json

SITE = "data/panel"
METRICS = "metrics/panel.json"
SOURCES = PanelSources(
    real=Path("data/rollouts.zarr"), samples=Path("data/samples.zarr"),
    hx_basis=Path("data/analysis/agent_hx_real/basis.npz"),
    embeddings={"agent hx, simulated samples": ("sample", Path("data/analysis/agent_hx_sim/projections.npz")),
                "agent hx, real episodes": ("real", Path("data/analysis/agent_hx_real/projections.npz"))},
    saliency=Path("data/saliency.zarr"), behaviour_labels=Path("data/behaviours/labels.npz"),
    behaviour_metrics=Path("metrics/behaviours.json"), validation_metrics=Path("metrics/validation"),
    validation_videos=Path("plots/validation"))


@stage_main
def main() -> None:
    params = load_params("params.yaml")
    with atomic_directory(SITE) as out:
        summary = export_panel(SOURCES, out, params.panel, params.simulator.num_init_steps)
    write_json(METRICS, summary)
    if summary["missing"]:
        print(f"panel: exported without {', '.join(summary['missing'])} (listed on the page)")
    print(f"panel: {summary['items']} items in {SITE}; open {SITE}/index.html in a browser")


if __name__ == "__main__":
    main()
