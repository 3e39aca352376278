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

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.nn import functional as F

from rlinterp.agent.model import RecurrentAgent
from rlinterp.analysis.decompose import Basis, data_like_directions
from rlinterp.envs import ACTION_NAMES
from rlinterp.errors import InputError
from rlinterp.hooks import attached
from rlinterp.saliency_store import KINDS, SaliencyStore, interval, mode_name
from rlinterp.simulator.model import Rollout, Simulator
from rlinterp.simulator.sample import SampleStart

Target = Callable[[Rollout, int], torch.Tensor]   # (rollout, t) -> (B,) one scalar per batch row
RANDOMISATION_TARGETS = ("value", "action", "ic_0")   # the targets the cascading randomisation check explains
REINITIALISATIONS = 2                                 # re-initialised copies per cascade step


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


def saliency(simulator: Simulator, agent: RecurrentAgent, start: SampleStart, steps: int,
             targets: dict[str, Target], timesteps: list[int], *, noise_samples: int = 9, noise_scale: float = 1.25e-4,
             frame_noise_scale: float = 0.0, env_grads: bool = True, generator: torch.Generator | None = None,
             actions: torch.Tensor | None = None) -> dict[tuple[str, int], SaliencyMaps]:
    """(target name, t) -> SaliencyMaps for one sample, re-simulated from its start (its latent, and an informed
    sample's real agent state and previous action). One forward pass serves every target.
    Every copy replays `actions` (steps,), default the sample's own (`start_of`), as the agent's choices.

    Frame noise is drawn in the rollout's frame hook, so it reaches the agent and nothing else, and the frame maps
    are gradients at the noisy frame; every copy gets noise, the first included (frames have no 'exact' copy).
    """
    batch = smoothgrad_latents(start.latent, noise_samples, noise_scale, simulator.config.bottleneck == "sphere",
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
        rollout = simulator.rollout(batch, agent, steps, modal=True, env_grads=env_grads,
                                    **start_of(start, len(batch), actions))
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
                                                  else torch.zeros_like(start.latent)).detach())
    return results


def saliency_targets(basis: Basis, every_action: bool, random_directions: int, seed: int) -> dict[str, Target]:
    """The value, the greedy action, optionally every action's log-probability, every hx IC, and
    `random_directions` random hx directions drawn from the states' covariance (`data_like_directions`, as the
    validation's matched random edits are), each read out with the norm of its matching IC's unmixing row (cycling
    through the ICs): the null an IC's saliency is read against."""
    unmixing = basis.ica_unmixing
    randoms = {f"random_direction_{k}": direction_target(
        direction * np.linalg.norm(unmixing[k % len(unmixing)]), basis.mean)
        for k, direction in enumerate(data_like_directions(basis, random_directions, seed))}
    actions = {f"action_{name}": action_target(a) for a, name in enumerate(ACTION_NAMES)} if every_action else {}
    return {"value": value_target, "action": greedy_action_target, **actions,
            **{f"ic_{k}": direction_target(row, basis.mean) for k, row in enumerate(unmixing)}, **randoms}


def start_of(start: SampleStart, copies: int, actions: torch.Tensor | None = None) -> dict:
    """rollout() keyword arguments starting `copies` rows from an informed sample's real state (none for a prior
    sample, whose converters predict it from each row's latent), each replaying `actions` (default: the sample's
    own; none: the agent takes its most likely action)."""
    kwargs: dict = {}
    if start.agent_hx is not None:
        kwargs.update(agent_hx=start.agent_hx.expand(copies, -1), action_prev=start.action_prev.expand(copies))
    actions = start.actions if actions is None else actions
    if actions is not None:
        kwargs.update(actions=actions[:, None].expand(-1, copies), action_steps=len(actions), replay=True)
    return kwargs


def explain_samples(simulator: Simulator, agent: RecurrentAgent, starts: list[SampleStart], samples: list, steps: int,
                    targets: dict[str, Target], timesteps: list[int], combine: bool = False,
                    **smoothgrad) -> SaliencyStore:
    """Saliency of every target at every timestep for each sample start, with and without gradients through the
    simulated environment; `smoothgrad` is passed on to `saliency`."""
    results: dict[bool, list] = {True: [], False: []}
    for start in starts:
        for env_grads in (True, False):
            results[env_grads].append(saliency(simulator, agent, start, steps, targets, timesteps,
                                               env_grads=env_grads, **smoothgrad))
    maps = {f"{mode_name(env_grads)}/{name}/{kind}":
            np.stack([[getattr(r[(name, t)], kind).cpu().numpy() for t in timesteps] for r in per_sample])
            for env_grads, per_sample in results.items() for name in targets for kind in KINDS}
    return SaliencyStore(samples, list(timesteps), list(targets), combine, maps)


def cascade(agent: RecurrentAgent) -> list[tuple[str, list[nn.Module]]]:
    """The agent's layer groups from the output down, the order Adebayo et al. (2018) re-initialise them in, one
    more at a time: the heads, the GRU, the fc layer, then each conv stage from the last."""
    stages = list(agent.encoder.stages)
    return [("heads", [agent.policy_head, agent.value_head]), ("gru", [agent.gru]), ("fc", [agent.encoder.fc]),
            *((f"conv_stage_{i}", [stages[i]]) for i in reversed(range(len(stages))))]


def randomised(agent: RecurrentAgent, groups: int, seed: int) -> RecurrentAgent:
    """A frozen copy of `agent` whose first `groups` cascade groups have fresh (seeded, PyTorch-default) weights."""
    copied = copy.deepcopy(agent)
    torch.manual_seed(seed)
    for _, modules in cascade(copied)[:groups]:
        for module in modules:
            for part in module.modules():
                if hasattr(part, "reset_parameters"):
                    part.reset_parameters()
    return copied.eval().requires_grad_(False)


def randomisation_check(simulator: Simulator, agent: RecurrentAgent, targets: dict[str, Target],
                        starts: list[SampleStart], steps: int, timesteps: list[int], seed: int,
                        **smoothgrad) -> dict:
    """Adebayo et al.'s (2018) cascading model-randomisation test. Per target, explained step and sample, the
    Spearman rank correlation of |frame saliency| (steps up to t) between the trained agent and copies with one more
    layer group re-initialised at a time (`cascade`, REINITIALISATIONS seeds each), on the same simulated trajectory
    (every copy follows the trained agent's actions, so the frames are identical). The null, stated before any
    measurement: what frames alone give, the correlation between two fully re-initialised copies. A target passes
    when the trained agent's maps correlate with the fully re-initialised ones less than those correlate with each
    other (per sample, averaged over steps and seeds; the 95% interval of the difference over samples below 0)."""
    groups = [name for name, _ in cascade(agent)]
    copies = {(g, r): randomised(agent, g, seed + r) for g in range(1, len(groups) + 1)
              for r in range(REINITIALISATIONS)}
    full = len(groups)
    rows: dict[tuple[str, int | str], list[float]] = {}
    for start in starts:
        actions = replay(simulator, agent, start, steps).agent_action[:, 0]

        def maps(model: RecurrentAgent) -> dict[tuple[str, int], np.ndarray]:
            result = saliency(simulator, model, start, steps, targets, timesteps, actions=actions, **smoothgrad)
            return {key: result[key].frames[:key[1] + 1].abs().flatten().cpu().numpy() for key in result}
        trained, other = maps(agent), {key: maps(model) for key, model in copies.items()}

        def correlation(name: str, first: dict, second: dict) -> float:
            return float(np.nanmean([stats.spearmanr(first[(name, t)], second[(name, t)]).statistic
                                     for t in timesteps]))
        for name in targets:
            for g in range(1, full + 1):
                rows.setdefault((name, g), []).append(float(np.nanmean(
                    [correlation(name, trained, other[(g, r)]) for r in range(REINITIALISATIONS)])))
            rows.setdefault((name, "null"), []).append(correlation(name, other[(full, 0)], other[(full, 1)]))
    report: dict = {"layers": groups, "reinitialisations": REINITIALISATIONS, "timesteps": list(timesteps),
                    "targets": {}}
    for name in targets:
        difference = interval(np.array(rows[(name, full)]) - np.array(rows[(name, "null")]))
        report["targets"][name] = {
            "trained_vs_randomised": [interval(np.array(rows[(name, g)])) for g in range(1, full + 1)],
            "randomised_vs_randomised": interval(np.array(rows[(name, "null")])),
            "difference": difference, "passes": bool(difference["ci95_high"] < 0)}
    report["passes"] = all(target["passes"] for target in report["targets"].values())
    return report


@torch.no_grad()
def replay(simulator: Simulator, agent: RecurrentAgent, start: SampleStart, steps: int):
    """One sample's closed-loop rollout (most likely states, its own actions) from its start: its stored trajectory
    again."""
    return simulator.rollout(start.latent[None], agent, steps, modal=True, **start_of(start, 1))


def combined_start(starts: list[SampleStart], sphere: bool) -> SampleStart:
    """The original's combine mode: one start, the mean of the chosen samples' latents (re-normalised on the
    sphere), from the converters' agent state."""
    mean = torch.stack([start.latent for start in starts]).mean(0)
    return SampleStart(F.normalize(mean, dim=-1) if sphere else mean)


def blur(maps: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of (K, S, S) maps (kernel 0 or 1: unchanged; odd sizes), reflecting at the borders so that
    they are not darkened by zero padding."""
    if kernel <= 1:
        return maps
    if kernel % 2 == 0:
        raise ValueError(f"blur kernel {kernel}: expected an odd size")
    x = torch.arange(kernel, dtype=maps.dtype) - (kernel - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = (g / g.sum()).to(maps)
    padded = F.pad(maps[:, None], (kernel // 2,) * 4, mode="reflect")
    return F.conv2d(F.conv2d(padded, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))[:, 0]

def parse_ids(spec: list, count: int, where: str) -> list[int]:
    """Sample ids as written in params: explicit ids [0, 3, 7], or a range ["0 to 100"] (end exclusive); each must
    be one of the `count` samples in `where`."""
    ids: list[int] = []
    for item in spec:
        if isinstance(item, str) and " to " in item:
            start, end = (int(v) for v in item.split(" to "))
            ids.extend(range(start, end))
        else:
            ids.append(int(item))
    bad = [i for i in ids if not 0 <= i < count]
    if bad or not ids:
        raise InputError(f"saliency.samples = {spec}: expected ids in [0, {count}) (the samples in {where}), "
                         f"got {bad or 'none'}")
    return ids
