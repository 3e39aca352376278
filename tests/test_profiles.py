"""Profiles are overlays: every key exists in params.yaml, applying one keeps the file's other lines."""
from pathlib import Path

import pytest
import yaml

from rlinterp.config import ConfigError, load_params
from rlinterp.profiles import apply, load_profile

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_profile_key_exists_in_the_defaults_and_differs(profile):
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    overlay = yaml.safe_load(profile.read_text())
    for section, values in overlay.items():
        for key, value in values.items():
            assert key in defaults[section], f"{profile.name}: {section}.{key} is not in params.yaml"
            assert defaults[section][key] != value, f"{profile.name}: {section}.{key} repeats the default"
    load_profile(ROOT / "params.yaml", profile)


def test_paper_profile_is_the_original_scale():
    paper = load_profile(ROOT / "params.yaml", ROOT / "profiles/paper.yaml")
    assert paper.env.distribution_mode == "hard" and paper.env.num_levels == 1_000_000
    assert paper.agent.channels == (16, 32, 32) and paper.agent.fc_size == 64 and paper.agent.hidden_size == 64
    assert paper.agent.input_pool == 1 and paper.agent.init == "reference"
    t = paper.train_agent
    assert (t.num_envs, t.num_steps, t.epochs, t.minibatches, t.total_steps) == (256, 256, 3, 8, 200_000_000)
    assert (t.learning_rate, t.gamma, t.gae_lambda, t.entropy_coef) == (5e-4, 0.999, 0.95, 0.01)
    assert paper.compute.device == "cuda"


def test_apply_rewrites_values_in_place_and_keeps_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    apply(params, ROOT / "profiles/paper.yaml")
    assert load_params(params) == load_profile(ROOT / "params.yaml", ROOT / "profiles/paper.yaml")
    before, after = (ROOT / "params.yaml").read_text().splitlines(), params.read_text().splitlines()
    assert len(before) == len(after)
    untouched = [a for a, b in zip(before, after) if a == b]
    assert len(untouched) > len(before) // 2 and any(line.startswith("#") for line in untouched)


def test_a_profile_with_an_unknown_key_is_refused_before_writing(tmp_path):
    params = tmp_path / "params.yaml"
    original = (ROOT / "params.yaml").read_text()
    params.write_text(original)
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  chanels: [4, 8]\n")
    with pytest.raises(ConfigError, match=r"agent.chanels is not a key of params.yaml"):
        apply(params, bad)
    assert params.read_text() == original
