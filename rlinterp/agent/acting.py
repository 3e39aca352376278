"""The agent acting on frames: as a policy that plays Procgen (sampling from its policy, taking its most likely
action, or with its hidden state zeroed before every step: the memoryless ablation), and replaying recorded
frames to read the hidden states it would have had."""
from __future__ import annotations

import numpy as np
import torch

from rlinterp.agent.checkpoint import build_agent
from rlinterp.agent.evaluate import ConstantPolicy
from rlinterp.agent.model import RecurrentAgent, sample_actions
from rlinterp.config import AgentConfig


class AgentPolicy:
    """The agent sampling from its policy; `memoryless` zeroes the hidden state before every step; `greedy` takes
    the most likely action (if that scores like a constant action, the policy's mode ignores what it sees)."""

    def __init__(self, agent: RecurrentAgent, seed: int, memoryless: bool = False, device: str = "cpu",
                 greedy: bool = False):
        self.agent, self.memoryless, self.greedy, self.device = agent, memoryless, greedy, torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.hx: torch.Tensor | None = None

    @torch.inference_mode()
    def __call__(self, obs: np.ndarray, first: np.ndarray) -> np.ndarray:
        if self.hx is None:
            self.hx = self.agent.initial_state(len(obs), self.device)
        reset = np.ones_like(first) if self.memoryless else first
        out = self.agent.step(torch.from_numpy(obs).to(self.device), self.hx,
                              torch.from_numpy(reset).to(self.device))
        self.hx = out.hx
        actions = out.logits.argmax(-1) if self.greedy else sample_actions(out.logits, self.generator)
        return actions.cpu().numpy()


@torch.inference_mode()
def replay_hidden_states(agent: RecurrentAgent, store, batch_episodes: int = 64,
                         device: str | torch.device = "cpu") -> np.ndarray:
    """(steps, hidden) hx of `agent` fed each episode of a RolloutStore's frames from a zeroed state, in the store's
    step order: e.g. what an untrained network's states look like on the frames a trained agent saw."""
    out = np.zeros((store.num_steps, agent.hidden_size), dtype=np.float32)
    for first in range(0, store.num_episodes, batch_episodes):
        episodes = np.arange(first, min(first + batch_episodes, store.num_episodes))
        starts, lengths = store.episode_starts[episodes], store.episode_ends[episodes] - store.episode_starts[episodes]
        frames = np.asarray(store["obs"][starts[0]:starts[-1] + lengths[-1]])   # consecutive episodes: one read
        hx = agent.initial_state(len(episodes), device)
        for t in range(int(lengths.max())):
            alive = lengths > t
            obs = torch.from_numpy(frames[starts[alive] + t - starts[0]]).to(device)
            hx[alive] = agent.step(obs, hx[alive], torch.zeros(int(alive.sum()), dtype=torch.bool, device=device)).hx
            out[starts[alive] + t] = hx[alive].cpu().numpy()
    return out


def untrained_agent(config: AgentConfig, seed: int, device: str | torch.device = "cpu") -> RecurrentAgent:
    """A randomly initialised (seeded), frozen agent of the `config` network: the null for what the architecture
    alone gives, before any learning."""
    torch.manual_seed(seed)
    return build_agent(config).to(device).eval().requires_grad_(False)


def untrained_hidden_states(config: AgentConfig, store, seed: int) -> np.ndarray:
    """`replay_hidden_states` of `untrained_agent(config, seed)` on a store's frames."""
    return replay_hidden_states(untrained_agent(config, seed), store)


def untrained_hidden_state_draws(config: AgentConfig, store, seed: int, draws: int) -> list[np.ndarray]:
    """`untrained_hidden_states` of `draws` initialisations, seeded seed, seed + 1, ...: the untrained-agent null
    as several draws, since one initialisation understates how much it moves."""
    return [untrained_hidden_states(config, store, seed + draw) for draw in range(draws)]


# The agent's policies, in the order reports and figures list them.
AGENT_POLICIES = ("agent", "memoryless_agent", "greedy_agent")


def agent_policies(agent: RecurrentAgent, seed: int, best_constant: dict[str, int], device: str = "cpu") -> dict:
    """Per level set: the trained agent, the same agent with its hidden state zeroed before every step, the agent
    taking its most likely action, and that level set's best constant action, replayed so that every comparison
    with it is paired episode by episode."""
    return {levels: {"agent": lambda: AgentPolicy(agent, seed, device=device),
                     "memoryless_agent": lambda: AgentPolicy(agent, seed, memoryless=True, device=device),
                     "greedy_agent": lambda: AgentPolicy(agent, seed, device=device, greedy=True),
                     "best_constant": lambda action=action: ConstantPolicy(action)}
            for levels, action in best_constant.items()}
