"""Stage train_agent: PPO on Procgen; resumes from data/agent/checkpoint.pt after an interruption."""
from dvclive import Live

from rlinterp.agent.train import resumable_checkpoint, train_agent, training_config
from rlinterp.config import load_params
from rlinterp.runtime import curve_logger, describe_precision, resolve_precision, setup_torch, stage_main, write_json

CHECKPOINT = "data/agent/checkpoint.pt"
CURVES = "plots/train_agent"
SUMMARY = "metrics/train_agent.json"


@stage_main
def main() -> None:
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    precision = resolve_precision(params.compute, device)
    print(f"train_agent: {device}, precision {describe_precision(precision)}")
    run_config = training_config(params.env, params.agent, params.train_agent)
    state = resumable_checkpoint(CHECKPOINT, run_config)
    resume = state is not None
    print(f"train_agent: resuming from step {state['step']}" if resume else
          "train_agent: no checkpoint of these params and code to resume; training from step 0")
    with Live(dir=CURVES, resume=resume, save_dvc_exp=False, dvcyaml=None) as live:
        summary = train_agent(params.env, params.agent, params.train_agent, CHECKPOINT, device=str(device),
                              log=curve_logger(live), precision=precision)
    write_json(SUMMARY, summary)


if __name__ == "__main__":
    main()
