"""A throwaway git + DVC copy of the project, and `dvc` run in it: what the pipeline tests share."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import ROOT

FAULTS = Path(__file__).parent / "faults"   # sitecustomize.py: logs (or kills at) each stage's os.replace

# Wall-clock readings and where a run resumed from: the only keys allowed to differ between runs.
TIMING = re.compile(r"seconds|per_s|_time|time_|^resumed_from|^sha256$")

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "rlinterp tests", "GIT_AUTHOR_EMAIL": "tests@rlinterp.invalid",
                "GIT_COMMITTER_NAME": "rlinterp tests", "GIT_COMMITTER_EMAIL": "tests@rlinterp.invalid"}


def environment() -> dict[str, str]:
    """The test's Python first on PATH, so stage commands (`python stages/...`) run in this environment."""
    env = {**os.environ, **GIT_IDENTITY}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def make_repo(tmp_path: Path, params: dict) -> Path:
    """Copy the project's source files (not data/ or metrics/) into a fresh git + DVC repository."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    repo = tmp_path / "repo"
    for name in listed:
        if name.split("/")[0] in ("data", "metrics", "plots") or name == "dvc.lock":
            continue
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        subprocess.run(command, cwd=repo, check=True, env=environment())
    return repo


def dvc(repo: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env={**environment(), **(env or {})},
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass(frozen=True)
class TinyPipeline:
    repo: Path       # reproduced on tiny params; tests may change it
    pristine: Path   # an untouched copy of it, taken right after `dvc repro`
    renames: Path    # "stage script and args<TAB>destination" for every output each stage moved into place, in order


def fault_env(**variables: str) -> dict[str, str]:
    """Variables that put tests/faults/sitecustomize.py into stage processes, with its settings."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), os.environ.get("PYTHONPATH")])), **variables}


def reproduce(root: Path, params: dict) -> TinyPipeline:
    """`dvc repro` of a fresh tiny repository, logging every stage's renames, and a pristine copy of the result."""
    repo = make_repo(root, params)
    renames = root / "renames.log"
    dvc(repo, "repro", env=fault_env(RLINTERP_RENAME_LOG=str(renames)))
    pristine = root / "pristine"
    shutil.copytree(repo, pristine, symlinks=True)
    return TinyPipeline(repo, pristine, renames)


def without_timing(value):
    """A JSON value (or checkpoint) without the keys TIMING names, at any depth."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if not TIMING.search(str(k))}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value
