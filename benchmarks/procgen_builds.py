"""Does another Procgen build play CoinRun exactly as the installed one? (issue 13: is the environment the cause?)

Plays the same levels with the same action sequence in two builds, each in its own process (both are imported
as `procgen`): the installed one, and the one unpacked at --other (a wheel's contents; any version from 0.9 on,
whose API is a baselines VecEnv before 0.10 and gym3 from 0.10). Prints the fraction of steps whose rewards,
episode starts and frames agree, and how many pixels differ where frames do not.

    pip download procgen==0.9.4 --no-deps --only-binary=:all: --python-version 3.8 \\
        --platform manylinux2010_x86_64 -d /tmp/procgen094
    python -m zipfile -e /tmp/procgen094/procgen-0.9.4-*.whl /tmp/procgen094/unpacked
    python benchmarks/procgen_builds.py --other /tmp/procgen094/unpacked

Procgen before 0.10 has no `use_backgrounds` / `restrict_themes` options (backgrounds on, every theme), so
both builds run with those settings.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Runs inside each build's process: `procgen` resolves to that build. Writes rewards, firsts and frames.
PLAYER = r"""
import contextlib, io, sys
import numpy as np
with contextlib.redirect_stderr(io.StringIO()):
    import procgen
out, num_envs, steps, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
options = dict(env_name="coinrun", distribution_mode="easy", num_levels=500, start_level=0, rand_seed=seed,
               num_threads=1)
gym3 = hasattr(procgen, "ProcgenGym3Env")
if gym3:
    env = procgen.ProcgenGym3Env(num=num_envs, use_backgrounds=True, restrict_themes=False, **options)
    reward, obs, first = env.observe()
else:
    env = procgen.ProcgenEnv(num_envs=num_envs, **options)
    obs, reward, first = env.reset(), np.zeros(num_envs), np.ones(num_envs, bool)
rng = np.random.default_rng(seed)
rewards, firsts, frames = [], [], []
for _ in range(steps):
    rewards.append(np.asarray(reward, np.float32)); firsts.append(np.asarray(first, bool))
    frames.append(np.array(obs["rgb"]))
    # mostly RIGHT+UP (the episodes get somewhere), sometimes any action (every game mechanic gets used)
    action = np.where(rng.random(num_envs) < 0.7, 8, rng.integers(0, 15, num_envs)).astype(np.int32)
    if gym3:
        env.act(action); reward, obs, first = env.observe()
    else:
        obs, reward, first, _ = env.step(action)
np.savez(out, reward=np.array(rewards), first=np.array(firsts), frames=np.array(frames),
         version=procgen.__file__)
"""


def play(build: str | None, out: Path, num_envs: int, steps: int, seed: int) -> dict[str, np.ndarray]:
    env = dict(os.environ)
    if build is not None:
        env["PYTHONPATH"] = os.pathsep.join([build, env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", PLAYER, str(out), str(num_envs), str(steps), str(seed)], env=env,
                   check=True)
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", required=True, help="directory holding the other build's `procgen` package")
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if not (Path(args.other) / "procgen").is_dir():
        raise SystemExit(f"--other {args.other}: expected a directory containing the package folder procgen/")
    with tempfile.TemporaryDirectory() as tmp:
        ours = play(None, Path(tmp) / "installed.npz", args.envs, args.steps, args.seed)
        other = play(args.other, Path(tmp) / "other.npz", args.envs, args.steps, args.seed)
    print(f"installed: {ours['version']}\nother:     {other['version']}")
    episodes = int(ours["first"][1:].sum())
    print(f"{args.envs} envs x {args.steps} steps, {episodes} episodes finished in the installed build, "
          f"{int((ours['reward'] > 0).sum())} of them completed")
    for key in ("reward", "first"):
        print(f"{key:7s} equal at {np.mean(ours[key] == other[key]):.4%} of env steps")
    same_frame = (ours["frames"] == other["frames"]).all(axis=(2, 3, 4))
    pixels = (ours["frames"] != other["frames"]).any(axis=-1)
    print(f"frames  identical at {same_frame.mean():.2%} of env steps; {pixels.mean():.4%} of all pixels differ, "
          f"by at most {int(np.abs(ours['frames'].astype(int) - other['frames']).max())} of 255 in a channel")


if __name__ == "__main__":
    main()
