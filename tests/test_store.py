"""RolloutStore: round trip of every array, episode boundaries across shards, windows, and refusals."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from rlinterp.store import RolloutStore, RolloutWriter, StoreError, real_rollout_fields

FIELDS = real_rollout_fields(hidden_size=4, num_actions=3, obs_shape=(2, 2, 3))


def random_episode(rng, length):
    return {"obs": rng.integers(0, 256, (length, 2, 2, 3), dtype=np.uint8),
            "hx": rng.standard_normal((length, 4)).astype(np.float32),
            "logits": rng.standard_normal((length, 3)).astype(np.float32),
            "value": rng.standard_normal(length).astype(np.float32),
            "action": rng.integers(0, 3, length).astype(np.int32),
            "reward": rng.standard_normal(length).astype(np.float32),
            "done": np.arange(length) == length - 1,
            "level_seed": np.full(length, rng.integers(1000))}


def write_store(path, episodes, **kwargs):
    with RolloutWriter(path, FIELDS, {"stage": "test"}, chunk_steps=4, shard_steps=16, **kwargs) as writer:
        for i, episode in enumerate(episodes):
            writer.add_episode(episode, **{"return": float(episode["reward"].sum()),
                                           "level_seed": int(episode["level_seed"][0]), "completed": i % 2 == 0})
    return RolloutStore(path)


def test_round_trip_of_every_array_across_many_shards(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [random_episode(rng, int(n)) for n in rng.integers(1, 30, size=25)]   # ~370 steps, ~23 shards
    store = write_store(tmp_path / "r.zarr", episodes)
    assert store.num_episodes == 25 and store.num_steps == sum(len(e["obs"]) for e in episodes)
    for index, expected in enumerate(episodes):
        got = store.episode(index)
        assert set(got) == set(expected)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"episode {index} {name}")
    info = store.episode_info()
    np.testing.assert_array_equal(info["length"], [len(e["obs"]) for e in episodes])
    np.testing.assert_allclose(info["return"], [e["reward"].sum() for e in episodes], rtol=1e-6)
    np.testing.assert_array_equal(info["completed"], np.arange(25) % 2 == 0)
    # Boundaries: done exactly at each episode end, and ends are cumulative lengths.
    done = store["done"][:]
    np.testing.assert_array_equal(np.flatnonzero(done) + 1, store.episode_ends)
    # Files grow with shards, not with episodes: one file per shard per array plus metadata.
    shard_files = len(os.listdir(tmp_path / "r.zarr" / "obs" / "c"))
    assert shard_files == -(-store.num_steps // 16)


def test_plain_zarr_reads_the_store(tmp_path):
    rng = np.random.default_rng(1)
    episodes = [random_episode(rng, 5), random_episode(rng, 7)]
    write_store(tmp_path / "r.zarr", episodes)
    group = zarr.open_group(tmp_path / "r.zarr", mode="r")
    assert group.attrs["schema_version"] == 2 and group.attrs["complete"] is True
    np.testing.assert_array_equal(group["meta/episode_ends"][:], [5, 12])
    np.testing.assert_array_equal(group["hx"][5:12], episodes[1]["hx"])


def test_windows_are_cut_and_masked_at_episode_end(tmp_path):
    rng = np.random.default_rng(2)
    episodes = [random_episode(rng, 10), random_episode(rng, 6)]
    store = write_store(tmp_path / "r.zarr", episodes)
    w = store.windows(np.array([0, 7, 10]), length=5, fields=["obs", "action"])
    np.testing.assert_array_equal(w["mask"], [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(w["action"][1, :3], episodes[0]["action"][7:10])
    assert (w["obs"][1, 3:] == 0).all()
    np.testing.assert_array_equal(w["obs"][2], episodes[1]["obs"][:5])


def test_refuses_incomplete_other_version_and_inconsistent_stores(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "r.zarr"
    with pytest.raises(StoreError, match="no rollout store here"):
        RolloutStore(path)
    write_store(path, [random_episode(rng, 5)])
    group = zarr.open_group(path, mode="r+")
    group.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema_version 99, expected 2"):
        RolloutStore(path)
    group.attrs["schema_version"] = 2
    group.attrs["complete"] = False
    with pytest.raises(StoreError, match="incomplete"):
        RolloutStore(path)
    group.attrs["complete"] = True
    group["hx"].resize((4, 4))
    with pytest.raises(StoreError, match=r"arrays disagree in length: \{'hx': 4\}, expected 5 steps"):
        RolloutStore(path)


def damage_cases():
    """(what is damaged, how, the message a reader must give): each reads back silently wrong without a check."""
    def drop_shard(path):
        (path / "hx" / "c" / "1" / "0").unlink()         # the second of three 16-step shards: would read as zeros

    def drop_meta(path):
        shutil.rmtree(path / "meta" / "return")

    def swap_ends(path):
        ends = zarr.open_group(path, mode="r+")["meta/episode_ends"]
        values = ends[:]
        values[[0, 1]] = values[[1, 0]]
        ends[:] = values

    def corrupt(path, keep):
        shard = path / "obs" / "c" / "0" / "0" / "0" / "0"
        data = bytearray(shard.read_bytes())
        if keep is None:
            data[40] ^= 0x01                             # one flipped bit inside the compressed data
        shard.write_bytes(bytes(data[:keep] if keep else data))

    def flip_meta(path, name):
        chunk = path / "meta" / name / "c" / "0"
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x01
        chunk.write_bytes(bytes(data))

    def move_end(path):                                  # still increasing, but 10 -> 7 disagrees with lengths
        ends = zarr.open_group(path, mode="r+")["meta/episode_ends"]
        values = ends[:]
        values[0] -= 3
        ends[:] = values

    def rewrite(path, name, value):                      # an edit with a valid checksum: only consistency can tell
        array = zarr.open_group(path, mode="r+")[f"meta/{name}"]
        values = array[:]
        values[1] = value
        array[:] = values

    def obs_as_float(path):                              # frames rewritten as floats in [0, 1]
        group = zarr.open_group(path, mode="r+")
        frames = group["obs"][:].astype(np.float32) / 255
        del group["obs"]
        group.create_array("obs", data=frames, chunks=(16, 2, 2, 3))

    return [("missing shard", drop_shard, "hx is missing 1 of its blocks"),
            ("flipped bit in meta/return", lambda p: flip_meta(p, "return"), "meta/return: rows .* cannot be read"),
            ("flipped bit in meta/level_seed", lambda p: flip_meta(p, "level_seed"),
             "meta/level_seed: rows .* cannot be read"),
            ("moved episode end", move_end, "meta/length disagrees with the episode index's lengths in 2 episode"),
            ("return unlike the rewards", lambda p: rewrite(p, "return", 160.0),
             "meta/return disagrees with the sum of each episode's rewards in 1 episode.*first: episode 1"),
            ("level unlike the steps", lambda p: rewrite(p, "level_seed", 453),
             "meta/level_seed disagrees with the level seed at each episode's first step"),
            ("frames as floats", obs_as_float, "obs is float32 with shape .*, expected uint8 with 4 dimension"),
            ("missing meta array", drop_meta, "store has no meta/return"),
            ("episode ends out of order", swap_ends, "meta/episode_ends is not strictly increasing"),
            ("truncated shard", lambda p: corrupt(p, 30), "obs: rows .* cannot be read"),
            ("flipped bit", lambda p: corrupt(p, None), "obs: rows .* cannot be read")]


@pytest.mark.parametrize("name, damage, message", damage_cases(), ids=[c[0] for c in damage_cases()])
def test_damaged_stores_are_refused_with_one_clear_message(tmp_path, name, damage, message):
    rng = np.random.default_rng(5)
    path = tmp_path / "r.zarr"
    write_store(path, [random_episode(rng, n) for n in (10, 14, 20)])
    damage(path)
    with pytest.raises(StoreError, match=message) as err:
        RolloutStore(path).verify()
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_store_without_episodes_is_refused(tmp_path):
    with RolloutWriter(tmp_path / "empty.zarr", FIELDS, {"stage": "test"}, chunk_steps=4, shard_steps=16):
        pass
    with pytest.raises(StoreError, match="store holds no episodes; expected at least one"):
        RolloutStore(tmp_path / "empty.zarr")


def test_failed_writer_leaves_no_store(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "r.zarr"
    with pytest.raises(RuntimeError):
        with RolloutWriter(path, FIELDS, {}, chunk_steps=4, shard_steps=16) as writer:
            writer.add_episode(random_episode(rng, 40), **{"return": 0.0, "level_seed": 0, "completed": False})
            raise RuntimeError("interrupted")
    assert not path.exists() and list(tmp_path.iterdir()) == []


KILLED_WRITER = """
import sys, time, numpy as np
sys.path.insert(0, {tests!r})
from test_store import FIELDS, random_episode
from rlinterp.store import RolloutWriter
writer = RolloutWriter({path!r}, FIELDS, {{}}, chunk_steps=4, shard_steps=16)
rng = np.random.default_rng(0)
for i in range(1000000):
    writer.add_episode(random_episode(rng, 20), **{{"return": 0.0, "level_seed": 0, "completed": False}})
    if i == 20:
        print("writing", flush=True)
"""


def test_store_killed_mid_write_is_never_readable_as_complete(tmp_path):
    path = tmp_path / "r.zarr"
    code = KILLED_WRITER.format(tests=os.path.dirname(__file__), path=str(path))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not path.exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".r.zarr.incomplete-") for p in leftovers)
    with pytest.raises(StoreError, match="incomplete"):
        RolloutStore(leftovers[0])
    write_store(path, [random_episode(np.random.default_rng(0), 5)])    # the next writer clears the litter
    assert [p.name for p in tmp_path.iterdir()] == ["r.zarr"]


def test_the_store_loads_no_model_code():
    """Reading rollouts needs numpy and zarr only: `import rlinterp.store` pulls in neither torch nor the agent."""
    code = "import sys, rlinterp.store; print(sorted(m for m in ('torch', 'rlinterp.agent') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


FULL_DISK_STAGE = """
import resource, signal, sys, numpy as np
sys.path.insert(0, {tests!r})
from test_store import FIELDS, random_episode
from rlinterp.runtime import stage_main
from rlinterp.store import RolloutWriter

@stage_main
def main():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)              # the write fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))      # as a disk that fills up mid-write
    rng = np.random.default_rng(1)
    with RolloutWriter({path!r}, FIELDS, {{}}, chunk_steps=4, shard_steps=16) as writer:
        for _ in range(50):
            writer.add_episode(random_episode(rng, 20), **{{"return": 0.0, "level_seed": 0, "completed": False}})
main()
"""


def test_a_full_disk_ends_in_one_line_and_keeps_the_previous_store(tmp_path):
    path = tmp_path / "r.zarr"
    rng = np.random.default_rng(6)
    before = write_store(path, [random_episode(rng, 12)])["hx"][:]
    code = FULL_DISK_STAGE.format(tests=os.path.dirname(__file__), path=str(path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error: the disk is full") and len(result.stderr.strip().splitlines()) == 1
    np.testing.assert_array_equal(RolloutStore(path)["hx"][:], before)


def test_truncated_npz_and_json_inputs_end_in_one_line(tmp_path):
    """The analyses' bases, projections and labels (.npz) and the baselines (.json) a later stage reads: a truncated
    or missing file is an InputError naming it, which a stage prints as one line, not a zipfile or JSON traceback."""
    from rlinterp.analysis.decompose import Basis
    from rlinterp.errors import InputError
    from rlinterp.files import read_json, write_json

    basis = Basis(**{name: np.ones(2) for name in Basis.__dataclass_fields__})
    basis.save(tmp_path / "basis.npz")
    assert np.array_equal(Basis.load(tmp_path / "basis.npz").mean, np.ones(2))
    data = (tmp_path / "basis.npz").read_bytes()
    (tmp_path / "basis.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match=r"basis.npz: not a readable .npz .*re-run the stage that writes it"):
        Basis.load(tmp_path / "basis.npz")
    np.savez(tmp_path / "other.npz", mean=np.ones(2))
    with pytest.raises(InputError, match="other.npz: no array .*expected a basis written by the analyse stage"):
        Basis.load(tmp_path / "other.npz")
    write_json(tmp_path / "baselines.json", {"train": {"random": 1.0}})
    text = (tmp_path / "baselines.json").read_text()
    (tmp_path / "baselines.json").write_text(text[:len(text) // 2])
    with pytest.raises(InputError, match="baselines.json: not readable JSON"):
        read_json(tmp_path / "baselines.json")
    with pytest.raises(InputError, match="missing.json: no such file"):
        read_json(tmp_path / "missing.json")


def test_a_read_only_output_folder_ends_in_one_line(tmp_path):
    """A stage that may not write its output (a read-only data folder, a read-only file system) says so in one line,
    exit code 2, instead of a PermissionError traceback. (The tests run as root, whom chmod does not stop, so the
    stage meets the error the file system would raise.)"""
    code = ("import errno, sys\nfrom rlinterp.runtime import stage_main\n\n@stage_main\ndef main():\n"
            "    raise PermissionError(errno.EACCES, 'Permission denied', 'data/rollouts.zarr/.tmp')\nmain()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: no permission to write or read data/rollouts.zarr/.tmp (Permission denied)")
