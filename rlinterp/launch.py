"""Start a training stage as params.yaml's `compute` says: one process, or torchrun with `nproc_per_node` processes
on each of `nnodes` nodes (DistributedDataParallel; see `rlinterp.distributed`).

    python -m rlinterp.launch stages/train_agent.py --checkpoint ... (the stage's own arguments)

dvc.yaml starts train_agent and train_simulator this way, so `dvc repro` and `dvc exp run -S
compute.nproc_per_node=8` both pick their launch from the params. A multi-node run: node 0 runs `dvc repro`; every
other node runs the stage's command from dvc.yaml with NODE_RANK (1, 2, ...) and MASTER_ADDR (node 0's address)
set, on a file system that shares the repository.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from rlinterp.config import ComputeConfig, ConfigError, load_params
from rlinterp.runtime import stage_main


def distributed(compute: ComputeConfig) -> bool:
    return compute.nproc_per_node > 1 or compute.nnodes > 1


def command(compute: ComputeConfig, stage: list[str], environ: Mapping[str, str]) -> list[str]:
    """The command line that runs `stage` (a script and its arguments) as `compute` asks."""
    if not distributed(compute):
        return [sys.executable, *stage]
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={compute.nproc_per_node}"]
    if compute.nnodes == 1:
        return [*torchrun, "--standalone", *stage]
    missing = [name for name in ("MASTER_ADDR", "NODE_RANK") if not environ.get(name)]
    if missing:
        raise ConfigError(f"params.yaml: compute.nnodes = {compute.nnodes} needs {' and '.join(missing)} in the "
                          f"environment: expected MASTER_ADDR = node 0's address and NODE_RANK = this node's index "
                          f"(0 on the node that runs dvc repro)")
    return [*torchrun, f"--nnodes={compute.nnodes}", f"--node_rank={environ['NODE_RANK']}",
            f"--master_addr={environ['MASTER_ADDR']}", f"--master_port={compute.master_port}", *stage]


@stage_main
def main() -> None:
    if len(sys.argv) < 2:
        raise ConfigError("usage: python -m rlinterp.launch STAGE_SCRIPT [ARGS...]")
    compute = load_params("params.yaml").compute
    argv = command(compute, sys.argv[1:], os.environ)
    if distributed(compute):
        # torchrun would set 1 thread per process and warn; share the node's cores among its processes instead.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // compute.nproc_per_node)))
    sys.stdout.flush()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
