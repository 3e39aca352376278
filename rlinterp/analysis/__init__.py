"""Analyses of state vectors: pure functions on arrays."""
