"""Stage panel: export samples, episodes, hidden states, saliency, behaviours, interventions and the findings into
a static site, data/panel (open data/panel/index.html in a browser; no server or network needed)."""
from pathlib import Path

from rlinterp.config import load_params
from rlinterp.panel import PanelSources, export_panel
from rlinterp.runtime import stage_main, stage_paths
from rlinterp.files import atomic_directory, write_json

@stage_main
def main() -> None:
    paths = stage_paths("real", "samples", "analysis", "saliency", "behaviours", "behaviour_metrics",
                        "validation_metrics", "validation_videos", "findings", "site", "metrics")
    analysis = Path(paths.analysis)
    sources = PanelSources(
        real=Path(paths.real), samples=Path(paths.samples), hx_basis=analysis / "agent_hx_real/basis.npz",
        embeddings={"agent hx, simulated samples": ("sample", analysis / "agent_hx_sim/projections.npz"),
                    "agent hx, real episodes": ("real", analysis / "agent_hx_real/projections.npz")},
        saliency=Path(paths.saliency), behaviour_labels=Path(paths.behaviours) / "labels.npz",
        behaviour_metrics=Path(paths.behaviour_metrics), validation_metrics=Path(paths.validation_metrics),
        validation_videos=Path(paths.validation_videos), findings=Path(paths.findings))
    params = load_params("params.yaml")
    with atomic_directory(paths.site) as out:
        summary = export_panel(sources, out, params.panel, params.simulator.num_init_steps)
    write_json(paths.metrics, summary)
    if summary["missing"]:
        print(f"panel: exported without {', '.join(summary['missing'])} (listed on the page)")
    print(f"panel: {summary['items']} items in {paths.site}; open {paths.site}/index.html in a browser")


if __name__ == "__main__":
    main()
