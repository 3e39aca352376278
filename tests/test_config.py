"""Every kind of bad parameter stops with one message naming the key, the value and what was expected."""
import pytest
import yaml

from rlinterp.config import ConfigError, load_params, params_from_dict
from tests.conftest import ROOT


def test_project_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.env.name == "coinrun"
    assert isinstance(params.agent.channels, tuple)


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*/params.yaml")),
                         ids=lambda p: p.parent.name)
def test_the_params_of_committed_benchmark_runs_still_load(path):
    """A run under benchmarks/results resumes (or is reproduced) from its own params.yaml: a param added to the
    project must be added there too, or its README's resume command fails."""
    load_params(path)


def test_every_params_key_has_a_comment():
    for number, line in enumerate((ROOT / "params.yaml").read_text().splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"params.yaml line {number} has no comment: {line!r}"


@pytest.mark.parametrize("section, key, value, expected", [
    ("train_agent", "learning_rate", -1.0, "train_agent.learning_rate = -1.0: expected a number > 0"),
    ("train_agent", "num_envs", "many", "train_agent.num_envs = 'many': expected an integer >= 1"),
    ("train_agent", "num_envs", 2.5, "train_agent.num_envs = 2.5: expected an integer"),
    ("train_agent", "anneal_lr", "yes", "train_agent.anneal_lr = 'yes': expected true or false"),
    ("train_agent", "gamma", 1.5, "train_agent.gamma = 1.5: expected a number > 0 and <= 1"),
    ("env", "name", "pong", "env.name = 'pong': expected a string one of bigfish"),
    ("env", "distribution_mode", "medium", "env.distribution_mode = 'medium'"),
    ("agent", "channels", [], "agent.channels = []: expected a non-empty list of int"),
    ("agent", "channels", [8, "x"], "agent.channels[1] = 'x': expected an integer"),
    ("agent", "input_downsample", "max", "agent.input_downsample = 'max': expected a string one of average"),
    ("simulator", "bottleneck", "gaussian", "simulator.bottleneck = 'gaussian': expected a string one of vae, sphere"),
    ("simulator", "image_pool", 3, "simulator.image_pool = 3: expected an integer one of 1, 2, 4"),
    ("train_simulator", "kl_balance", 1.5, "train_simulator.kl_balance = 1.5: expected a number >= 0 and <= 1"),
    ("analysis", "embedding_methods", ["pca"], "analysis.embedding_methods[0] = 'pca': expected a string one of tsne"),
    # non-finite numbers and list items obey the same ranges as single values
    ("train_agent", "learning_rate", 1e308, "train_agent.learning_rate = 1e+308: expected a number > 0 and <= 1"),
    ("train_agent", "learning_rate", float("inf"), "train_agent.learning_rate = inf: expected a finite number > 0"),
    ("train_agent", "max_grad_norm", float("inf"), "train_agent.max_grad_norm = inf: expected a finite number > 0"),
    ("train_agent", "gamma", float("nan"), "train_agent.gamma = nan: expected a finite number"),
    ("agent", "channels", [-4, 8], "agent.channels[0] = -4: expected an integer >= 1"),
    ("simulator", "encoder_channels", [8, 0], "simulator.encoder_channels[1] = 0: expected an integer >= 1"),
    ("behaviours", "lags", [0, 2], "behaviours.lags[0] = 0: expected an integer >= 1"),
    ("evaluate", "episodes_per_env", -1, "evaluate.episodes_per_env = -1: expected an integer >= 1"),
    ("validate", "interventions", [{"source": [0]}], "validate.interventions = [{'source': [0]}]: expected a "
                                                     "non-empty mapping of names to InterventionSpec"),
    ("validate", "interventions", {"bad": {"source": [0, 1], "target": [None]}},
     "intervention source [0, 1] and target [None]: expected lists of equal length"),
    ("validate", "interventions", {"typo": {"source": [0], "taget": [None]}},
     "unknown key validate.interventions.typo.taget"),
    # checks across sections
    ("agent", "input_pool", 1, "simulator.image_pool = 4 with agent.input_pool = 1 and input_downsample = average: "
                               "inside the simulator the agent would see frames upsampled from 16x16"),
    ("agent", "input_downsample", "space_to_depth", "simulator.image_pool = 4 with agent.input_pool = 4 and "
                                                    "input_downsample = space_to_depth"),
    ("simulator", "encoder_channels", [4, 4, 4, 4], "encoder_channels = [4, 4, 4, 4]: each halves the 16-pixel frame; "
                                                    "expected at most 3 entries"),
    ("saliency", "timesteps", [9], "saliency.timesteps = [9]: expected steps in [0, saliency.num_steps = 4)"),
    ("behaviours", "lags", [1, 9], "behaviours.lags = [1, 9]: expected lags shorter than sample.num_steps = 5"),
    ("sample", "event_samples", 3, "sample.event_samples = 3: expected at least sample.prior_samples = 4"),
])
def test_bad_values_name_key_value_and_expectation(params_dict, section, key, value, expected):
    params_dict[section][key] = value
    with pytest.raises(ConfigError) as err:
        params_from_dict(params_dict)
    assert expected in str(err.value)


def test_unknown_key(params_dict):
    params_dict["train_agent"]["learning_rat"] = 0.1
    with pytest.raises(ConfigError, match="unknown key train_agent.learning_rat: expected one of"):
        params_from_dict(params_dict)


def test_unknown_section(params_dict):
    params_dict["trian_agent"] = {}
    with pytest.raises(ConfigError, match="unknown key trian_agent"):
        params_from_dict(params_dict)


def test_missing_key(params_dict):
    del params_dict["env"]["num_levels"]
    with pytest.raises(ConfigError, match=r"missing key env.num_levels \(number of training levels"):
        params_from_dict(params_dict)


def test_cross_field_checks(params_dict):
    params_dict["train_agent"]["minibatches"] = 3
    with pytest.raises(ConfigError, match="minibatches = 3: expected a divisor of the 16 training sequences"):
        params_from_dict(params_dict)
    params_dict["train_agent"]["minibatches"] = 2
    params_dict["train_agent"]["bptt_steps"] = 5
    with pytest.raises(ConfigError, match="bptt_steps = 5: expected a divisor of train_agent.num_steps = 32"):
        params_from_dict(params_dict)
    params_dict["train_agent"]["bptt_steps"] = 16
    params_dict["evaluate"]["test_start_level"] = 10
    with pytest.raises(ConfigError, match="test_start_level = 10.*overlap the training levels"):
        params_from_dict(params_dict)
    # an unseen range that starts below the training levels but reaches into them overlaps too
    params_dict["env"]["start_level"] = 1000
    params_dict["evaluate"].update(test_start_level=0, test_num_levels=1001)
    with pytest.raises(ConfigError, match=r"unseen levels \[0, 1001\) overlap the training levels \[1000, "):
        params_from_dict(params_dict)
    params_dict["evaluate"]["test_num_levels"] = 1000
    params_from_dict(params_dict)
    # unlimited training levels would make "unseen" levels training ones; seeds past int32 end in gym3's assert
    with pytest.raises(ConfigError, match="num_levels = 0: unlimited training levels leave no level unseen"):
        params_from_dict({**params_dict, "env": {**params_dict["env"], "num_levels": 0}})
    with pytest.raises(ConfigError, match=r"unseen levels \[3000000000, .*expected level seeds below 2147483647"):
        params_from_dict({**params_dict, "evaluate": {**params_dict["evaluate"], "test_start_level": 3_000_000_000}})


def test_file_errors(tmp_path, params_dict):
    with pytest.raises(ConfigError, match="no such parameter file"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    lines = (ROOT / "params.yaml").read_text().splitlines()
    section = next(i for i, line in enumerate(lines) if line.startswith("train_agent:"))
    bad.write_text("\n".join([*lines[:section + 1], "  seed: 5  # given twice", *lines[section + 1:]]))
    with pytest.raises(ConfigError, match=f"bad.yaml: line {section + 3}: key 'seed' is given twice"):
        load_params(bad)
    # DVC's YAML 1.2 reads 3e-4 as a number (PyYAML's 1.1 would read a string): params are read the same way here
    bad.write_text("\n".join(line.replace("learning_rate: 0.0005", "learning_rate: 5e-4") for line in lines))
    assert load_params(bad).train_agent.learning_rate == 5e-4
    bad.write_bytes((ROOT / "params.yaml").read_bytes().replace(b"# ", b"# \xff", 1))
    with pytest.raises(ConfigError, match="bad.yaml: not UTF-8 text .*expected a UTF-8 YAML file"):
        load_params(bad)
    # an anchor bomb as a value (9^5 leaves): the message shows the start of its value, not all of it
    levels = ["&a [" + ", ".join(["x"] * 9) + "]"] + [
        f"&{name} [" + ", ".join([f"*{prev}"] * 9) + "]" for prev, name in zip("abcd", "bcde")]
    bad.write_text("\n".join(line.replace("learning_rate: 0.0005", f"learning_rate: [{', '.join(levels)}]")
                             for line in lines))
    with pytest.raises(ConfigError, match=r"train_agent.learning_rate = \[\['x', .*characters\): expected") as err:
        load_params(bad)
    assert len(str(err.value)) < 400, "a message must stay one readable line"
    params_dict["env"] = 3
    bad.write_text(yaml.safe_dump(params_dict))
    with pytest.raises(ConfigError, match="bad.yaml: env = 3: expected a mapping"):
        load_params(bad)
