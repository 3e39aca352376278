"""Stage train_agent: PPO on Procgen. Resumes an interrupted run, or extends a finished one whose total_steps
was raised, from data/agent/checkpoint.pt; a finished run that DVC runs again (forced, or a dependency
changed) trains afresh. Launched through `rlinterp.launch`: with compute.nproc_per_node > 1 every rank runs this."""
from rlinterp import distributed
from rlinterp.agent.train import resumable_checkpoint, train_agent, training_config
from rlinterp.config import load_params
from rlinterp.files import write_json
from rlinterp.runtime import (describe_precision, resolve_precision, setup_torch, stage_main, stage_paths,
                              training_curves)


@stage_main
def main() -> None:
    paths = stage_paths("checkpoint", "curves", "summary")
    params = load_params("params.yaml")
    shard, device = distributed.start(setup_torch(params.compute))
    precision = resolve_precision(params.compute, device)
    if shard.main:
        print(f"train_agent: {device} x {shard.world} process(es), precision {describe_precision(precision)}")
    state = resumable_checkpoint(paths.checkpoint, training_config(params.env, params.agent, params.train_agent))
    # DVC runs this stage only when asked to (repro -f) or when a dependency changed: a finished run trains afresh.
    restart = state is not None and state["step"] >= params.train_agent.total_steps
    if shard.main and restart:
        print(f"train_agent: {paths.checkpoint} already finished this run ({state['step']} steps); training afresh")
    elif shard.main:
        print(f"train_agent: resuming from step {state['step']}" if state is not None else
              "train_agent: no unfinished checkpoint of these params and code; training from step 0")
    resume_from = state["step"] if state is not None and not restart else None
    with training_curves(paths.curves, resume_from, main=shard.main) as log:
        summary = train_agent(params.env, params.agent, params.train_agent, paths.checkpoint, device=str(device),
                              log=log, precision=precision, restart=restart)
    distributed.finish()
    if shard.main:
        write_json(paths.summary, summary)


if __name__ == "__main__":
    main()
