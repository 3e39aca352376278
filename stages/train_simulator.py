"""Stage train_simulator: the generative model of rollouts, trained on data/rollouts.zarr with the frozen agent in
its loop; metrics on the validation levels (the test levels are prediction_quality's) beside the copy-last-frame
and mean-frame baselines. Launched through `rlinterp.launch`: with compute.nproc_per_node > 1 every rank trains and
rank 0 alone evaluates."""
import torch

from rlinterp import distributed, plots
from rlinterp.agent.checkpoint import load_agent
from rlinterp.files import file_sha256
from rlinterp.config import load_params
from rlinterp.runtime import (describe_precision, resolve_precision, setup_torch, stage_main, stage_paths,
                              training_curves)
from rlinterp.files import write_json
from rlinterp.simulator.data import batches_of, describe_split, heldout_windows, simulator_split
from rlinterp.simulator.evaluate import evaluate_simulator, open_loop, prior_realism
from rlinterp.simulator.losses import window_from_batch
from rlinterp.simulator.train import (check_training_store, real_steps, resumable_checkpoint, train_simulator,
                                     training_config)
from rlinterp.store import RolloutStore


@stage_main
def main() -> None:
    paths = stage_paths("agent", "store", "checkpoint", "curves", "metrics", "figures")
    params = load_params("params.yaml")
    shard, device = distributed.start(setup_torch(params.compute))
    precision = resolve_precision(params.compute, device)
    agent, _ = load_agent(paths.agent, device, expected=params.agent)
    agent_sha256 = file_sha256(paths.agent)
    sim, config = params.simulator, params.train_simulator
    # A damaged or unfit store (or one too small to split) fails here, before the curves are replaced.
    store = check_training_store(RolloutStore(paths.store).verify(), agent_sha256, sim)
    split = simulator_split(store, config)
    if shard.main:
        print(f"train_simulator: {device} x {shard.world} process(es), agent encoder {describe_precision(precision)}")
    # Where the curves continue from (train_simulator loads the checkpoint again, and says what it resumes).
    state = resumable_checkpoint(paths.checkpoint, training_config(sim, config, paths.store), agent_sha256,
                                 -(-config.total_windows // config.batch_size), device)
    resume_from = None if state is None else int(state["batch"]) * config.batch_size
    with training_curves(paths.curves, resume_from, shard.main) as log:
        simulator, summary = train_simulator(sim, config, paths.store, agent, agent_sha256, paths.checkpoint,
                                             str(device), log, precision=precision)
    distributed.finish()
    if not shard.main:
        return

    length = sim.num_init_steps + sim.num_sim_steps - 1
    windows = heldout_windows(store, split.validation, sim.num_init_steps, length, config.eval_windows,
                              config.split_seed)
    batches = batches_of(windows, config.batch_size, device)
    reference = {k: v.to(device) for k, v in real_steps(store, split.train, simulator).items()}
    unseen = {k: v.to(device) for k, v in real_steps(store, split.validation, simulator, max_steps=1024).items()}
    report = evaluate_simulator(simulator, agent, batches, config, reference["frames"].mean(0))
    realism = prior_realism(simulator, agent, reference, unseen, samples=64, steps=sim.num_sim_steps,
                            seed=config.seed)
    write_json(paths.metrics, {**summary, "split": describe_split(store, split), **report,
                               "prior_realism": realism})
    with torch.no_grad():
        window = window_from_batch(batches[0], simulator)
        predicted = open_loop(simulator, agent, window).frames
    for b in range(min(4, predicted.shape[1])):
        plots.open_loop_strip(window.frames[:, b].cpu(), predicted[:, b].cpu(), window.mask[:, b].cpu(),
                              f"{paths.figures}/open_loop_{b}.png",
                              title="validation window: real | open-loop simulation (recorded actions) | error")


if __name__ == "__main__":
    main()
