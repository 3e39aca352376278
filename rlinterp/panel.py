"""Export what the interpretability panel shows into a static site that opens from file://, offline.

Site layout:
  index.html, panel.js, panel.css   the page (copied from rlinterp/panel_site/)
  manifest.js        `PANEL_MANIFEST = {...}`: items, embeddings, behaviours, interventions, and which parts
                     are missing and why
  items/<id>.js      one item's time series (real episode `e<N>` or simulated sample `s<N>`), loaded on demand
  frames/<id>.png    the item's frames as 64x64 tiles, TILES_PER_ROW to a row
  saliency/<id>.png  a sample's saliency overlays, tiles aligned with its frames
  videos/<name>/     the intervention GIFs (control | edited) and its effects figure

Data travel as JavaScript assignments, not JSON files, because browsers refuse fetch() on file:// pages. Every
string reaches the page through textContent, never as HTML, so names from params or stores cannot inject markup.
Each part is optional: a missing input leaves that view empty and is listed, with its reason, on the page.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rlinterp.analysis.behaviour import BehaviourLabels
from rlinterp.analysis.decompose import Basis
from rlinterp.analysis.states import Projections
from rlinterp.config import PanelConfig
from rlinterp.errors import InputError
from rlinterp.envs import ACTION_NAMES
from rlinterp.plots import signed_unit_maps
from rlinterp.readme import FINDINGS_HEADER, findings_rows, null_by_construction
from rlinterp.saliency_store import SaliencyStore
from rlinterp.store import RolloutStore, StoreError
from rlinterp.verdicts import family_p_values, outcome_table

SITE_FILES = Path(__file__).with_name("panel_site")
TILES_PER_ROW = 16
TILE = 64


@dataclass(frozen=True)
class PanelSources:
    """Where the pipeline's outputs are; the stage names them, the library assumes no paths."""
    real: Path                      # real rollouts (RolloutStore)
    samples: Path                   # simulated samples (RolloutStore)
    hx_basis: Path                  # ICA basis of the real agent hx (basis.npz)
    embeddings: dict[str, tuple[str, Path]]   # title -> ("real" | "sample", projections.npz of an analyse stage)
    saliency: Path                  # saliency store (Zarr group)
    behaviour_labels: Path          # labels.npz of the behaviours stage
    behaviour_metrics: Path         # metrics JSON of the behaviours stage
    validation_metrics: Path        # folder of one JSON per intervention
    validation_videos: Path         # folder of one GIF folder per intervention
    findings: Path                  # the metrics folder the README's findings table is rendered from


@dataclass
class Site:
    """The manifest under construction."""
    items: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    embeddings: list[dict] = field(default_factory=list)
    behaviours: list[dict] = field(default_factory=list)
    interventions: list[dict] = field(default_factory=list)
    findings: dict = field(default_factory=dict)

    def lack(self, part: str, why: str) -> None:
        self.missing.append({"part": part, "why": why})


def tile_grid(tiles: np.ndarray) -> Image.Image:
    """(T, 64, 64, C) uint8 -> one image of the tiles, TILES_PER_ROW to a row (C = 3 or 4)."""
    count, channels = len(tiles), tiles.shape[-1]
    rows = -(-count // TILES_PER_ROW)
    grid = np.zeros((rows * TILE, min(count, TILES_PER_ROW) * TILE, channels), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, TILES_PER_ROW)
        grid[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = tile
    return Image.fromarray(grid, "RGBA" if channels == 4 else "RGB")


def saliency_tiles(maps: np.ndarray) -> np.ndarray:
    """Signed maps (K, S, S) -> RGBA tiles (K, 64, 64, 4): positive blue, negative red, opacity by magnitude
    relative to the largest |value| over the K steps (so steps compare)."""
    m = signed_unit_maps(maps, TILE)
    tiles = np.zeros((*m.shape, 4), dtype=np.uint8)
    tiles[..., 0] = np.where(m < 0, 255, 0)
    tiles[..., 2] = np.where(m > 0, 255, 0)
    tiles[..., 3] = (np.abs(m) * 230).astype(np.uint8)
    return tiles


def rounded(x: np.ndarray, decimals: int = 3) -> list:
    return np.round(np.asarray(x, dtype=np.float64), decimals).tolist()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def write_script(path: Path, call: str, data: Any) -> None:
    """`call(data);` as a script file; JSON is valid JavaScript and carries no markup."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{call}({json.dumps(data, separators=(',', ':'), allow_nan=False)});\n")


def export_item(out: Path, item_id: str, episode: dict[str, np.ndarray], basis: Basis | None) -> None:
    """Frames as a tile grid and every per-step series the page plots."""
    tile_grid(episode["obs"]).save(out / "frames" / f"{item_id}.png")
    series = {"value": rounded(episode["value"]), "probs": rounded(softmax(episode["logits"].astype(np.float64))),
              "action": episode["action"].astype(int).tolist(), "reward": rounded(episode["reward"]),
              "hx": rounded(episode["hx"]),
              "ics": rounded(basis.ica(episode["hx"])) if basis is not None else None}
    write_script(out / "items" / f"{item_id}.js", "PANEL.addItem", {"id": item_id, **series})


def open_store(site: Site, part: str, path: Path) -> RolloutStore | None:
    try:
        return RolloutStore(path)
    except (FileNotFoundError, StoreError) as err:
        site.lack(part, f"{path}: {err}")
        return None


def load_basis(site: Site, path: Path) -> Basis | None:
    if not path.is_file():
        site.lack("independent components", f"{path} not found (the analyse@agent_hx_real stage makes it)")
        return None
    return Basis.load(path)


def export_items(site: Site, out: Path, sources: PanelSources, config: PanelConfig, basis: Basis | None,
                 context_steps: int) -> tuple[RolloutStore | None, RolloutStore | None]:
    """Samples first, then real episodes: the first `config.real_episodes` and those informed samples encode.

    An informed sample encodes `context_steps` real frames from its `source_step`; its step 0 is the last of them.
    A prior sample has no real counterpart; beside it the page shows the real episode of the exported informed sample
    whose latent is nearest its own (`real_relation`), so a person can judge the simulation against real frames.
    """
    samples = open_store(site, "simulated samples", sources.samples)
    real = open_store(site, "real episodes", sources.real)
    real_episodes: set[int] = set(range(min(config.real_episodes, real.num_episodes))) if real else set()
    if samples is not None:
        prior = int(samples.attrs.get("prior_samples", samples.num_episodes))
        count = min(config.samples, samples.num_episodes)
        end = int(samples.episode_ends[count - 1]) if count else 0     # one read per field, not per sample
        block = {name: np.asarray(samples[name][:end]) for name in
                 ("obs", "hx", "logits", "value", "action", "reward", "source_step")}
        for index in range(count):
            first, last = samples.episode_starts[index], samples.episode_ends[index]
            episode = {name: values[first:last] for name, values in block.items()}
            item = {"id": f"s{index}", "kind": "sample", "index": index, "length": len(episode["obs"]),
                    "return": float(episode["reward"].sum()), "real": None, "real_offset": 0,
                    "label": f"{'prior' if index < prior else 'informed'} sample {index}"}
            source = int(episode["source_step"][0])
            if real is not None and source >= 0:
                real_index = int(np.searchsorted(real.episode_ends, source, side="right"))
                real_episodes.add(real_index)
                item.update(real=f"e{real_index}", real_offset=source - int(real.episode_starts[real_index]) +
                            context_steps - 1, label=f"informed sample {index} (episode {real_index})")
            export_item(out, item["id"], episode, basis)
            site.items.append(item)
        if "latent" in samples.fields:
            pair_prior_with_nearest_informed(site.items, samples)
    if real is not None:
        info = real.episode_info()
        for index in sorted(real_episodes):
            episode = real.episode(index, ["obs", "hx", "logits", "value", "action", "reward"])
            site.items.append({"id": f"e{index}", "kind": "episode", "index": index, "length": len(episode["obs"]),
                               "return": float(info["return"][index]), "level_seed": int(info["level_seed"][index]),
                               "label": f"episode {index} (level {int(info['level_seed'][index])})"})
            export_item(out, f"e{index}", episode, basis)
    return samples, real


def pair_prior_with_nearest_informed(items: list[dict], samples: RolloutStore) -> None:
    """Give each prior sample the real counterpart of the informed sample nearest it in latent space, saying how
    near beside how far apart informed samples lie from each other: a prior draw far from every informed one has a
    counterpart in name only."""
    informed = [item for item in items if item["kind"] == "sample" and item["real"] is not None]
    prior = [item for item in items if item["kind"] == "sample" and item["real"] is None]
    if not informed or not prior:
        return
    latents = samples.rows("latent", samples.episode_starts[[item["index"] for item in prior + informed]])
    distances = np.linalg.norm(latents[:, None] - latents[None, len(prior):], axis=-1)
    among_informed = distances[len(prior):][np.triu_indices(len(informed), 1)]
    spread = f"; informed samples lie a median {np.median(among_informed):.2f} apart" if len(among_informed) else ""
    for item, row in zip(prior, distances):
        match = informed[row.argmin()]
        item.update(real=match["real"], real_offset=match["real_offset"],
                    real_relation=f"nearest real episode by latent (that of informed sample {match['index']}, at "
                                  f"{row.min():.2f}{spread})")


def export_embeddings(site: Site, sources: PanelSources, stores: dict[str, RolloutStore | None],
                      exported: set[str], max_points: int) -> None:
    """Points of every 2-D embedding whose item is exported: (item, step, x, y, cluster)."""
    for title, (kind, path) in sources.embeddings.items():
        store = stores[kind]
        if not path.is_file() or store is None:
            site.lack(f"embedding: {title}", f"{path} not found" if not path.is_file() else f"no {kind} store")
            continue
        projections = Projections.load(path)
        rows = projections.rows[projections.embedding_rows]
        episode = np.searchsorted(store.episode_ends, rows, side="right")
        prefix = "s" if kind == "sample" else "e"
        keep = np.flatnonzero([f"{prefix}{e}" in exported for e in episode])[:max_points]
        for method, coords in projections.embeddings.items():
            coords = coords[keep]
            site.embeddings.append({
                "title": f"{title}, {method}", "item": [f"{prefix}{e}" for e in episode[keep]],
                "step": (rows[keep] - store.episode_starts[episode[keep]]).astype(int).tolist(),
                "x": rounded(coords[:, 0]), "y": rounded(coords[:, 1]),
                "cluster": projections.labels[projections.embedding_rows][keep].astype(int).tolist()})


def export_saliency(site: Site, out: Path, path: Path, items: dict[str, dict]) -> None:
    """Overlays of the value target (through agent and simulated environment) at the first explained step."""
    try:
        store = SaliencyStore.load(path)
    except InputError as err:
        site.lack("saliency", str(err))
        return
    if store.combine:
        site.lack("saliency", f"{path}: combine mode (one map for several samples) has no per-sample overlay")
        return
    t = store.timesteps[0]
    maps = store.maps["with_env_grads/value/frames"]
    for position, sample in enumerate(store.samples):
        item = items.get(f"s{sample}")
        if item is None:
            continue
        tiles = saliency_tiles(np.asarray(maps[position, 0, :t + 1]).mean(1))
        tile_grid(tiles).save(out / "saliency" / f"s{sample}.png")
        item["saliency"] = {"target": "value", "timestep": t}


def export_behaviours(site: Site, sources: PanelSources, items: dict[str, dict], exemplars: int) -> None:
    if not sources.behaviour_labels.is_file() or not sources.behaviour_metrics.is_file():
        site.lack("behaviours", f"{sources.behaviour_labels} or {sources.behaviour_metrics} not found")
        return
    labels = BehaviourLabels.load(sources.behaviour_labels).behaviour
    for sample, behaviour in enumerate(labels):
        if f"s{sample}" in items:
            items[f"s{sample}"]["behaviour"] = int(behaviour)
    for summary in json.loads(sources.behaviour_metrics.read_text())["behaviours"]:
        members = [f"s{s}" for s in np.flatnonzero(labels == summary["behaviour"]) if f"s{s}" in items]
        site.behaviours.append({**summary, "exemplars": members[:exemplars]})


def finite(data: Any) -> Any:
    """`data` with every NaN or infinite number replaced by None (JSON, and so the page, has no NaN)."""
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, list):
        return [finite(value) for value in data]
    return None if isinstance(data, float) and not np.isfinite(data) else data


def export_interventions(site: Site, out: Path, sources: PanelSources) -> None:
    paths = sorted(sources.validation_metrics.glob("*.json")) if sources.validation_metrics.is_dir() else []
    if not paths:
        site.lack("interventions", f"no metrics in {sources.validation_metrics} (the validate stages make them)")
    texts = {path.stem: path.read_text() for path in paths}
    reports = {name: json.loads(text) for name, text in texts.items()}
    family = family_p_values(reports)   # corrected across every edit, as the README's findings are
    for name, text in texts.items():
        shown = {kind: sorted((sources.validation_videos / name).glob(pattern))
                 for kind, pattern in (("videos", "*.gif"), ("figures", "effects*.png"))}
        for path in shown["videos"] + shown["figures"]:
            (out / "videos" / name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / "videos" / name / path.name)
        site.interventions.append({"name": name, "table": finite(outcome_table(reports[name], family[name])),
                                   "off_manifold": finite(reports[name]["off_manifold"]), "metrics": text,
                                   **{kind: [f"videos/{name}/{p.name}" for p in paths] for kind, paths in shown.items()}})


def export_findings(site: Site, metrics: Path) -> None:
    """The README's findings table and its null-by-construction paragraph, from the same metrics and code."""
    try:
        site.findings = {"header": list(FINDINGS_HEADER), "rows": [list(row) for row in findings_rows(metrics)],
                         "caveats": null_by_construction(metrics)}
    except FileNotFoundError as err:
        site.lack("findings", f"{err.filename} not found (the analysis stages make it)")


def export_panel(sources: PanelSources, out: Path, config: PanelConfig, context_steps: int) -> dict:
    """Write the whole site into `out` (an empty folder); returns a summary for the stage's metrics.

    `context_steps` is the simulator's num_init_steps, which aligns informed samples with their real episodes.
    """
    for name in ("index.html", "panel.js", "panel.css"):
        shutil.copy2(SITE_FILES / name, out / name)
    for folder in ("items", "frames", "saliency"):
        (out / folder).mkdir()
    site = Site()
    basis = load_basis(site, sources.hx_basis)
    samples, real = export_items(site, out, sources, config, basis, context_steps)
    items = {item["id"]: item for item in site.items}
    export_embeddings(site, sources, {"sample": samples, "real": real}, set(items), config.embedding_points)
    export_saliency(site, out, sources.saliency, items)
    export_behaviours(site, sources, items, config.exemplars)
    export_interventions(site, out, sources)
    export_findings(site, sources.findings)
    manifest = {"actions": list(ACTION_NAMES), "tile": TILE, "tiles_per_row": TILES_PER_ROW,
                "ic_count": int(basis.ica_unmixing.shape[0]) if basis is not None else 0,
                "items": site.items, "missing": site.missing, "embeddings": site.embeddings,
                "behaviours": site.behaviours, "interventions": site.interventions,
                "findings": site.findings}
    write_script(out / "manifest.js", "PANEL.setManifest", manifest)
    return {"items": len(site.items), "samples": sum(i["kind"] == "sample" for i in site.items),
            "episodes": sum(i["kind"] == "episode" for i in site.items),
            "embedding_points": sum(len(e["x"]) for e in site.embeddings),
            "with_saliency": sum("saliency" in i for i in site.items), "behaviours": len(site.behaviours),
            "interventions": len(site.interventions), "missing": [m["part"] for m in site.missing]}
