"""Each stage's wall time and peak memory from one reproduction of the pipeline on the current params.

Runs `dvc repro --single-item STAGE` for every stage in dvc.yaml order (a topological order: each stage comes
after those it reads), sampling the resident memory of the stage's whole process tree (DVC, the stage, its
loader workers) every 0.2 s. Prints a table and the total against the 60-minute target of the default
profile, and writes the same as JSON to --out. Stages already up to date are reported as skipped; --force runs
every stage anyway (`dvc repro --force`), so a measurement in a working copy cannot be shortened by DVC
restoring an output it has seen before.

    python benchmarks/pipeline.py [--force] [--out benchmarks/results/pipeline_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

TARGET_MINUTES = 60


def stage_names() -> list[str]:
    listed = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], capture_output=True,
                            text=True, check=True)
    return listed.stdout.split()


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants (those that vanish meanwhile count as 0)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_stage(name: str, force: bool = False) -> dict:
    # The stage's output goes to a file, not a pipe: a pipe read only at the end fills up and blocks the stage.
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        command = [sys.executable, "-m", "dvc", "repro", "--single-item", *(["--force"] if force else []), name]
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        process, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                peak = max(peak, tree_rss(process))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        child.wait()
        log.seek(0)
        output = log.read()
    if child.returncode != 0:
        raise SystemExit(f"stage {name} failed:\n{output}")
    return {"stage": name, "seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": round(peak / 2**30, 2),
            "ran": f"Running stage '{name}'" in output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline_cpu.json"))
    parser.add_argument("--force", action="store_true", help="run every stage, even those DVC finds up to date")
    args = parser.parse_args()
    rows = []
    for name in stage_names():
        rows.append(run_stage(name, args.force))
        row = rows[-1]
        print(f"{name:28s} {row['seconds']:8.1f} s  {row['peak_rss_gib']:6.2f} GiB  "
              f"{'ran' if row['ran'] else 'up to date, skipped'}", flush=True)
    total = sum(r["seconds"] for r in rows)
    print(f"{'total':28s} {total / 60:8.1f} min ({total / 60 / TARGET_MINUTES:.2f} of the {TARGET_MINUTES}-minute "
          f"target); peak {max(r['peak_rss_gib'] for r in rows):.2f} GiB; {psutil.cpu_count()} cores")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cores": psutil.cpu_count(), "total_minutes": round(total / 60, 1),
                                    "stages": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
