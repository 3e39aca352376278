"""Agent checkpoints: model + optimiser + progress + the config that built them, loaded with weights_only=True.

A checkpoint is written to a temporary file and renamed into place, so a reader never sees half of one, and
carries the SHA-256 of its contents, so a flipped byte is refused instead of trained on.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch

from rlinterp.agent.model import RecurrentAgent
from rlinterp.config import AgentConfig, ConfigError, build_section
from rlinterp.errors import InputError
from rlinterp.files import atomic_path
from rlinterp.envs import NUM_ACTIONS, OBS_SHAPE

FORMAT = "rlinterp.agent/1"


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable, or does not match what the caller expects."""


def build_agent(config: AgentConfig, num_actions: int = NUM_ACTIONS) -> RecurrentAgent:
    return RecurrentAgent(OBS_SHAPE, num_actions, config.channels, config.blocks_per_stage, config.fc_size,
                          config.hidden_size, config.input_pool, config.input_downsample,
                          config.heads_input, config.init)


def content_digest(value: Any, digest: Any = None) -> str:
    """SHA-256 of a checkpoint's contents: every tensor's dtype, shape and bytes and every plain value, in order."""
    digest = digest or hashlib.sha256()
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(repr(key).encode())
            content_digest(value[key], digest)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            content_digest(item, digest)
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        digest.update(repr(value).encode())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any], fmt: str = FORMAT) -> None:
    """Atomically write `state` (tensors, state dicts and plain Python values only), tagged with `fmt` and the
    digest of its contents."""
    state = {"format": fmt, **state}
    with atomic_path(path) as tmp:
        torch.save({**state, "sha256": content_digest(state)}, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", fmt: str = FORMAT,
                    producer: str = "train_agent", remedy: str | None = None) -> dict[str, Any]:
    """A checkpoint of format `fmt` (written by stage `producer`), or a CheckpointError saying what is wrong and,
    for a damaged file, what to do (`remedy`; by default: delete and retrain, or restore the git-tracked copy)."""
    path = Path(path)
    what = fmt.split("/")[0].split(".")[-1]
    # A damaged file is also its producer's resume point, where re-running alone would meet it again.
    remedy = remedy or (f"delete it and re-run the {producer} stage (it then starts from the beginning), or "
                        f"restore it with `git checkout -- {path}`")
    if not path.is_file():
        raise CheckpointError(f"{path}: no {what} checkpoint here (expected the output of the {producer} stage)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused: the file holds pickled code or objects other than tensors and "
                              f"plain values, and rlinterp never runs code from a checkpoint (expected the "
                              f"output of the {producer} stage)") from None
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable {what} checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'no message'}); {remedy}") from None
    if not isinstance(state, dict) or state.get("format") != fmt:
        found = state.get("format") if isinstance(state, dict) else None
        raise CheckpointError(f"{path}: checkpoint format {found!r}, expected {fmt} (written by {producer}); "
                              f"{remedy}")
    stored = state.pop("sha256", None)
    if stored != content_digest(state):
        problem = "has no content checksum" if stored is None else "does not match its content checksum (damaged)"
        raise CheckpointError(f"{path}: {what} checkpoint {problem}; expected a whole checkpoint written by the "
                              f"{producer} stage: {remedy}")
    return state


def load_agent(path: str | Path, device: str | torch.device = "cpu",
               expected: AgentConfig | None = None) -> tuple[RecurrentAgent, dict[str, Any]]:
    """The trained agent in eval mode, and the checkpoint's metadata (config, step).

    With `expected`, a checkpoint built from other network params is refused rather than mis-loaded.
    """
    state = load_checkpoint(path, device)
    agent = build_agent(checkpoint_config(path, state, AgentConfig, "agent", expected, "train_agent")).to(device)
    agent.load_state_dict(state["model"])
    agent.eval()
    return agent, checkpoint_meta(state)


def checkpoint_config(path: str | Path, state: dict[str, Any], cls: type, section: str, expected: Any,
                      producer: str) -> Any:
    """The `section` params a checkpoint recorded, validated as `cls`; refused if they differ from `expected`
    (when given), so a model is never built from one set of params and loaded with weights of another."""
    try:
        config = build_section(cls, state["config"][section], section)
    except (KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"{path}: checkpoint has no valid {section} config ({err})") from err
    if expected is not None and config != expected:
        raise CheckpointError(f"{path}: checkpoint was built with {section} params {config}, but params.yaml has "
                              f"{expected}; re-run {producer} or restore the matching params")
    return config


def checkpoint_meta(state: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint says besides its weights (config, progress, provenance)."""
    return {k: v for k, v in state.items() if k not in ("model", "optimizer")}
