"""The generative model of agent-environment rollouts with the frozen agent in its loop."""
