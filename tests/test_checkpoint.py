"""Checkpoints round-trip, resume training where it stopped, and refuse what does not match."""
import dataclasses

import pytest
import torch

from rlinterp.agent.checkpoint import CheckpointError, load_agent, load_checkpoint, save_checkpoint
from rlinterp.agent.train import train_agent
from rlinterp.files import code_sha256


@pytest.fixture
def tiny_train(params):
    return dataclasses.replace(params.train_agent, num_envs=4, num_steps=16, minibatches=2, total_steps=128)


def test_round_trip_and_resume(params, tiny_train, tmp_path):
    path = tmp_path / "agent.pt"
    first = train_agent(params.env, params.agent, tiny_train, path, progress=False)
    assert first["total_steps"] == 128 and first["resumed_from_step"] == 0
    state = load_checkpoint(path)
    assert state["step"] == 128 and state["update"] == 2 and "optimizer" in state

    agent, meta = load_agent(path, expected=params.agent)
    for name, tensor in agent.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    assert meta["step"] == 128

    # Raising total_steps extends the finished run from its checkpoint; the summary counts the whole run.
    longer = dataclasses.replace(tiny_train, total_steps=256)
    extended = train_agent(params.env, params.agent, longer, path, progress=False)
    assert extended["resumed_from_step"] == 128 and extended["total_steps"] == 256
    assert load_checkpoint(path)["update"] == 4
    assert extended["train_seconds"] > first["train_seconds"]

    # Any other change of run starts again rather than mixing two runs.
    other = dataclasses.replace(longer, learning_rate=longer.learning_rate * 2)
    assert train_agent(params.env, params.agent, other, path, progress=False)["resumed_from_step"] == 0

    # A run that dies during its third update continues from the checkpoint of its second.
    path.unlink()

    def crash_in_third_update(step, stats):
        if step > 128:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_agent(params.env, params.agent, longer, path, log=crash_in_third_update, progress=False)
    assert load_checkpoint(path)["step"] == 128
    resumed = train_agent(params.env, params.agent, longer, path, progress=False)
    assert resumed["resumed_from_step"] == 128 and resumed["total_steps"] == 256
    assert load_checkpoint(path)["update"] == 4


def test_mismatched_and_broken_checkpoints(params, tiny_train, tmp_path):
    path = tmp_path / "agent.pt"
    train_agent(params.env, params.agent, tiny_train, path, progress=False)
    other = dataclasses.replace(params.agent, hidden_size=params.agent.hidden_size + 1)
    with pytest.raises(CheckpointError, match="built with agent params"):
        load_agent(path, expected=other)
    with pytest.raises(CheckpointError, match="no agent checkpoint here"):
        load_agent(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable agent checkpoint"):
        load_agent(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="checkpoint format None, expected rlinterp.agent/1"):
        load_agent(foreign)


class Payload:
    """A callable a hostile checkpoint could carry: unpickling it would run code."""
    def __reduce__(self):
        return (print, ("code ran",))


def test_damaged_and_hostile_checkpoints_are_refused(params, tiny_train, tmp_path, capsys):
    path = tmp_path / "agent.pt"
    train_agent(params.env, params.agent, tiny_train, path, progress=False)
    state = torch.load(path, weights_only=True)
    # Flipped bytes inside a weight load as valid tensors; the content checksum refuses them.
    state["model"]["policy_head.weight"][0, :16] += 1.0
    flipped = tmp_path / "flipped.pt"
    torch.save(state, flipped)
    with pytest.raises(CheckpointError, match="does not match its content checksum"):
        load_agent(flipped)
    # As a training run's resume point it is left as it was, with the way out named: re-running alone cannot help.
    damaged = flipped.read_bytes()
    with pytest.raises(CheckpointError, match="delete it and re-run the train_agent stage"):
        train_agent(params.env, params.agent, tiny_train, flipped, progress=False)
    assert flipped.read_bytes() == damaged
    # A pickled callable is refused by name, without torch's advice to load it unsafely, and never runs.
    hostile = tmp_path / "hostile.pt"
    torch.save({**state, "extra": Payload()}, hostile)
    with pytest.raises(CheckpointError, match="refused: the file holds pickled code") as err:
        load_agent(hostile)
    assert "weights_only=False" not in str(err.value) and "code ran" not in capsys.readouterr().out
    # The simulator's checkpoint format is not an agent's.
    simulator = tmp_path / "simulator.pt"
    save_checkpoint(simulator, {"model": {}}, fmt="rlinterp.simulator/1")
    with pytest.raises(CheckpointError, match="format 'rlinterp.simulator/1', expected rlinterp.agent/1"):
        load_agent(simulator)


def test_entropy_bonus_follows_its_schedule_into_the_loss_and_across_a_resume(params, tiny_train, tmp_path):
    decaying = dataclasses.replace(tiny_train, total_steps=256, entropy_coef=0.01, entropy_coef_final=0.0,
                                   entropy_decay_steps=256)
    straight, resumed = [], []
    train_agent(params.env, params.agent, decaying, tmp_path / "straight.pt", progress=False,
                log=lambda step, stats: straight.append(stats["entropy_coef"]))
    assert straight == pytest.approx([0.01, 0.0075, 0.005, 0.0025])

    def crash_in_third_update(step, stats):
        resumed.append(stats["entropy_coef"])
        if step > 128:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_agent(params.env, params.agent, decaying, tmp_path / "resumed.pt", progress=False,
                    log=crash_in_third_update)
    train_agent(params.env, params.agent, decaying, tmp_path / "resumed.pt", progress=False,
                log=lambda step, stats: resumed.append(stats["entropy_coef"]))
    assert resumed[:2] + resumed[3:] == straight      # the crashed update is repeated with its own coefficient

    # The scheduled weight is the one the loss uses: the first update (0.01) matches a constant bonus of 0.01, the
    # second (0.0075 against 0.01) does not.
    constant = dataclasses.replace(decaying, entropy_coef_final=0.01)
    for updates, same in ((1, True), (2, False)):
        weights = [load_checkpoint(train_agent_at(params, run, updates, tmp_path / f"{name}{updates}.pt"))["model"]
                   for name, run in (("decaying", decaying), ("constant", constant))]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]) == same, updates


def train_agent_at(params, config, updates, path):
    """Train `config` for its first `updates` updates into `path` and return the path."""
    steps = updates * config.num_envs * config.num_steps
    train_agent(params.env, params.agent, dataclasses.replace(config, total_steps=steps), path, progress=False)
    return path


def test_resumed_curves_hold_each_step_once(tmp_path):
    """A run killed after logging steps past its last checkpoint logs them again when resumed: the curves keep
    each step once, the resumed run's value."""
    from rlinterp.runtime import training_curves

    with training_curves(str(tmp_path), resume_from=None) as log:
        for step in (10, 20, 30, 40):        # checkpoint at 20, killed after logging 40
            log(step, {"loss": 1.0})
    with training_curves(str(tmp_path), resume_from=20) as log:
        for step in (30, 40, 50):
            log(step, {"loss": 2.0})
    rows = (tmp_path / "plots" / "metrics" / "loss.tsv").read_text().split()
    assert rows == ["step", "loss", "10", "1.0", "20", "1.0", "30", "2.0", "40", "2.0", "50", "2.0"]


def test_a_run_that_fails_before_its_first_point_keeps_the_previous_curves(tmp_path):
    from rlinterp.runtime import training_curves

    with training_curves(str(tmp_path), resume_from=None) as log:
        log(10, {"loss": 1.0})
    before = (tmp_path / "plots" / "metrics" / "loss.tsv").read_text()
    with pytest.raises(FloatingPointError):
        with training_curves(str(tmp_path), resume_from=None):
            raise FloatingPointError("the first update diverged")
    assert (tmp_path / "plots" / "metrics" / "loss.tsv").read_text() == before
    with training_curves(str(tmp_path), resume_from=None) as log:     # a run that logs replaces them
        log(5, {"loss": 2.0})
    assert (tmp_path / "plots" / "metrics" / "loss.tsv").read_text().split() == ["step", "loss", "5", "2.0"]


def test_the_code_hash_a_checkpoint_records_ignores_documentation_only(tmp_path):
    """A docstring or comment edit keeps a long run resumable; a code edit does not."""
    source = '"""Module doc."""\n\ndef f(x):\n    """Doc."""\n    return x + 1  # comment\n'
    edits = {"documented": source.replace("Doc.", "Other words, longer.").replace("# comment", "# another"),
             "coded": source.replace("x + 1", "x + 2")}
    paths = {}
    for name, text in {"original": source, **edits}.items():
        paths[name] = tmp_path / f"{name}.py"
        paths[name].write_text(text)
    original = code_sha256([paths["original"]])
    assert code_sha256([paths["documented"]]) == original
    assert code_sha256([paths["coded"]]) != original
