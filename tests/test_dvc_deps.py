"""dvc.yaml tells the truth: every stage lists, as deps, every rlinterp module its script imports (directly or
through other rlinterp modules), so editing a module re-runs exactly the stages that use it."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_path(name: str) -> Path | None:
    """rlinterp.a.b -> rlinterp/a/b.py (or the package's __init__.py); None outside rlinterp."""
    if name != "rlinterp" and not name.startswith("rlinterp."):
        return None
    base = ROOT / Path(*name.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)   # `from pkg import module`
    return {n for n in names if module_path(n) is not None and module_path(n).exists()}


def import_closure(script: Path) -> set[Path]:
    """Every rlinterp source file `script` needs, following imports through rlinterp."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in imported_modules(todo.pop()):
            path = module_path(name)
            if path not in seen:
                seen.add(path)
                todo.append(path)
    return {p for p in seen if p.stat().st_size > 0 and not (p.name == "__init__.py" and len(p.read_text()) < 200)}


def listed(deps: list[str], path: Path) -> bool:
    relative = path.relative_to(ROOT)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


def stage_items():
    for name, stage in STAGES.items():
        if "foreach" in stage:
            yield name, stage["do"]
        else:
            yield name, stage


@pytest.mark.parametrize("name,stage", list(stage_items()), ids=[n for n, _ in stage_items()])
def test_stage_deps_cover_its_import_closure(name, stage):
    words = stage["cmd"].split()
    scripts = [ROOT / w for w in words if w.endswith(".py")]    # the stage script, and a launcher run with -m
    scripts += [module_path(w) for before, w in zip(words, words[1:]) if before == "-m" and module_path(w)]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]]
    for script in scripts:
        assert listed(deps, script), f"{name}: its script {script.relative_to(ROOT)} is not a dep"
        missing = sorted(str(p.relative_to(ROOT)) for p in import_closure(script) if not listed(deps, p))
        assert not missing, f"{name}: dvc.yaml does not list the modules {script.name} imports: {missing}"


def test_the_closure_follows_imports_through_the_library():
    closure = {str(p.relative_to(ROOT)) for p in import_closure(ROOT / "stages/train_agent.py")}
    assert {"rlinterp/agent/train.py", "rlinterp/agent/ppo.py", "rlinterp/hooks.py", "rlinterp/files.py"} <= closure


def test_bytecode_is_not_part_of_a_stage_dependency():
    """A directory dep (rlinterp/simulator) hashes every file in it: bytecode some process left there would make a
    fresh clone, which has none, see the stage as changed and retrain it."""
    ignored = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", "rlinterp/simulator/__pycache__/x.pyc",
                              "rlinterp/simulator/model.py"], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == ["rlinterp/simulator/__pycache__/x.pyc"], ignored.stdout + ignored.stderr
