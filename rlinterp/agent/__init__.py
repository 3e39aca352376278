"""The recurrent IMPALA agent, its PPO training, and its checkpoints."""
