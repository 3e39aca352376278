"""Stage sample: simulated rollouts (prior and informed starts) into data/samples.zarr, with a few GIFs, and
metrics/sample.json: whether they reward and end as often as real windows of their length (prior samples counted
beyond the stored ones, `sample.event_samples`), and whether their returns are ones the game allows."""
import numpy as np

from rlinterp.config import config_hash, load_params
from rlinterp.files import file_sha256, write_json
from rlinterp.runtime import StageError, setup_torch, stage_main, stage_paths
from rlinterp.simulator.data import simulator_split
from rlinterp.simulator.sample import (event_rates, game_realism, informed_first_transition, prior_events,
                                       record_samples, sample_fields, stored_events)
from rlinterp.simulator.checkpoint import load_agent_and_simulator
from rlinterp.store import RolloutStore, RolloutWriter
from rlinterp.video import write_gif


@stage_main
def main() -> None:
    paths = stage_paths("agent", "simulator", "real", "store", "metrics", "videos")
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    config = params.sample
    agent, simulator = load_agent_and_simulator(paths.agent, paths.simulator, params.agent, params.simulator, device)
    real = RolloutStore(paths.real)
    test = simulator_split(real, params.train_simulator).test
    long_enough = test[real.episode_ends[test] - real.episode_starts[test] >= simulator.config.num_init_steps]
    if config.informed_samples > len(long_enough):
        raise StageError(f"sample.informed_samples = {config.informed_samples}: expected at most the "
                         f"{len(long_enough)} test-level episodes of {paths.real} (one sample per episode)")
    informed = np.random.default_rng(config.seed).choice(long_enough, config.informed_samples, replace=False)
    attrs = {"stage": "sample", "params_hash": config_hash(params.agent, params.simulator, config),
             "agent_sha256": file_sha256(paths.agent), "simulator_sha256": file_sha256(paths.simulator),
             "real_store": paths.real, "prior_samples": config.prior_samples,
             "informed_samples": config.informed_samples}
    with RolloutWriter(paths.store, sample_fields(simulator), attrs, chunk_steps=256, shard_steps=8192) as writer:
        record_samples(simulator, agent, writer, prior_samples=config.prior_samples, informed_episodes=informed,
                       real=real, steps=config.num_steps, batch_size=config.batch_size, seed=config.seed,
                       modal=config.modal, actions=config.actions, events=config.events, device=device)
    samples = RolloutStore(paths.store)
    kinds = {"prior": np.arange(config.prior_samples),
             "informed": np.arange(config.prior_samples, samples.num_episodes)}
    events = {kind: stored_events(samples, rows) for kind, rows in kinds.items()}
    if config.event_samples > config.prior_samples:     # more prior samples, counted and not stored
        more = prior_events(simulator, agent, config.event_samples - config.prior_samples, steps=config.num_steps,
                            batch_size=config.batch_size, seed=config.seed + 1, modal=config.modal,
                            actions=config.actions, events=config.events, device=device)
        events["prior"] = {name: np.concatenate([events["prior"][name], more[name]]) for name in more}
    # the real episodes each kind is compared with, and the step their windows start from (None: every step)
    compared = {"prior": (test, None), "informed": (informed, informed_first_transition(simulator))}
    write_json(paths.metrics, {kind: {**game_realism(samples, rows, config.allowed_returns, config.return_tolerance),
                                      **event_rates(events[kind], config.num_steps, real, *compared[kind],
                                                    config.bootstrap_samples, config.seed)}
                               for kind, rows in kinds.items() if len(rows)})
    prior = list(range(min(config.prior_samples, (config.videos + 1) // 2)))
    shown = prior + list(range(config.prior_samples, samples.num_episodes))[:config.videos - len(prior)]
    for index in shown:
        kind = "prior" if index < config.prior_samples else "informed"
        write_gif(f"{paths.videos}/{kind}_{index:04d}.gif", samples.episode(index, ["obs"])["obs"], fps=8)


if __name__ == "__main__":
    main()
