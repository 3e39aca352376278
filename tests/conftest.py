"""Shared fixtures: the project's params.yaml shrunk to sizes that run in seconds."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from rlinterp.config import Params, params_from_dict

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "compute": {"num_threads": 1},
    "agent": {"channels": [4, 8], "blocks_per_stage": 1, "fc_size": 32, "hidden_size": 16, "input_pool": 1},
    "train_agent": {"total_steps": 512, "num_envs": 8, "num_steps": 32, "bptt_steps": 16, "epochs": 1, "minibatches": 2,
                    "checkpoint_every": 1},
    "evaluate": {"num_envs": 4, "episodes_per_env": 1},
    "record": {"episodes": 8, "num_envs": 4, "chunk_steps": 32, "shard_steps": 128, "videos": 1},
}


def tiny_params_dict() -> dict:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        data[section].update(copy.deepcopy(values))
    return data


@pytest.fixture
def params_dict() -> dict:
    return tiny_params_dict()


@pytest.fixture
def params(params_dict) -> Params:
    return params_from_dict(params_dict)
