"""How far `metrics/agent.json` can move between machines: the committed agent evaluated as `evaluate_agent` does
(training levels, same seeds), once as is, once again (same machine: must be identical), and with its logits
perturbed by float-sized noise, as another CPU's kernels (a different summation order) would perturb them.

A sampled action flips only when its uniform draw falls within the perturbation of a boundary of the policy's
cumulative distribution, but after one flip that environment's remaining episodes play out differently. Prints the
paired difference of the mean return (95% CI) and the share of episodes that changed, for each noise scale, beside
the half-width of the agent's own 95% CI: differences of that order between machines are this effect, not a bug.

    python benchmarks/eval_sensitivity.py [--scales 1e-6 1e-4] [--checkpoint data/agent/checkpoint.pt]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rlinterp.agent.acting import AgentPolicy  # noqa: E402
from rlinterp.agent.checkpoint import load_agent  # noqa: E402
from rlinterp.agent.evaluate import level_sets, paired_difference, play_episodes  # noqa: E402
from rlinterp.config import load_params  # noqa: E402
from rlinterp.runtime import setup_torch  # noqa: E402


class PerturbedLogits(torch.nn.Module):
    """The agent's policy head plus Gaussian noise of std `scale` on every logit (its own generator)."""

    def __init__(self, head: torch.nn.Module, scale: float, seed: int):
        super().__init__()
        self.head, self.scale = head, scale
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x)
        return logits + self.scale * torch.randn(logits.shape, generator=self.generator).to(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1e-6, 1e-4])
    parser.add_argument("--checkpoint", default="data/agent/checkpoint.pt")
    args = parser.parse_args()
    params = load_params("params.yaml")
    setup_torch(params.compute)
    agent, _ = load_agent(args.checkpoint, expected=params.agent)
    start, count = level_sets(params.env, params.evaluate)["train_levels"]
    ev = params.evaluate

    def play():
        return play_episodes(params.env, AgentPolicy(agent, ev.seed), ev.num_envs, ev.episodes_per_env, ev.seed,
                             start, count, progress=False)

    plain, again = play(), play()
    half = (plain.summary()["ci95_high"] - plain.summary()["ci95_low"]) / 2
    print(f"{args.checkpoint}: mean return {plain.returns.mean():.3f} (95% CI half-width {half:.3f}) over "
          f"{len(plain.returns)} training-level episodes")
    print(f"same machine, run again: identical {np.array_equal(plain.returns, again.returns)}")
    head = agent.policy_head
    for scale in args.scales:
        agent.policy_head = PerturbedLogits(head, scale, seed=0)
        perturbed = play()
        agent.policy_head = head
        diff = paired_difference(perturbed, plain)
        changed = float(np.mean((perturbed.returns != plain.returns) | (perturbed.lengths != plain.lengths)))
        print(f"logits + N(0, {scale:g}^2): mean return {diff['mean']:+.3f} [{diff['ci95_low']:+.3f}, "
              f"{diff['ci95_high']:+.3f}], {changed:.1%} of episodes changed, |difference| / CI half-width "
              f"{abs(diff['mean']) / half:.2f}")


if __name__ == "__main__":
    main()
