"""The panel: what the export writes, and the page itself in a real headless Chromium."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlinterp.analysis.behaviour import BehaviourLabels
from rlinterp.analysis.decompose import Basis
from rlinterp.analysis.states import Projections
from rlinterp.config import PanelConfig
from rlinterp.panel import TILE, TILES_PER_ROW, PanelSources, export_panel
from rlinterp.saliency_store import KINDS, MODES, SaliencyStore
from rlinterp.store import FieldSpec, RolloutWriter, real_rollout_fields

from tests.conftest import ROOT

HIDDEN, ACTIONS, CONTEXT = 8, 15, 3
HOSTILE = '<img src=x onerror="window.__injected = 1">'
SCREENSHOTS = ROOT / "plots" / "panel"


def side(control, edited, low, high, percentile, p=0.01, null_p=0.5, role="secondary", median=None):
    return {"control": control, "edited": edited, "effect": edited - control, "ci95_low": low, "ci95_high": high,
            "median_effect": edited - control if median is None else median, "p_value": p,
            "null_effects": [0.1, -0.2], "null_percentile": percentile, "null_p_value": null_p, "null_test": "normal",
            "null_fit_p": 0.4, "null_monte_carlo_p": 1 / 3, "constant": False, "role": role}


def change(effect, null_p, constant=False):
    return {"effect": effect, "null_effects": [0.0, 0.1], "null_percentile": 0.25, "null_p_value": null_p,
            "null_test": "monte_carlo", "null_fit_p": float("nan"), "null_monte_carlo_p": null_p,
            "constant": constant, "role": "primary"}


# A validate stage's report, as its metrics file holds it; one outcome's name is hostile markup.
VALIDATION_REPORT = {
    "intervention": {"source": [0], "target": [None]}, "random_edits": 2,
    "outcomes": {"real_return": side(6.5, 5.9, -1.1, -0.1, 0.9, role="primary", median=float("nan")),
                 "real_completed": side(0.8, 0.4, -0.5, -0.3, 1.0, p=0.0001, null_p=0.0002, role="primary"),
                 "real_value": side(6.761569, 6.198654, -0.77866, -0.34716, 1.0),
                 "real_length": side(73.05, 75.2, -1.18, 5.62, 0.7),
                 "real_action_change": change(0.0133, 0.76),
                 "sim_value": side(7.266, 5.711, -1.588, -1.519, 1.0),
                 "sim_action_change": change(0.0, 1.0, constant=True),
                 f"sim_{HOSTILE}": side(1.0, 2.0, 0.5, 1.5, 0.5)},
    "primary": ["real_return", "real_completed", "real_action_change"], "constant": ["sim_action_change"],
    "off_manifold": {where: {"radius": 3.2, "edited": 0.012, "random_edits": [0.0, 0.004],
                             "edited_largest_distance": 4.1} for where in ("real", "sim")}}


def write_store(path: Path, lengths: list[int], rng: np.random.Generator, source_steps: list[int] | None = None):
    fields = real_rollout_fields(HIDDEN, ACTIONS)
    if source_steps is not None:
        fields.update(source_step=FieldSpec((), np.int64), latent=FieldSpec((4,), np.float32))
    with RolloutWriter(path, fields, {"prior_samples": sum(s < 0 for s in source_steps or [])}, 64, 256) as writer:
        for e, length in enumerate(lengths):
            blocks = rng.integers(0, 256, (length, 8, 8, 3), dtype=np.uint8)   # blocky, like game frames
            steps = {"obs": blocks.repeat(8, axis=1).repeat(8, axis=2),
                     "hx": rng.uniform(-1, 1, (length, HIDDEN)).astype(np.float32),
                     "logits": rng.normal(size=(length, ACTIONS)).astype(np.float32),
                     "value": rng.normal(size=length).astype(np.float32),
                     "action": rng.integers(0, ACTIONS, length).astype(np.int32),
                     "reward": (np.arange(length) == length - 1).astype(np.float32) * 10,
                     "done": np.arange(length) == length - 1, "level_seed": np.full(length, 100 + e)}
            if source_steps is not None:
                steps["source_step"] = np.full(length, source_steps[e], dtype=np.int64)
                steps["latent"] = np.repeat(rng.normal(size=(1, 4)).astype(np.float32), length, axis=0)
            writer.add_episode(steps, **{"return": float(steps["reward"].sum()), "level_seed": 100 + e,
                                         "completed": True})


def build_inputs(root: Path, samples: int = 6, sample_steps: int = 8, parts: tuple[str, ...] = (
        "basis", "embedding", "saliency", "behaviours", "validation", "findings")) -> PanelSources:
    """Synthetic pipeline outputs: 5 real episodes, `samples` samples (the last two informed, from episodes 3
    and 4), and whichever optional parts are named."""
    rng = np.random.default_rng(0)
    real_lengths = [12, 20, 9, 15, 30]
    write_store(root / "rollouts.zarr", real_lengths, rng)
    starts = np.concatenate([[0], np.cumsum(real_lengths)[:-1]])
    sources_of = [-1] * (samples - 2) + [int(starts[3]), int(starts[4]) + 2]
    write_store(root / "samples.zarr", [sample_steps] * samples, rng, sources_of)
    if "basis" in parts:
        c = 4
        Basis(mean=np.zeros(HIDDEN), scale=np.ones(HIDDEN), pca_components=np.eye(HIDDEN),
              pca_variance=np.ones(HIDDEN), pca_variance_ratio=np.full(HIDDEN, 1 / HIDDEN),
              ica_unmixing=np.eye(c, HIDDEN), ica_directions=np.eye(c, HIDDEN), ica_variance_ratio=np.full(c, 0.1),
              nmf_components=np.eye(c, HIDDEN), nmf_offset=np.zeros(HIDDEN)).save(root / "basis.npz")
    if "embedding" in parts:
        n = samples * sample_steps
        shown = rng.choice(n, min(n, 4000), replace=False)
        Projections(rows=np.arange(n), pca=np.zeros((n, 2)), ica=np.zeros((n, 2)), labels=rng.integers(0, 5, n),
                    embedding_rows=shown, embeddings={"tsne": rng.normal(size=(len(shown), 2))}
                    ).save(root / "projections.npz")
    if "saliency" in parts:
        shapes = {"frames": (3, 3, 16, 16), "agent_hx": (3, HIDDEN), "env_h": (3, 8), "latent": (8,)}
        SaliencyStore([0, 1], [2], ["value"], False, {
            f"{mode}/value/{kind}": rng.normal(size=(2, 1, *shapes[kind])) for mode in MODES for kind in KINDS}
        ).save(root / "saliency.zarr")
    if "behaviours" in parts:
        labels = np.arange(samples) % 3
        BehaviourLabels(window_labels=labels[:, None], behaviour=labels).save(root / "labels.npz")
        (root / "behaviours.json").write_text(json.dumps({"behaviours": [
            {"behaviour": b, "samples": int((labels == b).sum()), "mean_value": 0.5, "top_action": HOSTILE}
            for b in range(3)]}))
    if "validation" in parts:
        (root / "validation" / "collapse_ic0").mkdir(parents=True)
        (root / "validation" / "collapse_ic0.json").write_text(json.dumps(VALIDATION_REPORT))
        Image.new("RGB", (128, 64), "purple").save(root / "validation" / "collapse_ic0" / "episode_0.gif")
        Image.new("RGB", (300, 200), "white").save(root / "validation" / "collapse_ic0" / "effects.png")
    findings = root / "metrics"
    if "findings" in parts:
        shutil.copytree(ROOT / "metrics", findings)
    return PanelSources(real=root / "rollouts.zarr", samples=root / "samples.zarr", hx_basis=root / "basis.npz",
                        embeddings={"agent hx, simulated samples": ("sample", root / "projections.npz")},
                        saliency=root / "saliency.zarr", behaviour_labels=root / "labels.npz",
                        behaviour_metrics=root / "behaviours.json", validation_metrics=root / "validation",
                        validation_videos=root / "validation", findings=findings)


def read_script(path: Path) -> dict:
    text = path.read_text()
    return json.loads(text[text.index("(") + 1:text.rindex(")")])


def export(tmp_path: Path, config: PanelConfig | None = None, **kwargs) -> tuple[Path, dict]:
    sources = build_inputs(tmp_path / "inputs", **kwargs)
    site = tmp_path / "site"
    site.mkdir()
    export_panel(sources, site, config or PanelConfig(samples=1000, real_episodes=2, embedding_points=5000,
                                                      exemplars=2), CONTEXT)
    return site, read_script(site / "manifest.js")


def test_export_aligns_informed_samples_with_their_real_episodes(tmp_path):
    site, manifest = export(tmp_path)
    items = {item["id"]: item for item in manifest["items"]}
    # episodes 0 and 1 by real_episodes, 3 and 4 because informed samples encode them
    assert sorted(i for i in items if i.startswith("e")) == ["e0", "e1", "e3", "e4"]
    assert items["s4"]["real"] == "e3" and items["s4"]["real_offset"] == CONTEXT - 1
    assert items["s5"]["real"] == "e4" and items["s5"]["real_offset"] == 2 + CONTEXT - 1
    assert items["s0"]["label"].startswith("prior")
    # a prior sample is shown beside the real episode of the informed sample nearest it in latent space
    from rlinterp.store import RolloutStore
    samples = RolloutStore(tmp_path / "inputs" / "samples.zarr")
    latent = samples.rows("latent", samples.episode_starts)
    spread = np.median([np.linalg.norm(latent[a] - latent[b]) for a in range(4, 6) for b in range(a + 1, 6)])
    for prior in range(4):
        distance = np.linalg.norm(latent[4:] - latent[prior], axis=1)
        nearest = 4 + int(np.argmin(distance))
        assert (items[f"s{prior}"]["real"], items[f"s{prior}"]["real_offset"]) == (
            items[f"s{nearest}"]["real"], items[f"s{nearest}"]["real_offset"])
        assert items[f"s{prior}"]["real_relation"].endswith(
            f"informed sample {nearest}, at {distance.min():.2f}; informed samples lie a median {spread:.2f} apart)")
    assert manifest["missing"] == []


def test_export_writes_the_frames_and_series_of_each_item(tmp_path):
    site, manifest = export(tmp_path)
    from rlinterp.store import RolloutStore
    episode = RolloutStore(tmp_path / "inputs" / "rollouts.zarr").episode(4)       # 30 steps: two tile rows
    grid = np.asarray(Image.open(site / "frames" / "e4.png"))
    assert grid.shape == (2 * TILE, TILES_PER_ROW * TILE, 3)
    for t in (0, 17, 29):
        r, c = divmod(t, TILES_PER_ROW)
        assert np.array_equal(grid[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE], episode["obs"][t])
    series = read_script(site / "items" / "e4.js")
    assert np.allclose(series["hx"], episode["hx"], atol=5e-4)
    assert np.allclose(series["ics"], episode["hx"][:, :4], atol=5e-4)           # identity unmixing
    assert np.allclose(np.sum(series["probs"], 1), 1, atol=1e-2) and series["action"] == episode["action"].tolist()


def test_export_joins_embedding_saliency_behaviours_and_interventions(tmp_path):
    site, manifest = export(tmp_path)
    (embedding,) = manifest["embeddings"]
    steps = {(i, s) for i, s in zip(embedding["item"], embedding["step"])}
    assert len(steps) == len(embedding["x"]) and all(0 <= s < 8 for _, s in steps)
    sal = Image.open(site / "saliency" / "s1.png")
    assert sal.mode == "RGBA" and sal.size == (3 * TILE, TILE)                    # steps 0..2 of timestep 2
    assert np.asarray(sal)[..., 3].max() > 200                                   # the strongest pixel is opaque
    assert {i["id"] for i in manifest["items"] if "saliency" in i} == {"s0", "s1"}
    assert [b["exemplars"] for b in manifest["behaviours"]] == [["s0", "s3"], ["s1", "s4"], ["s2", "s5"]]
    (intervention,) = manifest["interventions"]
    table = {row["measure"]: row for row in intervention["table"]}
    assert [row["measure"] for row in intervention["table"]][:3] == ["return", "completed", "action_change"]
    assert table["completed"]["real"]["verdict"] == "yes" and table["return"]["real"]["verdict"] == "no"
    assert table["action_change"]["sim"]["verdict"] == "constant" and table["value"]["real"]["verdict"] == "secondary"
    assert table["return"]["sim"] is None and table["length"]["primary"] is False
    assert json.loads(intervention["metrics"]) == json.loads(json.dumps(VALIDATION_REPORT))   # the file, raw
    assert (site / intervention["videos"][0]).is_file() and (site / intervention["figures"][0]).is_file()


def test_export_lists_what_is_missing(tmp_path):
    site, manifest = export(tmp_path, parts=("embedding",))
    missing = {m["part"] for m in manifest["missing"]}
    assert missing == {"independent components", "saliency", "behaviours", "interventions", "findings"}
    assert read_script(site / "items" / "s0.js")["ics"] is None


# ---- the page in Chromium --------------------------------------------------------------------------------

def chromium_paths() -> tuple[str, str] | None:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


WINDOW = (1600, 1300)  # the browser's window size for every test but the one that shrinks it


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver; Debian's packages are installed when missing and we may."""
    if chromium_paths() is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                       "--no-install-recommends chromium chromium-driver", shell=True, capture_output=True)
    paths = chromium_paths()
    if paths is None:
        pytest.skip("no chromium/chromedriver and they could not be installed (apt-get needs root and Debian's "
                    "package archive)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 "--allow-file-access-from-files"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    yield driver
    driver.quit()


def open_page(driver, site: Path) -> None:
    driver.get_log("browser")                                   # drop earlier pages' messages
    driver.get((site / "index.html").as_uri())
    wait_for(driver, "return PANEL.inspect().loaded")


def wait_for(driver, script: str, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver, element_id: str, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.find_element("id", element_id).screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_page_links_embedding_player_and_keys(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    site, manifest = export(tmp_path)
    open_page(browser, site)
    assert console_errors(browser) == []
    assert browser.execute_script("return PANEL.inspect()")["items"] == len(manifest["items"])

    # a click on an embedding point shows that item's frame at that step
    canvas = browser.find_element("id", "embedding")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)   # clicks land in view
    point = browser.execute_script("return PANEL.pointOnPage(5)")
    rect = browser.execute_script("return arguments[0].getBoundingClientRect().toJSON()", canvas)
    ActionChains(browser).move_to_element_with_offset(canvas, point["x"] - rect["left"] - rect["width"] / 2,
                                                      point["y"] - rect["top"] - rect["height"] / 2).click().perform()
    state = wait_for(browser, f"const s = PANEL.inspect(); return s.current === '{point['item']}' && s.loaded && s")
    assert state["step"] == point["step"]
    assert browser.find_element("id", "frame-caption").text.startswith(f"SIMULATED, step {point['step']}")

    # keys: right steps, down moves to the next item, space plays
    browser.execute_script("PANEL.select('s4', 0)")
    wait_for(browser, "return PANEL.inspect().loaded")
    body = browser.find_element("tag name", "body")
    body.send_keys(Keys.ARROW_RIGHT)
    assert browser.execute_script("return PANEL.inspect().step") == 1
    assert browser.find_element("id", "real-caption").text == "real: episode 3 (level 103), step 3"   # offset 2 + 1
    body.send_keys(Keys.ARROW_DOWN)
    assert browser.execute_script("return PANEL.inspect().current") == "s5"
    body.send_keys(" ")
    wait_for(browser, "return PANEL.inspect().step >= 2")
    body.send_keys(" ")
    assert browser.execute_script("return PANEL.inspect().playing") is False

    # a prior sample: both halves of the player hold frames, the real one named as the nearest by latent
    browser.execute_script("PANEL.select('s0', 1)")
    wait_for(browser, "return PANEL.inspect().loaded")
    painted = "return document.getElementById(arguments[0]).getContext('2d').getImageData(0, 0, 256, 256).data" \
              ".some((v, i) => i % 4 !== 3 && v > 0)"
    assert wait_for(browser, painted.replace("arguments[0]", "'frame'"))
    assert wait_for(browser, painted.replace("arguments[0]", "'real-frame'"))
    assert browser.find_element("id", "real-caption").text.startswith("nearest real episode by latent")

    # hostile strings from stores or params are shown as text, never run as markup
    assert browser.execute_script("return window.__injected") is None
    assert HOSTILE in browser.find_element("id", "behaviours").text
    assert HOSTILE in browser.find_element("id", "interventions").text
    assert console_errors(browser) == []

    browser.execute_script("PANEL.select('s1', 2)")
    wait_for(browser, "return PANEL.inspect().loaded")
    for view in ("player-view", "state-view", "embedding-view", "behaviour-view", "intervention-view",
                 "findings-view"):
        screenshot(browser, view, view)
    browser.save_screenshot(str(SCREENSHOTS / "page.png"))


def test_page_says_what_is_missing(browser, tmp_path):
    site, _ = export(tmp_path, parts=())
    open_page(browser, site)
    text = browser.find_element("id", "missing").text
    for part in ("independent components", "embedding", "saliency", "behaviours", "interventions", "findings"):
        assert part in text
    assert console_errors(browser) == []


def test_page_fits_a_1400_pixel_window(browser, tmp_path):
    """No sideways scrolling on a laptop-sized window: the wide columns and their canvases shrink."""
    site, _ = export(tmp_path)
    browser.set_window_size(1400, 1000)
    try:
        open_page(browser, site)
        widths = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"page {widths[0]} px wide in a {widths[1]} px window"
        timeline = browser.find_element("id", "timeline")                     # inside its view, not cut off
        view = browser.find_element("id", "player-view")
        assert timeline.size["width"] <= view.size["width"]
    finally:
        browser.set_window_size(*WINDOW)


def test_page_stays_responsive_with_1000_samples_of_28_steps(browser, tmp_path):
    site, manifest = export(tmp_path, samples=1000, sample_steps=28, parts=("basis", "embedding"))
    assert len(manifest["embeddings"][0]["x"]) == 4000
    start = time.perf_counter()
    open_page(browser, site)
    loaded = time.perf_counter() - start
    took = browser.execute_script("""
        const t0 = performance.now();
        for (let i = 0; i < 20; i++) document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}));
        return (performance.now() - t0) / 20;""")
    assert loaded < 10 and took < 100, f"page load {loaded:.1f} s, {took:.0f} ms per step"
    browser.find_element("id", "filter").send_keys("informed")
    assert browser.find_element("id", "item-count").text.startswith("2 of")
    assert console_errors(browser) == []


def test_page_shows_hostile_strings_as_text_and_loads_nothing_from_the_network(browser, tmp_path):
    """Every string the page takes from the data (embedding and intervention names, labels, metric keys) is
    inserted as text; with every request but file:// blocked the page still works, and it asked for nothing else."""
    import dataclasses
    sources = build_inputs(tmp_path / "inputs")
    validation = tmp_path / "inputs" / "validation"
    (validation / "collapse_ic0.json").rename(validation / f"{HOSTILE}.json")
    (validation / "collapse_ic0").rename(validation / HOSTILE)
    sources = dataclasses.replace(sources, embeddings={HOSTILE: next(iter(sources.embeddings.values()))})
    site = tmp_path / "site"
    site.mkdir()
    export_panel(sources, site, PanelConfig(samples=1000, real_episodes=2, embedding_points=5000, exemplars=2),
                 CONTEXT)
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*",
                                                                "data:*", "blob:*"]})
    try:
        open_page(browser, site)
        assert browser.execute_script("return window.__injected") is None
        assert browser.find_elements("css selector", "img[src='x']") == []
        text = browser.find_element("tag name", "body").text
        assert text.count(HOSTILE) >= 3, text          # embedding name, intervention name, behaviour label, key
        requested = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
        assert requested and all(url.startswith("file://") for url in requested), requested
        assert console_errors(browser) == []
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})


@pytest.mark.parametrize("width", [1400, 1000])
def test_charts_and_the_intervention_table_read_at_laptop_widths(browser, tmp_path, width):
    """At 1,400 and 1,000 px: no chart label is cut off (each text box lies inside its area: the margin left of the
    plot, or the canvas), chart text is drawn at 9 px or more, the page does not scroll sideways, and the
    intervention table's cells are the metrics file's numbers. Screenshots go to plots/panel/ for the README."""
    from rlinterp.verdicts import family_p_values, outcome_table

    site, _ = export(tmp_path)
    browser.set_window_size(width, 1000)
    try:
        open_page(browser, site)
        browser.execute_script("PANEL.select('s4', 1)")
        wait_for(browser, "return PANEL.inspect().loaded")
        labels = browser.execute_script("return PANEL.inspect().labels")
        assert {"timeline", "ic-traces"} <= set(labels)
        assert any(box["text"] == "RIGHT+DOWN" for box in labels["timeline"])
        for canvas, boxes in labels.items():
            for box in boxes:
                assert box["x"] >= 0 and box["x"] + box["width"] <= box["right"], (canvas, box)
            scale = browser.execute_script(f"const c = document.getElementById('{canvas}'); "
                                           "return c.clientWidth / c.width")
            assert 12 * scale >= 9, f"{canvas}: text drawn at {12 * scale:.1f} px in a {width} px window"
        widths = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"page {widths[0]} px wide in a {widths[1]} px window"

        table = outcome_table(VALIDATION_REPORT, family_p_values({"x": VALIDATION_REPORT})["x"])
        expected = {f"{side}_{row['measure']}.{key}": value for row in table
                    for side in ("real", "sim") if row[side] for key, value in row[side].items()}
        cells = browser.execute_script("return [...document.querySelectorAll('#interventions [data-key]')]"
                                       ".map(cell => [cell.dataset.key, cell.textContent])")
        checked = 0
        for key, text in cells:
            value = expected.get(key)
            if key.endswith(".verdict"):
                assert text == (value or ""), key
            elif value is None or (isinstance(value, float) and np.isnan(value)):
                assert text == "", key
            elif key.endswith(".null_percentile"):
                assert text == f"{round(100 * value)}%", key
            else:
                assert float(text) == pytest.approx(float(f"{value:.4g}")), (key, text, value)
            checked += 1
        assert checked == len(cells) and {k for k, v in expected.items() if v is not None} <= {k for k, _ in cells}
        assert browser.find_element("css selector", "#interventions .yes").text == "yes"
        # the findings are the README's rows, rendered from the same metrics by the same code
        from rlinterp.readme import findings_rows
        shown = browser.execute_script("return [...document.querySelectorAll('#findings tr')].slice(1)"
                                       ".map(tr => [...tr.cells].map(td => td.textContent))")
        assert shown == [[cell.replace("**", "") for cell in row] for row in findings_rows(tmp_path / "inputs" / "metrics")]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / f"page_{width}.png"))
        screenshot(browser, "intervention-view", f"interventions_{width}")
        assert console_errors(browser) == []
    finally:
        browser.set_window_size(*WINDOW)
