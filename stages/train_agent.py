"""Stage train_agent: PPO on Procgen. Resumes an interrupted run, or extends a finished one whose total_steps
was raised, from data/agent/checkpoint.pt; a finished run that DVC runs again (forced, or a dependency
changed) trains afresh."""
from pathlib import Path

from dvclive import Live

from rlinterp.agent.train import resumable_checkpoint, train_agent, training_config
from rlinterp.config import load_params
from rlinterp.runtime import curve_logger, describe_precision, resolve_precision, setup_torch, stage_main, stage_paths
from rlinterp.files import write_json


@stage_main
def main() -> None:
    paths = stage_paths("checkpoint", "curves", "summary")
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    precision = resolve_precision(params.compute, device)
    print(f"train_agent: {device}, precision {describe_precision(precision)}")
    run_config = training_config(params.env, params.agent, params.train_agent)
    state = resumable_checkpoint(paths.checkpoint, run_config)
    if state is not None and state["step"] >= params.train_agent.total_steps:
        # DVC runs this stage only when asked to (repro -f) or when a dependency changed: train afresh.
        print(f"train_agent: {paths.checkpoint} already finished this run ({state['step']} steps); "
              "training from step 0")
        Path(paths.checkpoint).unlink()
        state = None
    resume = state is not None
    print(f"train_agent: resuming from step {state['step']}" if resume else
          "train_agent: no unfinished checkpoint of these params and code; training from step 0")
    with Live(dir=paths.curves, resume=resume, save_dvc_exp=False, dvcyaml=None) as live:
        summary = train_agent(params.env, params.agent, params.train_agent, paths.checkpoint, device=str(device),
                              log=curve_logger(live), precision=precision)
    write_json(paths.summary, summary)


if __name__ == "__main__":
    main()
