"""Simulator checkpoints, as agent checkpoints (`rlinterp/agent/checkpoint.py`, whose file format and checks they
share) plus the sha256 of the agent the simulator was trained beside: loading it beside another agent is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlinterp.agent.checkpoint import (CheckpointError, checkpoint_config, checkpoint_meta, load_agent,
                                       load_checkpoint)
from rlinterp.agent.model import RecurrentAgent
from rlinterp.config import AgentConfig, SimulatorConfig
from rlinterp.files import file_sha256
from rlinterp.simulator.model import Simulator

FORMAT = "rlinterp.simulator/1"


def build_simulator(config: SimulatorConfig, agent: RecurrentAgent) -> Simulator:
    return Simulator(config, agent.hidden_size, agent.num_actions)


def load_simulator(path: str | Path, agent: RecurrentAgent, agent_sha256: str, expected: SimulatorConfig | None = None,
                   device: str | torch.device = "cpu") -> tuple[Simulator, dict[str, Any]]:
    """The trained simulator in eval mode; refused if it was trained beside another agent or other params."""
    state = load_checkpoint(path, device, fmt=FORMAT, producer="train_simulator")
    if state.get("agent_sha256") != agent_sha256:
        raise CheckpointError(f"{path}: simulator was trained with agent sha256 {state.get('agent_sha256')}, but "
                              f"the agent given has sha256 {agent_sha256}; re-run train_simulator")
    config = checkpoint_config(path, state, SimulatorConfig, "simulator", expected, "train_simulator")
    simulator = build_simulator(config, agent).to(device)
    missing, unexpected = simulator.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: written by other simulator code (weights missing here: {missing}, "
                              f"not used here: {unexpected}); re-run train_simulator")
    simulator.eval()
    return simulator, checkpoint_meta(state)


def load_agent_and_simulator(agent_path: str | Path, simulator_path: str | Path, agent_config: AgentConfig,
                             simulator_config: SimulatorConfig, device: str | torch.device = "cpu"
                             ) -> tuple[RecurrentAgent, Simulator]:
    """The trained agent and the simulator trained beside it, both in eval mode, refused as `load_agent` and
    `load_simulator` refuse a mismatch. The agent's weights are frozen: stages that differentiate through the
    closed loop want gradients of frames and states, never of the agent."""
    agent, _ = load_agent(agent_path, device, expected=agent_config)
    agent.requires_grad_(False)
    simulator, _ = load_simulator(simulator_path, agent, file_sha256(agent_path), expected=simulator_config,
                                  device=device)
    return agent, simulator
