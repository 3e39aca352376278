"""What every stage needs around the science: torch set-up and precision, its paths from the command line,
training curves, and one-line errors. Atomic file writes live in `rlinterp/files.py`."""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from dvclive import Live

from rlinterp.config import ComputeConfig, ConfigError
from rlinterp.errors import InputError
from rlinterp.files import atomic_path, sweep_litter


DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)   # out of space, over the file-size limit, over quota
NO_ACCESS = (errno.EACCES, errno.EPERM, errno.EROFS)      # permission denied, not permitted, read-only file system


class StageError(InputError):
    """A stage cannot run on the inputs it was given; the message says what was wrong and what was expected."""


def setup_torch(compute: ComputeConfig) -> torch.device:
    """Set thread count and check that the requested device exists."""
    if compute.num_threads:
        torch.set_num_threads(compute.num_threads)
    try:
        device = torch.device(compute.device)
    except RuntimeError as err:
        raise ConfigError(f"params.yaml: compute.device = {compute.device!r}: expected cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"params.yaml: compute.device = {compute.device!r}: no CUDA device is available here "
                          f"(expected cpu on this machine)")
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16), read from /proc/cpuinfo."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return not flags.isdisjoint({"avx512_bf16", "amx_bf16"})


def resolve_precision(compute: ComputeConfig, device: torch.device) -> torch.dtype | None:
    """The encoder dtype `compute.precision` asks for on `device`: torch.bfloat16, or None for fp32.

    `auto` picks bf16 only where the hardware has bf16 units (a CUDA GPU that supports it, or a CPU with
    AVX512-BF16/AMX); `bf16` forces it (slow but correct where emulated).
    """
    if compute.precision == "fp32":
        return None
    if compute.precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_bf16() else None


def describe_precision(dtype: torch.dtype | None) -> str:
    return "bf16 (encoder autocast; GRU, heads, losses and optimiser fp32)" if dtype else "fp32"


def stage_paths(*names: str, positional: tuple[str, ...] = (), flags: tuple[str, ...] = ()
                ) -> argparse.Namespace:
    """The stage's command line: a required `--name PATH` for every file it reads or writes (dvc.yaml passes
    them, from the paths it declares once in its `vars`, so the DAG and the code cannot disagree), then any
    positional arguments and on/off flags."""
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__)
    for name in positional:
        parser.add_argument(name)
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True, metavar="PATH")
    for name in flags:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, action="store_true")
    args = parser.parse_args()
    if os.environ.get("RANK", "0") == "0":     # under torchrun every rank runs the stage: rank 0 holds the lock
        _hold_stage_lock()
        for name in names:
            sweep_litter(getattr(args, name))
    return args


_STAGE_LOCK: list = []   # the open lock file, held until the process ends


def _hold_stage_lock() -> None:
    """Refuse to start while another process runs this stage script with the same arguments in the same folder:
    both would write the same outputs, and each deletes the other's temporaries (see files.temporary_sibling),
    which the first would then report as a damaged output. The lock lives in the system's temporary folder."""
    key = hashlib.sha256("\0".join([os.getcwd(), *sys.argv]).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"rlinterp-stage-{key}.lock"
    lock = open(path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise InputError(f"another run of {sys.argv[0]} with the same arguments is in progress here (pid {holder}); "
                         f"wait for it to finish or stop it, then run again") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    _STAGE_LOCK.append(lock)


@contextlib.contextmanager
def training_curves(directory: str, resume_from: int | None, main: bool = True
                    ) -> Iterator[Callable[[int, dict[str, float]], None] | None]:
    """DVCLive curves in `directory` and a `log(step, stats)` for training loops that writes one point per statistic
    at `step`; None, and nothing written, on any rank but a distributed run's 0. The curves are touched only at the
    first point, so a run that fails before it (bad inputs, a diverging first update) leaves the previous curves as
    they were. A run resumed from the checkpoint of step `resume_from` continues them from there: points a killed
    run logged after its last checkpoint are dropped, since the resumed run logs those steps again."""
    if not main:
        yield None
        return
    live: Live | None = None

    def start() -> Live:
        if resume_from is not None:
            for curve in Path(directory).glob("plots/metrics/**/*.tsv"):
                header, *rows = curve.read_text().splitlines(keepends=True)
                kept = [row for row in rows if int(row.split("\t", 1)[0]) <= resume_from]
                if len(kept) < len(rows):
                    with atomic_path(curve) as tmp:
                        tmp.write_text(header + "".join(kept))
        return Live(dir=directory, resume=resume_from is not None, save_dvc_exp=False, dvcyaml=None)

    def log(step: int, stats: dict[str, float]) -> None:
        nonlocal live
        if live is None:
            live = start()
        live.step = step
        for name, value in stats.items():
            live.log_metric(name, value, plot=True)
        live.next_step()

    try:
        yield log
    finally:
        if live is not None:
            live.end()


def stage_main(fn: Callable[[], None]) -> Callable[[], None]:
    """Run a stage's main; expected failures (bad params, bad inputs) end with one clear line, exit code 2."""
    @functools.wraps(fn)
    def wrapper() -> None:
        try:
            fn()
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except OSError as err:
            if err.errno in NO_ACCESS:
                print(f"error: no permission to write or read {err.filename or 'a file'} ({err.strerror}); give the "
                      f"stage access to its input and output folders and re-run (outputs are moved into place only "
                      f"when whole, so none was left half-written)", file=sys.stderr)
                sys.exit(2)
            if err.errno not in DISK_FULL:
                raise
            where = f" writing {err.filename}" if err.filename else ""
            print(f"error: the disk is full{where} ({err.strerror}); outputs are written under temporary names and "
                  f"moved into place only when whole, so none was left half-written: free space and re-run",
                  file=sys.stderr)
            sys.exit(2)
    return wrapper
