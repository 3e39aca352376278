"""Saliency through the simulator: which earlier frames, agent states and simulator states a target depends on.

A target is a scalar read from the agent at simulated step t: its value, the log-probability of an action, or
the activation of an hx direction (an independent component). SmoothGrad, as in the original: the sample's latent
is copied `noise_samples` times, every copy but the first perturbed by Gaussian noise of std `noise_scale` (and
re-normalised for the sphere bottleneck), the closed-loop rollout is run for the batch, and the gradients are
averaged over the copies. Optionally every copy's frames also get Gaussian noise of std `frame_noise_scale` where
the agent reads them (input-space SmoothGrad; the original perturbed only the latent). Gradients are read with
respect to the decoded frame, the agent hx and the simulator's deterministic state at every step (zero leaves added
where each tensor is made), and the latent itself.
With `env_grads=False` actions are detached before they enter the simulated environment, so a target reaches
earlier steps only through the agent's own memory.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from rlinterp.agent.model import RecurrentAgent
from rlinterp.hooks import attached
from rlinterp.simulator.model import Rollout, Simulator

Target = Callable[[Rollout, int], torch.Tensor]   # (rollout, t) -> (B,) one scalar per batch row


def value_target(rollout: Rollout, t: int) -> torch.Tensor:
    return rollout.agent_value[t]


def action_target(action: int) -> Target:
    def target(rollout: Rollout, t: int) -> torch.Tensor:
        return rollout.agent_logits[t].log_softmax(-1)[:, action]
    return target


def greedy_action_target(rollout: Rollout, t: int) -> torch.Tensor:
    """Log-probability of the action the agent takes (the original's 'action' target)."""
    return rollout.agent_logits[t].log_softmax(-1).max(-1).values


def direction_target(unmixing_row: np.ndarray, mean: np.ndarray) -> Target:
    """Activation of one hx direction: u . (hx - mean), e.g. a row of an ICA unmixing matrix."""
    u, m = torch.as_tensor(unmixing_row, dtype=torch.float32), torch.as_tensor(mean, dtype=torch.float32)

    def target(rollout: Rollout, t: int) -> torch.Tensor:
        return (rollout.agent_hx[t] - m.to(rollout.agent_hx)) @ u.to(rollout.agent_hx)
    return target


@dataclass
class SaliencyMaps:
    """Gradients of one target at one step t, averaged over the SmoothGrad copies; steps after t are zero."""
    frames: torch.Tensor    # (K, 3, S, S)
    agent_hx: torch.Tensor  # (K, H)
    env_h: torch.Tensor     # (K, deter)
    latent: torch.Tensor    # (bottleneck,)


def smoothgrad_latents(latent: torch.Tensor, copies: int, scale: float, sphere: bool,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """(copies, D): the latent itself, then copies perturbed by N(0, scale^2) (re-normalised on the sphere)."""
    noise = torch.randn(copies, latent.shape[-1], generator=generator, device=latent.device) * scale
    noise[0] = 0
    batch = latent.reshape(1, -1) + noise
    return F.normalize(batch, dim=-1) if sphere else batch


def saliency(simulator: Simulator, agent: RecurrentAgent, latent: torch.Tensor, steps: int,
             targets: dict[str, Target], timesteps: list[int], *, noise_samples: int = 9, noise_scale: float = 1.25e-4,
             frame_noise_scale: float = 0.0, env_grads: bool = True, generator: torch.Generator | None = None
             ) -> dict[tuple[str, int], SaliencyMaps]:
    """(target name, t) -> SaliencyMaps for one sample's latent (D,). One forward pass serves every target.

    Frame noise is drawn in the rollout's frame hook, so it reaches the agent and nothing else, and the frame maps
    are gradients at the noisy frame; every copy gets noise, the first included (frames have no 'exact' copy).
    """
    batch = smoothgrad_latents(latent, noise_samples, noise_scale, simulator.config.bottleneck == "sphere",
                               generator).requires_grad_(True)
    leaves: dict[str, list[torch.Tensor]] = {"frame": [], "env_h": [], "agent_hx": []}

    def add_leaf(kind: str):
        def hook(step: int, x: torch.Tensor) -> torch.Tensor:
            zero = torch.zeros_like(x, requires_grad=True)
            leaves[kind].append(zero)
            return x + zero
        return hook

    def frame_hook(step: int, frame: torch.Tensor) -> torch.Tensor:
        if frame_noise_scale > 0:
            noise = torch.randn(frame.shape, generator=generator, device=frame.device, dtype=frame.dtype)
            frame = frame + noise * frame_noise_scale
        return add_leaf("frame")(step, frame)

    with attached(agent, hx=add_leaf("agent_hx")), attached(simulator, frame=frame_hook, env_h=add_leaf("env_h")):
        rollout = simulator.rollout(batch, agent, steps, modal=True, env_grads=env_grads)
    results = {}
    pairs = [(name, t) for name in targets for t in timesteps]
    for index, (name, t) in enumerate(pairs):
        value = targets[name](rollout, t).mean()
        grads = torch.autograd.grad(value, [batch] + leaves["frame"] + leaves["agent_hx"] + leaves["env_h"],
                                    retain_graph=index < len(pairs) - 1, allow_unused=True)
        latent_grad, rest = grads[0], grads[1:]
        split = [rest[:steps], rest[steps:2 * steps], rest[2 * steps:]]
        kinds = [leaves["frame"], leaves["agent_hx"], leaves["env_h"]]
        # the target is the mean over copies, so summing its gradient over copies averages theirs (SmoothGrad)
        stacked = [torch.stack([g if g is not None else torch.zeros_like(leaf)
                                for g, leaf in zip(part, kind)]).sum(1) for part, kind in zip(split, kinds)]
        results[(name, t)] = SaliencyMaps(frames=stacked[0].detach(), agent_hx=stacked[1].detach(),
                                          env_h=stacked[2].detach(),
                                          latent=(latent_grad.sum(0) if latent_grad is not None
                                                  else torch.zeros_like(latent)).detach())
    return results


def combined_latent(latents: torch.Tensor, sphere: bool) -> torch.Tensor:
    """The original's combine mode: one latent, the mean of the chosen samples' (re-normalised on the sphere)."""
    mean = latents.mean(0)
    return F.normalize(mean, dim=-1) if sphere else mean


def blur(maps: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of (K, S, S) maps (kernel 0 or 1: unchanged)."""
    if kernel <= 1:
        return maps
    x = torch.arange(kernel, dtype=maps.dtype) - (kernel - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = (g / g.sum()).to(maps)
    out = F.conv2d(maps[:, None], g.view(1, 1, 1, -1), padding=(0, kernel // 2))
    return F.conv2d(out, g.view(1, 1, -1, 1), padding=(kernel // 2, 0))[:, 0]


def parse_ids(spec: list) -> list[int]:
    """Sample ids as written in params: explicit ids [0, 3, 7], or a range ["0 to 100"] (end exclusive)."""
    ids: list[int] = []
    for item in spec:
        if isinstance(item, str) and " to " in item:
            start, end = (int(v) for v in item.split(" to "))
            ids.extend(range(start, end))
        else:
            ids.append(int(item))
    return ids
