"""Stage record: the trained agent's real rollouts into data/rollouts.zarr, with metrics and a few videos."""
import time

from rlinterp.agent.checkpoint import load_agent
from rlinterp.files import file_sha256
from rlinterp.agent.evaluate import level_sets
from rlinterp.config import config_hash, load_params, to_dict
from rlinterp.envs import NUM_ACTIONS
from rlinterp.record import record_rollouts
from rlinterp.runtime import setup_torch, stage_main, stage_paths
from rlinterp.files import write_json
from rlinterp.store import RolloutStore, RolloutWriter, real_rollout_fields, store_size
from rlinterp.video import write_gif


@stage_main
def main() -> None:
    paths = stage_paths("checkpoint", "store", "metrics", "videos")
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    config = params.record
    agent, _ = load_agent(paths.checkpoint, device, expected=params.agent)
    start_level, num_levels = level_sets(params.env, params.evaluate)[f"{config.levels}_levels"]
    attrs = {"stage": "record", "params_hash": config_hash(params.env, params.agent, config),
             "agent_sha256": file_sha256(paths.checkpoint), "env": to_dict(params.env),
             "levels": {"start_level": start_level, "num_levels": num_levels}}
    fields = real_rollout_fields(params.agent.hidden_size, NUM_ACTIONS)
    tic = time.perf_counter()
    with RolloutWriter(paths.store, fields, attrs, config.chunk_steps, config.shard_steps) as writer:
        env_steps = record_rollouts(params.env, agent, writer, config.num_envs, config.episodes // config.num_envs,
                                    config.seed, start_level, num_levels, device)
    seconds = time.perf_counter() - tic

    store = RolloutStore(paths.store)
    info = store.episode_info()
    size = store_size(paths.store)
    write_json(paths.metrics, {
        "episodes": store.num_episodes, "steps": store.num_steps, "mean_return": float(info["return"].mean()),
        "completion_rate": float(info["completed"].mean()), "mean_length": float(info["length"].mean()),
        "bytes_on_disk": size["bytes"], "files": size["files"], "bytes_per_step": size["bytes"] / store.num_steps,
        "obs_compression_ratio": store["obs"].nbytes / store["obs"].nbytes_stored(),
        "steps_per_s": env_steps / seconds})
    for index in range(min(config.videos, store.num_episodes)):
        episode = store.episode(index, ["obs"])
        write_gif(f"{paths.videos}/episode_{index:03d}.gif", episode["obs"])


if __name__ == "__main__":
    main()
