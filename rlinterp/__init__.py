"""rlinterp: interpret recurrent RL agents through a differentiable simulator of agent and environment."""
