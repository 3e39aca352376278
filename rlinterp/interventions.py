"""Editing the agent's hidden state along directions of a basis: swap two directions, or collapse one into the
nullspace. The same edit runs in the real environment and in the simulator, through the agent's `hook_hx`.

A basis gives, for each component k, a read-out u_k (an unmixing row: s_k = u_k . (hx - mean)) and a direction d_k
(hx ~ mean + sum_k s_k d_k) with u_j . d_k = 1 if j == k else 0 (true for the ICA and PCA bases of
rlinterp.analysis.decompose). Then
    collapse k:  hx' = hx - s_k d_k                  (the oblique projector P = I - d_k u_k^T: P d_k = 0, P^2 = P)
    swap i, j:   hx' = hx + (s_j - s_i) d_i + (s_i - s_j) d_j    (s'_i = s_j, s'_j = s_i, others unchanged)
The original's version (ORIGINAL.md section 7) edited only the state's update, swapped in the wrong direction and
returned the update as the state; here the state itself is edited, every step (or a chosen range of steps).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlinterp.analysis.decompose import Basis
from rlinterp.hooks import attached


@dataclass(frozen=True)
class Intervention:
    """`pairs` of (from, to): to = another component (swap) or None (collapse); empty = no edit."""
    readout: torch.Tensor      # (C, H) u_k
    directions: torch.Tensor   # (C, H) d_k
    mean: torch.Tensor         # (H,)
    pairs: tuple[tuple[int, int | None], ...]

    @classmethod
    def from_spec(cls, basis: Basis, kind: str, sources: list[int], targets: list[int | None]) -> Intervention:
        """The original's spec: `sources` [10, 5] with `targets` [12, None] swaps 10 with 12 and collapses 5."""
        if len(sources) != len(targets):
            raise ValueError(f"intervention from {sources} to {targets}: expected lists of equal length")
        readout, directions = {"ica": (basis.ica_unmixing, basis.ica_directions),
                               "pca": (basis.pca_components / basis.scale, basis.pca_components * basis.scale)}[kind]
        count = len(readout)
        for k in [*sources, *[t for t in targets if t is not None]]:
            if not 0 <= k < count:
                raise ValueError(f"intervention component {k}: expected 0 <= k < {count} ({kind} components)")
        as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        return cls(as_tensor(readout), as_tensor(directions), as_tensor(basis.mean), tuple(zip(sources, targets)))

    def __call__(self, hx: torch.Tensor) -> torch.Tensor:
        if not self.pairs:
            return hx
        readout, directions = self.readout.to(hx), self.directions.to(hx)
        s = (hx - self.mean.to(hx)) @ readout.T                      # (B, C) activations
        delta = torch.zeros_like(s)
        for source, target in self.pairs:
            if target is None:
                delta[:, source] -= s[:, source]
            else:
                delta[:, source] += s[:, target] - s[:, source]
                delta[:, target] += s[:, source] - s[:, target]
        return hx + delta @ directions


def intervene(agent, intervention: Intervention, steps: tuple[int, int | None] = (0, None)):
    """A context manager that applies `intervention` to the agent's hx (its `hx` hook point) at the passes
    start..stop-1 since entering (`steps`; one pass per environment or simulated step), in the real
    environment and in the simulator alike: `with intervene(agent, edit): ...`."""
    start, stop = steps

    def edit(step: int, hx: torch.Tensor) -> torch.Tensor | None:
        return intervention(hx) if step >= start and (stop is None or step < stop) else None
    return attached(agent, hx=edit)
