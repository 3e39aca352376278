"""The README's result tables are the committed metrics, rendered; none is typed by hand."""
import re
import shutil
from pathlib import Path

from rlinterp.readme import TABLES, render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_the_committed_metrics():
    readme = (ROOT / "README.md").read_text()
    for name in TABLES:
        assert f"<!-- metrics:{name} -->" in readme, f"README has no metrics:{name} block"
    assert render(readme, ROOT / "metrics") == readme, "README is stale: run python -m rlinterp.readme"


def test_rendering_follows_the_metrics(tmp_path):
    """Change one number in a copy of the metrics and the rendered README changes with it."""
    metrics = tmp_path / "metrics"
    shutil.copytree(ROOT / "metrics", metrics)
    agent = metrics / "agent.json"
    text = agent.read_text()
    agent.write_text(text.replace('"episodes_per_policy": ', '"episodes_per_policy": 9', 1))
    readme = (ROOT / "README.md").read_text()
    assert render(readme, metrics) != render(readme, ROOT / "metrics")


def test_layout_names_every_module():
    """The README's Layout section is where a newcomer finds a module's job: every file of rlinterp/ is there,
    under its folder's line, and nothing it names is gone."""
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    blocks = re.split(r"^(?=\S)", layout, flags=re.M)
    named = {block.split()[0]: set(re.findall(r"[\w]+\.py", block)) for block in blocks if block.strip()}
    for folder in ("rlinterp", "rlinterp/agent", "rlinterp/simulator", "rlinterp/analysis"):
        modules = {p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
        assert named.get(f"{folder}/", set()) == modules, f"README Layout, {folder}/: lists " \
            f"{sorted(named.get(f'{folder}/', set()))}, the folder holds {sorted(modules)}"


def test_a_verdict_reads_the_direction_of_its_claim(tmp_path):
    """The saliency row claims that hx ICs look back further than random directions: an interval below 0 is the
    opposite, not a win; only one above 0 is."""
    import json

    from rlinterp.readme import findings_table

    metrics = tmp_path / "metrics"
    shutil.copytree(ROOT / "metrics", metrics)
    saliency = json.loads((metrics / "saliency.json").read_text())

    def verdict(low: float, high: float) -> str:
        saliency["with_env_grads"]["ic_minus_random_direction"].update(mean=(low + high) / 2, ci95_low=low,
                                                                       ci95_high=high)
        (metrics / "saliency.json").write_text(json.dumps(saliency))
        row = next(line for line in findings_table(metrics).splitlines() if "hx ICs - random hx directions" in line)
        return row.rstrip(" |").rsplit("|", 1)[1].strip()

    assert verdict(-0.124, -0.116) == "no: the opposite, ICs look back less"
    assert verdict(-0.01, 0.02) == "no"
    assert verdict(0.01, 0.02) == "**yes**"


def test_null_by_construction_sentences_follow_the_metrics(tmp_path):
    """Each sentence saying a result is null by construction holds only while the metrics say so: an agent whose
    greedy action is the constant one, behaviours that all act alike and edits whose simulated actions never move
    bring each sentence; the opposite metrics leave none of them."""
    import json

    from rlinterp.readme import null_by_construction

    metrics = tmp_path / "metrics"
    shutil.copytree(ROOT / "metrics", metrics)

    def edit(name, change):
        path = metrics / name
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))

    def set_all(null: bool) -> str:
        edit("agent.json", lambda d: d["train_levels"].update(greedy_actions_not_best_constant=0.0 if null else 0.4))
        edit("behaviours.json", lambda d: [b.update(top_action="RIGHT+UP" if null else ("LEFT", "RIGHT")[i % 2],
                                                    action_distribution=[1.0] + [0.0] * 14)
                                           for i, b in enumerate(d["behaviours"])])
        for path in (metrics / "validation").glob("*.json"):
            edit(f"validation/{path.name}", lambda d: d.update(constant=["sim_action_change"] if null else []))
        return null_by_construction(metrics)

    null = set_all(True)
    assert "null by construction" in null and "cannot be told apart" in null and "constant by construction" in null
    assert set_all(False) == "Nothing in these results is null by construction for the current agent."