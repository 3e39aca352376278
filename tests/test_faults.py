"""Kill any stage at any point: nothing a later stage reads is left half-written, the re-run finishes, training
resumes from its checkpoint, and a stage run again on the same inputs gives the same outputs.

One tiny pipeline is reproduced once (the reference, logging where every stage moves each output into place);
then each case starts `dvc repro -f -s STAGE`, SIGKILLs it at one point, checks every output of the stage (absent,
or complete and readable), runs `dvc repro -s STAGE` again and compares its outputs with the reference's. Kill
points: `early` (one second in, while the stage still imports and loads), `mid-write` (the moment a hidden
temporary output appears), `checkpoint` (the moment a training checkpoint appears), and `rename N` / `last
rename` (the stage kills itself just before its N-th or final os.replace, i.e. as an output is moved into place;
by `tests/faults/sitecustomize.py`). The table of outcomes is printed (pytest -s shows it).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from rlinterp.agent.checkpoint import content_digest, load_checkpoint
from rlinterp.saliency_store import SaliencyStore
from rlinterp.store import RolloutStore

from tests.conftest import ROOT
from tests.tiny_repo import dvc, environment, fault_env, without_timing
# (stage, kill point): downstream stages first, so every case reads the reference's inputs; train_agent last,
# since its resumed run (fresh episodes: envs cannot be checkpointed) changes everything after it.
CASES = [
    ("panel", "mid-write"), ("panel", "last rename"), ("validate@collapse_ic0", "early"),
    ("dynamics", "last rename"), ("saliency", "mid-write"), ("behaviours", "rename 1"), ("behaviours", "last rename"),
    ("analyse@agent_hx_real", "last rename"), ("prediction_quality", "last rename"), ("sample", "mid-write"),
    ("train_simulator", "early"), ("train_simulator", "checkpoint"), ("record", "mid-write"),
    ("record", "last rename"), ("train_agent", "early"), ("train_agent", "checkpoint"),
]
CHECKPOINTS = {"train_agent": "data/agent/checkpoint.pt", "train_simulator": "data/simulator/checkpoint.pt"}


def lock_outputs(repo: Path) -> dict[str, dict[str, str]]:
    """Per stage, a fingerprint of each output: its md5 as dvc.lock records it, or for a checkpoint the digest of
    its contents without the wall-clock seconds it records."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name: {out["path"]: fingerprint(repo / out["path"], out.get("md5")) for out in stage.get("outs", [])}
            for name, stage in stages.items()}


def fingerprint(path: Path, md5: str | None) -> str | None:
    if path.suffix != ".pt" or not path.is_file():
        return md5
    return content_digest(without_timing(torch.load(path, weights_only=True)))


def differences(a, b, where: str) -> list[str]:
    """Where two JSON values differ (keys or list positions), for the failure message."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"[:200]]


def check_output(path: Path) -> str:
    """'absent', or 'complete' once every file of the output has been read back whole; raises otherwise."""
    if not path.exists():
        return "absent"
    if path.suffix == ".zarr":
        if (path / "zarr.json").is_file() and (path / "meta").is_dir():
            RolloutStore(path).verify()
        else:
            SaliencyStore.load(path)
        return "complete"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    hidden = [p for p in files if any(part.startswith(".") for part in p.relative_to(path.parent).parts)]
    assert not hidden, f"temporary files inside the output {path}: {hidden}"
    for file in files:
        if file.suffix == ".pt":
            state = torch.load(file, weights_only=True)
            load_checkpoint(file, fmt=state["format"])
        elif file.suffix == ".json":
            json.loads(file.read_text())
        elif file.suffix == ".npz":
            with np.load(file) as data:
                [data[key] for key in data.files]
        elif file.suffix in (".png", ".gif"):
            with Image.open(file) as image:
                image.load()
        else:
            file.read_bytes()
    return "complete"


def from_stage_script(argv: list[str]) -> str | None:
    """A process's stage script and its arguments (`stages/...` on), whatever launched it; None for any other."""
    start = next((i for i, word in enumerate(argv) if word.startswith("stages/")), None)
    return " ".join(argv[start:]) if start is not None else None


def stage_script(command: str) -> str | None:
    """The stage script and arguments a dvc.lock command runs: dvc.lock keeps the command's quotes, argv has none."""
    return from_stage_script(shlex.split(command))


def renames(log: Path, command: str) -> list[str]:
    """The destinations a stage's command moved into place, in order, from the reference run's log."""
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    return [destination for script, destination in rows if script == stage_script(command)]


def temporary_outputs(repo: Path) -> list[Path]:
    """Hidden temporaries of writers (stores, directories, files), found while the stage creates and renames them."""
    found = []
    for top in ("data", "metrics", "plots"):
        for folder, dirs, files in os.walk(repo / top):
            found += [Path(folder) / name for name in dirs + files if ".incomplete-" in name or ".tmp-" in name]
    return found


def running(command: str) -> bool:
    """Whether a process with this command line is running (the stage itself, not dvc)."""
    wanted = stage_script(command)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
        except OSError:
            continue
        if from_stage_script(argv) == wanted:   # argv as the kernel holds it: other processes' quotes are never parsed
            return True
    return False


def kill_stage(repo: Path, stage: str, command: str, point: str, rename_count: int) -> str:
    """Start `dvc repro -f -s stage`, kill it at `point`; returns what was hit (or 'finished first')."""
    env = {**environment(), **fault_env()}
    if point.startswith("rename") or point == "last rename":
        env["RLINTERP_KILL_AT_RENAME"] = str(rename_count if point == "last rename" else int(point.split()[1]))
    checkpoint = repo / CHECKPOINTS.get(stage, "none")
    checkpoint.unlink(missing_ok=True)    # a training run from the start, so its first checkpoint can be caught
    litter = set(temporary_outputs(repo))
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-f", "-s", "--no-run-cache", stage],
                               cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    start, started, hit = time.monotonic(), None, None
    while hit is None and process.poll() is None and time.monotonic() - start < 300:
        started = started or (running(command) and time.monotonic())
        if point == "early" and started and time.monotonic() - started > 1.0:
            hit = "1 s after the stage started"
        elif point == "mid-write" and set(temporary_outputs(repo)) - litter:
            hit = f"writing {sorted(set(temporary_outputs(repo)) - litter)[0].name}"
        elif point == "checkpoint" and checkpoint.exists():
            hit = "checkpoint written"
        else:
            time.sleep(0.01)
    if hit is not None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if env.get("RLINTERP_KILL_AT_RENAME"):
        hit = f"before os.replace #{env['RLINTERP_KILL_AT_RENAME']}" if process.returncode else None
    return hit or "finished first"


@pytest.fixture(scope="module")
def reference(tiny_pipeline, tmp_path_factory):
    """A copy of the reproduced tiny pipeline, with every output's fingerprint and every metric."""
    repo = tmp_path_factory.mktemp("faults") / "repo"
    shutil.copytree(tiny_pipeline.pristine, repo, symlinks=True)
    metrics = {p.relative_to(repo).as_posix(): without_timing(json.loads(p.read_text()))
               for p in (repo / "metrics").rglob("*.json")}
    return repo, tiny_pipeline.renames, lock_outputs(repo), metrics


def test_killed_anywhere_nothing_half_written_and_the_rerun_matches(reference):
    repo, log, outputs, metrics = reference
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    commands = {name: " ".join(stage["cmd"].split()) for name, stage in lock.items()}
    read_later = {dep["path"] for stage in lock.values() for dep in stage.get("deps", [])} | \
        {path for paths in outputs.values() for path in paths if path.startswith("metrics/")}
    table = []
    for stage, point in CASES:
        started = time.monotonic()
        moved = renames(log, commands[stage])
        assert moved, f"{stage}: the reference run moved nothing into place"
        hit = kill_stage(repo, stage, commands[stage], point, len(moved))
        assert hit != "finished first", f"{stage} {point}: the stage finished before the kill"
        states = {path: check_output(repo / path) for path in outputs[stage] if path in read_later}
        rerun = dvc(repo, "repro", "-s", "--no-run-cache", stage)
        resumed = re.search(r"resuming from (step \d+|its checkpoint)", rerun.stdout)
        if point == "checkpoint":
            assert resumed, f"{stage}: killed after a checkpoint but not resumed:\n{rerun.stdout}"
        after = lock_outputs(repo)[stage]
        data = {path: md5 for path, md5 in after.items() if path.startswith("data/")}
        same_data = all(outputs[stage][path] == md5 for path, md5 in data.items())
        stage_metrics = {name: value for name, value in metrics.items() if name in outputs[stage]}
        same_metrics = all(without_timing(json.loads((repo / name).read_text())) == value
                           for name, value in stage_metrics.items())
        if stage == "train_agent" and resumed:
            outcome = f"{resumed.group(0)}: a resumed run plays fresh episodes (envs are not checkpointed)"
        else:
            assert same_data and same_metrics, (
                f"{stage} {point}: the re-run differs from the reference: data "
                f"{[path for path, md5 in data.items() if outputs[stage][path] != md5]}, metrics "
                f"{[differences(value, without_timing(json.loads((repo / name).read_text())), name) for name, value in stage_metrics.items()]}\n{rerun.stdout[-2000:]}")
            outcome = f"{resumed.group(0) if resumed else 'from the start'}: outputs and metrics identical"
        table.append((stage, point, hit, ", ".join(sorted(set(states.values()))), outcome,
                      time.monotonic() - started))
    leftovers = [p for p in temporary_outputs(repo) if subprocess.run(
        ["git", "check-ignore", "-q", str(p)], cwd=repo).returncode != 0]   # litter git would pick up
    width = max(len(row[0]) for row in table)
    print(f"\n{'stage':{width}}  {'kill point':12}  {'killed':34}  {'outputs after kill':19}  {'s':>4}  re-run")
    for stage, point, hit, state, outcome, seconds in table:
        print(f"{stage:{width}}  {point:12}  {hit[:34]:34}  {state:19}  {seconds:4.0f}  {outcome}")
    print(f"{len(table)} kill points; temporaries left that git does not ignore: {len(leftovers)}")
    assert len(table) >= 15 and leftovers == []
    assert f"at {len(CASES)} points" in (ROOT / "README.md").read_text(), "README's count of kill points"


def test_the_process_scan_finds_a_stage_beside_processes_whose_arguments_no_shell_could_parse(tmp_path):
    """CI's machine runs processes with an unbalanced quote in their arguments; the scan must read them, not fail."""
    sleep = [sys.executable, "-c", "import time; time.sleep(30)"]
    others = subprocess.Popen([*sleep, "it's", '"unclosed'])
    stage = subprocess.Popen([*sleep, "stages/validate.py", "collapse ic0", "--out", str(tmp_path)])
    try:
        time.sleep(0.5)
        assert running(f"python stages/validate.py 'collapse ic0' --out {tmp_path}")
        assert not running(f"python stages/validate.py 'swap ic0' --out {tmp_path}")
    finally:
        others.kill(), stage.kill()


def test_a_second_run_of_a_stage_with_the_same_arguments_is_refused(tmp_path):
    """Two runs of one stage at once would delete each other's temporaries and blame a damaged output: the second
    is refused with one line naming the first; once the first ends, a run starts again."""
    script = tmp_path / "stage.py"
    script.write_text("import os, time\nfrom rlinterp.runtime import stage_main, stage_paths\n\n\n@stage_main\n"
                      "def main():\n    stage_paths('output')\n    print('started', flush=True)\n"
                      "    time.sleep(float(os.environ['SECONDS_TO_RUN']))\n\n\nmain()\n")

    def run(seconds: str):
        return subprocess.Popen([sys.executable, str(script), "--output", "out.json"], cwd=tmp_path, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "SECONDS_TO_RUN": seconds})

    first = run("30")
    assert first.stdout.readline().strip() == "started"
    second = run("30")
    _, error = second.communicate(timeout=60)
    assert second.returncode == 2 and error.count("\n") == 1, error
    assert f"another run of {script} with the same arguments is in progress here (pid {first.pid})" in error
    first.kill()
    first.wait()
    third = run("0")
    assert third.communicate(timeout=60)[0].strip() == "started" and third.returncode == 0


def test_the_next_stage_naming_a_path_sweeps_what_a_killed_writer_left_beside_it(tmp_path):
    """When DVC restores a killed stage's outputs from its run cache, the stage never runs again to clear its
    temporaries; the next stage that names the path does, but only those whose writer is gone."""
    data = tmp_path / "data"
    (data / ".rollouts.zarr.incomplete-999999999").mkdir(parents=True)       # a killed writer's store
    (data / ".record.tmp-999999999.json").write_text("{")                     # and its half-written metrics
    live = data / f".rollouts.zarr.incomplete-{os.getpid()}"                    # a writer still running
    live.mkdir()
    (data / ".other.zarr.incomplete-999999999").mkdir()                        # another output's: not named
    script = tmp_path / "stage.py"
    script.write_text("from rlinterp.runtime import stage_main, stage_paths\n\n\n@stage_main\ndef main():\n"
                      "    stage_paths('store', 'metrics')\n\n\nmain()\n")
    subprocess.run([sys.executable, str(script), "--store", "data/rollouts.zarr", "--metrics", "data/record.json"],
                   cwd=tmp_path, check=True)
    assert sorted(p.name for p in data.iterdir()) == sorted([live.name, ".other.zarr.incomplete-999999999"])
