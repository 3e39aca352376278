"""Shared fixtures: the project's params.yaml shrunk to sizes that run in seconds."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from rlinterp.config import Params, params_from_dict

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "compute": {"num_threads": 1, "precision": "fp32"},
    # plain frames: the tiny runs check plumbing, and their noise bands (e.g. one vs two processes) were set on them
    "env": {"use_backgrounds": False, "restrict_themes": True},
    "agent": {"channels": [4, 8], "blocks_per_stage": 1, "fc_size": 32, "hidden_size": 16, "input_pool": 4,
              "input_downsample": "average", "heads_input": "hx", "init": "pytorch"},
    "train_agent": {"total_steps": 512, "num_envs": 8, "num_steps": 32, "bptt_steps": 16, "epochs": 1, "minibatches": 2,
                    "checkpoint_every": 1},
    "evaluate": {"num_envs": 4, "episodes_per_env": 1},
    "record": {"episodes": 8, "num_envs": 4, "chunk_steps": 32, "shard_steps": 128, "videos": 1},
    "simulator": {"num_sim_steps": 4, "image_pool": 4, "bottleneck_size": 8, "encoder_channels": [4, 8],
                  "encoder_gru_size": 16, "deter_size": 16, "stoch_groups": 4, "stoch_classes": 4, "hidden_size": 16,
                  "decoder_depth": 4, "embed_depth": 4, "head_layers": 1, "head_size": 8},
    "train_simulator": {"total_windows": 16, "batch_size": 4, "eval_windows": 8, "prior_fit_windows": 32,
                        "calibration_windows": 16, "num_workers": 0, "log_every": 1, "checkpoint_every": 2},
    "sample": {"prior_samples": 4, "event_samples": 6, "informed_samples": 1, "num_steps": 5, "batch_size": 4,
               "videos": 2},
    "prediction_quality": {"windows": 8, "num_steps": 5, "batch_size": 4, "videos": 1},
    "analysis": {"reset_steps": 1, "fit_samples": 2000, "pca_components": 8, "ica_components": 4,
                 "nmf_components": 4, "clusters": 4, "embedding_methods": ["tsne"], "embedding_samples": 200,
                 "example_episodes": 2, "exemplars": 2, "untrained_agents": 2},
    "behaviours": {"lags": [1, 2], "env_components": 4, "clusters": 3, "videos": 1},
    "saliency": {"samples": ["0 to 3"], "stored_samples": 2, "random_directions": 2, "num_steps": 4,
                 "timesteps": [2], "noise_samples": 2, "videos": 1},
    "validate": {"interventions": {"collapse_ic0": {"source": [0], "target": [None]}}, "num_envs": 4,
                 "episodes_per_env": 1, "sim_samples": 4, "random_edits": 2,
                 "bootstrap_samples": 200, "videos": 1},
    "dynamics": {"max_lag": 2, "target_step": 3, "samples": 4, "batch_size": 2, "plotted_behaviours": 1},
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


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """The tiny pipeline reproduced once per test session (tests/tiny_repo.py); the end-to-end and fault tests
    share it."""
    from tests.tiny_repo import reproduce
    return reproduce(tmp_path_factory.mktemp("tiny"), tiny_params_dict())
