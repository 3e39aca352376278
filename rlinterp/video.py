"""Rollout videos: frames to an animated GIF (plays in any browser and in the panel, no codec needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rlinterp.files import atomic_path


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 15.0, scale: int = 2) -> None:
    """Write (T, H, W, 3) uint8 frames, enlarged `scale` times (nearest neighbour), atomically."""
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(frame) for frame in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two (T, H, W, 3) clips next to each other; the shorter one holds its last frame, so both play to their
    end (an edited episode may last longer or shorter than its control)."""
    steps = max(len(left), len(right))
    left, right = (np.pad(clip, [(0, steps - len(clip))] + [(0, 0)] * 3, mode="edge") for clip in (left, right))
    return np.concatenate([left, right], axis=2)
