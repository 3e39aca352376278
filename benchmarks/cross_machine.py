"""Which part of a run is not a function of checkpoint, params and seed across machines (issue 25.3)? Fingerprints
of each link of an evaluation, taken on this machine and compared with those other machines left behind:

    frames   Procgen frames of 8 envs over 300 steps of fixed random actions (the simulator of the game itself)
    logits   the committed agent's logits on those frames (torch's CPU kernels; max |difference| is printed)
    actions  actions sampled from those logits with a fixed generator (sampling)
    returns  the returns of 256 episodes played by the agent, as `evaluate_agent` plays them (the whole loop)

The first link that differs is the cause. Each machine writes benchmarks/results/cross_machine/<name>.npz (name:
CPU model and torch's vector capability); run this on a second machine and commit its file.

A second CPU can also be imitated on this one: --baseline-dispatch re-runs the script with every library on the
evaluation path that picks its code by CPU at run time held to plain x86-64 code (torch's ATen, oneDNN and MKL
kernels; glibc's libm, whose exp/log/sin Procgen's physics calls; Qt's raster painter, which draws Procgen's
frames), so a machine without AVX, FMA and SSE4 is compared without owning one.

    python benchmarks/cross_machine.py [--checkpoint data/agent/checkpoint.pt] [--baseline-dispatch]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rlinterp.agent.acting import AgentPolicy  # noqa: E402
from rlinterp.agent.checkpoint import load_agent  # noqa: E402
from rlinterp.agent.evaluate import level_sets, play_episodes  # noqa: E402
from rlinterp.agent.model import sample_actions  # noqa: E402
from rlinterp.config import load_params  # noqa: E402
from rlinterp.envs import NUM_ACTIONS, VecProcgen  # noqa: E402
from rlinterp.runtime import setup_torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "cross_machine"
BASELINE_DISPATCH = {  # each library's switch for its CPU-dispatched code, set to the plainest path
    "ATEN_CPU_CAPABILITY": "default",  # torch's own kernels
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # torch's convolutions
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",  # torch's matrix products
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX2,-FMA,-AVX,-F16C,-SSE4_1,-SSE4_2,-SSSE3,-BMI1,-BMI2",
    "QT_NO_CPU_FEATURE": "sse3 ssse3 sse4.1 sse4.2 avx avx2 f16c fma bmi bmi2 avx512f",  # Procgen's frame painter
}


def machine_name() -> str:
    model = platform.processor() or "cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model = found.group(1) if found else model
    dispatch = "baseline-dispatch" if all(os.environ.get(k) == v for k, v in BASELINE_DISPATCH.items()) else ""
    name = f"{model} {torch.backends.cpu.get_cpu_capability()} {dispatch}"
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


@torch.inference_mode()
def fingerprint(params, checkpoint: str) -> dict[str, np.ndarray]:
    agent, _ = load_agent(checkpoint, expected=params.agent)
    env = VecProcgen(params.env, 8, seed=7)
    actions = np.random.default_rng(0).integers(0, NUM_ACTIONS, size=(300, 8))
    frames, firsts = [], []
    for t in range(300):
        _, obs, first = env.observe()
        frames.append(obs.copy())
        firsts.append(first.copy())
        env.act(actions[t])
    frames, firsts = np.stack(frames), np.stack(firsts)
    hx, logits = agent.initial_state(8), []
    for t in range(300):
        out = agent.step(torch.from_numpy(frames[t]), hx, torch.from_numpy(firsts[t]))
        hx = out.hx
        logits.append(out.logits)
    logits = torch.stack(logits)
    sampled = sample_actions(logits.reshape(-1, logits.shape[-1]), torch.Generator().manual_seed(0))
    ev = params.evaluate
    start, count = level_sets(params.env, ev)["train_levels"]
    played = play_episodes(params.env, AgentPolicy(agent, ev.seed), ev.num_envs, 1, ev.seed, start, count,
                           progress=False)
    return {"frames_sha256": np.array(hashlib.sha256(frames.tobytes()).hexdigest()), "logits": logits.numpy(),
            "actions": sampled.numpy(), "returns": played.returns, "lengths": played.lengths}


def compare(mine: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> str:
    logit_gap = float(np.abs(mine["logits"] - theirs["logits"]).max())
    episodes = float(np.mean((mine["returns"] != theirs["returns"]) | (mine["lengths"] != theirs["lengths"])))
    return (f"frames {'same' if mine['frames_sha256'] == theirs['frames_sha256'] else 'DIFFER'}; logits max "
            f"|difference| {logit_gap:.2g}; sampled actions differ on {np.mean(mine['actions'] != theirs['actions']):.2%}"
            f"; episodes changed {episodes:.1%} (mean return {mine['returns'].mean():.3f} vs "
            f"{theirs['returns'].mean():.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="data/agent/checkpoint.pt")
    parser.add_argument("--baseline-dispatch", action="store_true",
                        help="imitate a CPU without AVX, FMA and SSE4 (re-runs itself with BASELINE_DISPATCH set)")
    args = parser.parse_args()
    if args.baseline_dispatch and any(os.environ.get(k) != v for k, v in BASELINE_DISPATCH.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **BASELINE_DISPATCH})
    params = load_params("params.yaml")
    setup_torch(params.compute)
    mine = fingerprint(params, args.checkpoint)
    again = fingerprint(params, args.checkpoint)
    name = machine_name()
    print(f"{name}: this machine against itself: {compare(mine, again)}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for other in sorted(RESULTS.glob("*.npz")):
        if other.stem != name:
            with np.load(other) as theirs:
                print(f"against {other.stem}: {compare(mine, dict(theirs))}")
    np.savez_compressed(RESULTS / f"{name}.npz", **mine)


if __name__ == "__main__":
    main()
