"""Torch-free file helpers every writer and reader shares: nothing is half-written where a reader could mistake it
for complete (a temporary name, renamed into place only when whole), readers that name a damaged file in one line,
and content hashes.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rlinterp.errors import InputError


def temporary_sibling(target: Path, tag: str, suffix: str = "") -> Path:
    """A hidden name beside `target` for this process to write into, after deleting what killed writers of the same
    target left under such names (a run holds the target alone: DVC locks it), so kills leave no litter behind."""
    stem = target.stem if suffix else target.name
    for stale in target.parent.glob(f".{stem}.{tag}-*{suffix}"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    return target.with_name(f".{stem}.{tag}-{os.getpid()}{suffix}")


# A writer's hidden temporary: `.NAME.TAG-PID` or `.STEM.TAG-PID.SUFFIX` (see temporary_sibling).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|incomplete|old)-(?P<pid>\d+)(?P<suffix>\.[^.]+)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # another user's process
        return True
    return True


def sweep_litter(path: str | Path) -> None:
    """Delete the hidden temporaries beside `path` whose writer is gone. Every stage calls it for every path it
    names, so what a killed run left goes with the next stage that names the path, even when DVC restores the
    killed stage's outputs from its run cache instead of running it again (and so never calls temporary_sibling)."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for sibling in path.parent.glob(f".{path.stem}.*-*"):
        match = _TEMPORARY.match(sibling.name)
        if match and match["name"] in (path.name, path.stem) and not _alive(int(match["pid"])):
            shutil.rmtree(sibling) if sibling.is_dir() else sibling.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that go by it still work) that replaces `path`
    only if the block finishes without an error; the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path, "tmp", path.suffix)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def replace_directory(source: Path, target: Path) -> None:
    """Move `source` to `target`, replacing any old `target`; `target` never holds a partial result."""
    if target.exists():
        trash = temporary_sibling(target, "old")
        os.replace(target, trash)
        os.replace(source, target)
        shutil.rmtree(trash)
    else:
        os.replace(source, target)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Fill a hidden temporary directory; it replaces `path` only if the block finishes without an error."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target, "incomplete")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, target)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_sha256(path: str | Path) -> str:
    """sha256 of every file under `path`: names (relative, sorted) and bytes. A directory's identity, e.g. the
    store a training run learned from."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(root).as_posix()}\0{file_sha256(file)}\0".encode())
    return digest.hexdigest()


def code_sha256(paths: list[str | Path]) -> str:
    """sha256 of the code of the Python files at `paths`, without comments and docstrings: what a training run's
    checkpoint records of the code that trained it, so editing documentation never blocks a resume."""
    digest = hashlib.sha256()
    for path in paths:
        tree = ast.parse(Path(path).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        digest.update(ast.dump(tree).encode())
    return digest.hexdigest()


def read_json(path: str | Path) -> Any:
    """The JSON at `path`, or an InputError naming the file and what is wrong with it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (expected the output of the stage that writes it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not readable JSON ({err}); the file is damaged, re-run the stage that writes "
                         f"it") from None


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path` (no pickled objects), or an InputError naming the file."""
    try:
        with np.load(path) as data:
            return {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (expected the output of the stage that writes it)") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        raise InputError(f"{path}: not a readable .npz ({type(err).__name__}: {err}); the file is damaged, re-run "
                         f"the stage that writes it") from None
