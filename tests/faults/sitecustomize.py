"""Fault injection for tests/test_faults.py, active only in stage processes (`python stages/...`) and only when
its variables are set; it is on the path only when that test puts this folder on PYTHONPATH.

RLINTERP_RENAME_LOG=FILE  append "stage script and args<TAB>destination" for every os.replace, the moment an output moves into place
RLINTERP_KILL_AT_RENAME=N SIGKILL this process just before its N-th os.replace (1-based)
"""
import os
import signal
import sys

# The stage's script and arguments (a launcher in front, `python -m rlinterp.launch`, execs into the same line).
_SCRIPT = next((i for i, arg in enumerate(sys.orig_argv) if arg.startswith("stages/")), None)
_STAGE = " ".join(sys.orig_argv[_SCRIPT:]) if _SCRIPT is not None else None
_LOG = os.environ.get("RLINTERP_RENAME_LOG")
_KILL_AT = int(os.environ.get("RLINTERP_KILL_AT_RENAME", "0"))

if _STAGE and (_LOG or _KILL_AT):
    _replace = os.replace
    _count = 0

    def _faulty_replace(source, destination, *args, **kwargs):
        global _count
        _count += 1
        if _count == _KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        if _LOG:
            with open(_LOG, "a") as log:
                log.write(f"{_STAGE}\t{os.fspath(destination)}\n")
        return _replace(source, destination, *args, **kwargs)

    os.replace = _faulty_replace
