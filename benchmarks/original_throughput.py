"""PPO training throughput of the original implementation's train.py beside ours, on the same config, in one run.

Why: to put one number on how our training throughput compares with that of the code base this project
replicates (interpreting-rl-behavior, commit 0660b15). This measures both on one machine in one process, as
env steps/s of real training updates (collect a rollout in Procgen CoinRun, then one PPO update), warmed up
and interleaved round by round (ours, original, ours, original, ...) so neither side profits from running
first or last, and prints ours / original.

The original is not copied here: --original names a checkout of it, which is put on sys.path so that its own
modules run (train.py's create_venv with its env wrappers, ImpalaModel, CategoricalPolicy, Storage, PPO).
Make one without touching the mirror, then run (from the repository root):

    mkdir -p /tmp/original && git -C /work/.mirror/interpreting-rl-behavior+models--interpreting-rl-behavior/repo \\
        archive HEAD | tar -x -C /tmp/original
    python benchmarks/original_throughput.py --original /tmp/original [--updates 3] [--steps 64] [--envs 256]

Config: the original's hyperparameters `hard-rec` (its README's training command: 256 envs x 256 steps, 3
epochs, 8 minibatches per epoch, each accumulated in passes of 2,048 steps, recurrent) and its network (IMPALA 16/32/32 at 64x64, fc 64,
GRU 64); ours gets the same sizes through dataclasses.replace (as benchmarks/ppo_throughput.py builds its
"original widths"), keeping our own BPTT length. --envs and --steps apply to both; --steps defaults to 64 to
keep it short (throughput per step hardly depends on it). The environment is the original's: CoinRun, the
README's distribution mode and levels, no backgrounds (hard-coded in its create_venv), all themes. Each side
keeps its own Procgen threads (the original: train.py's default 8; ours: 2) and runs fp32 (--precision bf16
for ours).

One original update is one iteration of its `PPO.train` loop, rebuilt from its own calls (predict,
storage.store, store_last, compute_estimates, optimize, adjust_lr); the loop itself cannot be called per
update, as it resets and closes the envs. Each iteration also plays a validation rollout of the same length
in a second env set (train.py passes env_valid); it is timed apart, so the table shows the original with it
(what train.py does) and without it (collect + update only). Env steps count training steps only, like its
own `self.t`. Logging (logger.feed/dump, tensorboard) and checkpoint saving are left out.

Adaptations to this environment, kept thin:
- common/logger.py imports pandas and tensorboard, which are not installed; train.py imports it at the top,
  so where that import fails a stub `common.logger` (a Logger that refuses to be built) is registered
  before train.py is loaded. The benchmark never logs, and passes logger=None to PPO.
- Procgen is procgen2 0.10.7, whose `procgen.ProcgenEnv` is the baselines-style VecEnv (gym3's
  ToBaselinesVecEnv: 4-tuple step, dict observations) that the original's wrappers expect, and gym 0.26's
  spaces serve them as they are: no adapter is needed.
- device is cpu (train.py's --device cpu).
- With --envs below 8, both sides take --envs minibatches per epoch instead of 8 (each minibatch holds
  whole envs); the smoke test below needs it.

Smoke test (seconds): OMP_NUM_THREADS=1 python benchmarks/original_throughput.py --original /tmp/original \\
    --updates 1 --envs 4 --steps 16 --threads 1
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import math
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

import ppo_throughput                                # benchmarks/, the script's own folder
from rlinterp.config import load_params
from rlinterp.runtime import setup_torch

# The original's README training command: train.py --env_name coinrun --param_name hard-rec
# --num_levels 1000000 --distribution_mode hard (train.py's own default --param_name easy-200 is not recurrent).
ORIGINAL_COMMAND = dict(env_name="coinrun", param_name="hard-rec", num_levels=1_000_000, start_level=0,
                        distribution_mode="hard", num_threads=8)   # num_threads: train.py's default


def import_original(root: Path) -> types.SimpleNamespace:
    """The original's own modules, from its checkout at `root`."""
    sys.path.insert(0, str(root))
    try:
        import common.logger  # noqa: F401
    except ImportError:                              # pandas / tensorboard missing: logging is never used here
        stub = types.ModuleType("common.logger")

        class Logger:
            def __init__(self, *args, **kwargs):
                raise RuntimeError("the original's Logger needs pandas and tensorboard")
        stub.Logger = Logger
        sys.modules["common.logger"] = stub
    spec = importlib.util.spec_from_file_location("original_train", root / "train.py")
    train = importlib.util.module_from_spec(spec)
    with contextlib.redirect_stderr(io.StringIO()):  # gym 0.26's 'unmaintained' banner, as rlinterp.envs does
        spec.loader.exec_module(train)               # its __main__ block does not run
    from agents.ppo import PPO
    # CategoricalPolicy indexes hx with a list of 0-d tensors; torch warns that it will read such lists
    # differently one day. Its meaning today is the one the original ran with.
    warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
    from common.misc_util import adjust_lr, set_global_seeds
    return types.SimpleNamespace(train=train, PPO=PPO, adjust_lr=adjust_lr, set_global_seeds=set_global_seeds)


class OriginalTrainer:
    """The original's training loop, wired as its train.py does, one iteration per `update()`."""

    def __init__(self, orig, hyperparameters: dict, command: argparse.Namespace, total_updates: int):
        orig.set_global_seeds(0)
        device = torch.device("cpu")
        env = orig.train.create_venv(command, hyperparameters)
        env_valid = orig.train.create_venv(command, hyperparameters, is_valid=True)
        observation_shape = env.observation_space.shape
        model = orig.train.ImpalaModel(in_channels=observation_shape[0], out_features=64)
        policy = orig.train.CategoricalPolicy(model, hyperparameters["recurrent"], env.action_space.n)
        policy.to(device)
        n_steps, n_envs = hyperparameters["n_steps"], hyperparameters["n_envs"]
        storage = orig.train.Storage(observation_shape, model.output_dim, n_steps, n_envs, device)
        storage_valid = orig.train.Storage(observation_shape, model.output_dim, n_steps, n_envs, device)
        self.agent = orig.PPO(env, policy, None, storage, device, 1, env_valid, storage_valid, **hyperparameters)
        self.adjust_lr = orig.adjust_lr
        self.num_timesteps = total_updates * n_steps * n_envs
        self.train_state = self._initial_state(env)          # what PPO.train sets up before its loop
        self.valid_state = self._initial_state(env_valid)
        self.valid_seconds = 0.0

    def _initial_state(self, env):
        hidden_state = np.stack([self.agent.policy.init_hx.clone().detach().cpu().numpy()] * self.agent.n_envs)
        return env.reset(), hidden_state, np.zeros(self.agent.n_envs)

    def _rollout(self, env, storage, state):
        """PPO.train's rollout body (the same for training and validation envs)."""
        agent = self.agent
        obs, hidden_state, done = state
        for _ in range(agent.n_steps):
            act, log_prob_act, value, next_hidden_state = agent.predict(obs, hidden_state, done)
            next_obs, rew, done, info = env.step(act)
            storage.store(obs, hidden_state, act, rew, done, info, log_prob_act, value)
            obs = next_obs
            hidden_state = next_hidden_state
            if np.any(done):
                hidden_state[done] = agent.policy.init_hx.clone().detach().cpu().numpy()
        _, _, last_val, hidden_state = agent.predict(obs, hidden_state, done)
        storage.store_last(obs, hidden_state, last_val)
        storage.compute_estimates(agent.gamma, agent.lmbda, agent.use_gae, agent.normalize_adv)
        return obs, hidden_state, done

    def update(self) -> None:
        agent = self.agent
        agent.policy.eval()
        self.train_state = self._rollout(agent.env, agent.storage, self.train_state)
        start = time.perf_counter()
        self.valid_state = self._rollout(agent.env_valid, agent.storage_valid, self.valid_state)
        self.valid_seconds += time.perf_counter() - start
        agent.optimize()
        agent.t += agent.n_steps * agent.n_envs
        agent.optimizer = self.adjust_lr(agent.optimizer, agent.learning_rate, agent.t, self.num_timesteps)


def our_params(params, hyperparameters: dict, command: argparse.Namespace):
    """params.yaml with the original's environment, network and PPO sizes (and the simulator's frames at 64x64,
    which params.yaml's checks require of a 64x64 agent; the simulator takes no part here)."""
    steps = hyperparameters["n_steps"]
    return dataclasses.replace(
        params,
        simulator=dataclasses.replace(params.simulator, image_pool=1),
        env=dataclasses.replace(params.env, name=command.env_name, distribution_mode=command.distribution_mode,
                                num_levels=command.num_levels, start_level=command.start_level,
                                use_backgrounds=False, restrict_themes=False),
        agent=ppo_throughput.original_network(params.agent),
        train_agent=dataclasses.replace(params.train_agent, num_envs=hyperparameters["n_envs"], num_steps=steps,
                                        epochs=hyperparameters["epoch"],
                                        minibatches=hyperparameters["mini_batch_per_epoch"],
                                        bptt_steps=math.gcd(params.train_agent.bptt_steps, steps)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", type=Path, required=True, help="checkout of interpreting-rl-behavior")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--param-name", default=ORIGINAL_COMMAND["param_name"],
                        help="the original's hyperparameter set (hyperparams/procgen/config.yml)")
    parser.add_argument("--envs", type=int, default=None, help="parallel envs (default: the original's n_envs)")
    parser.add_argument("--steps", type=int, default=64, help="steps per env per rollout (original 256)")
    parser.add_argument("--updates", type=int, default=3, help="measured updates per side, after one warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: params.yaml's)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="our encoder's precision "
                        "(the original is fp32)")
    args = parser.parse_args()

    params = load_params(args.params)
    if args.threads:
        params = dataclasses.replace(params, compute=dataclasses.replace(params.compute, num_threads=args.threads))
    setup_torch(params.compute)
    orig = import_original(args.original.resolve())
    command = argparse.Namespace(**ORIGINAL_COMMAND)
    hyperparameters = yaml.safe_load((args.original / "hyperparams/procgen/config.yml").read_text())[args.param_name]
    hyperparameters["n_envs"] = args.envs or hyperparameters["n_envs"]
    hyperparameters["n_steps"] = args.steps
    # Both sides split each epoch's envs into minibatches: no more minibatches than envs.
    hyperparameters["mini_batch_per_epoch"] = min(hyperparameters["mini_batch_per_epoch"], hyperparameters["n_envs"])
    ours = our_params(params, hyperparameters, command)
    a, t, e = ours.agent, ours.train_agent, ours.env

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu; original: {args.original} "
          f"(param_name {args.param_name})")
    print(f"env (both): {e.name} {e.distribution_mode}, {e.num_levels} levels from {e.start_level}, "
          f"use_backgrounds {e.use_backgrounds} (hard-coded in the original's create_venv), "
          f"restrict_themes {e.restrict_themes}")
    print(f"ours:     IMPALA {list(a.channels)} x{a.blocks_per_stage} blocks at {64 // a.input_pool}x"
          f"{64 // a.input_pool}, fc {a.fc_size}, GRU {a.hidden_size}, {args.precision}; {t.num_envs} envs x "
          f"{t.num_steps} steps, {t.epochs} epochs, {t.minibatches} minibatches, BPTT {t.bptt_steps}; "
          f"procgen threads 2")
    h = hyperparameters
    batch = h["n_envs"] * h["n_steps"] // h["mini_batch_per_epoch"]
    print(f"original: IMPALA [16, 32, 32] x2 blocks at 64x64, fc 64, GRU 64 (recurrent {h['recurrent']}), fp32; "
          f"{h['n_envs']} envs x {h['n_steps']} steps, {h['epoch']} epochs, {h['mini_batch_per_epoch']} "
          f"minibatches of {batch} steps (in passes of {min(batch, h['mini_batch_size'])}), BPTT whole rollout; "
          f"+ a validation rollout per update; procgen threads {command.num_threads}")
    print(f"{args.updates} measured updates each after one warm-up, interleaved ours / original")

    runners = {"ours": ppo_throughput.Trainer(ours, ppo_throughput.Variant(args.precision)),
               "original": OriginalTrainer(orig, hyperparameters, command, args.updates + 1)}
    for runner in runners.values():
        runner.update()                              # warm-up: allocations, kernels, Procgen start
    seconds = {name: [] for name in runners}
    valid_seconds = []                               # the original's validation rollouts, within its seconds
    for _ in range(args.updates):
        valid_before = runners["original"].valid_seconds
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.update()
            seconds[name].append(time.perf_counter() - start)
        valid_seconds.append(runners["original"].valid_seconds - valid_before)

    steps = t.num_envs * t.num_steps
    print(f"\n{'update':>8s} {'ours':>9s} {'original':>9s} {'ratio':>6s}   {'original w/o valid':>18s} "
          f"{'ratio':>6s}   (env steps/s; ratio = ours / original)")
    rows = [(str(i + 1), s_ours, s_orig, v) for i, (s_ours, s_orig, v)
            in enumerate(zip(seconds["ours"], seconds["original"], valid_seconds))]
    rows.append(("all", sum(seconds["ours"]), sum(seconds["original"]), sum(valid_seconds)))
    for label, s_ours, s_orig, v in rows:
        n = steps * (args.updates if label == "all" else 1)
        ours_rate, orig_rate, core_rate = n / s_ours, n / s_orig, n / (s_orig - v)
        print(f"{label:>8s} {ours_rate:9.0f} {orig_rate:9.0f} {ours_rate / orig_rate:6.2f}   {core_rate:18.0f} "
              f"{ours_rate / core_rate:6.2f}")


if __name__ == "__main__":
    main()
