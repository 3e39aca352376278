"""The trained agent as a policy that plays Procgen: sampling from its policy, taking its most likely action, or
with its hidden state zeroed before every step (the memoryless ablation)."""
from __future__ import annotations

import numpy as np
import torch

from rlinterp.agent.evaluate import ConstantPolicy
from rlinterp.agent.model import RecurrentAgent, sample_actions


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
