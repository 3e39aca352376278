"""Stage evaluate_agent: the trained agent and its memoryless ablation beside the baseline policies."""
import json

from rlinterp import plots
from rlinterp.agent.checkpoint import load_agent
from rlinterp.agent.evaluate import agent_policies, compare_with_baselines, evaluate_policies
from rlinterp.config import load_params
from rlinterp.envs import ACTION_NAMES
from rlinterp.runtime import StageError, setup_torch, stage_main, write_json

CHECKPOINT = "data/agent/checkpoint.pt"
BASELINES = "metrics/baselines.json"
OUTPUT = "metrics/agent.json"
FIGURE = "plots/evaluate_agent/returns.png"


@stage_main
def main() -> None:
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    agent, meta = load_agent(CHECKPOINT, device, expected=params.agent)
    with open(BASELINES) as f:
        baselines = json.load(f)
    ev = params.evaluate
    results = evaluate_policies(params.env, ev, agent_policies(agent, ev.seed, str(device)))
    try:
        report = compare_with_baselines(results, baselines, ACTION_NAMES)
    except ValueError as err:
        raise StageError(f"{BASELINES}: {err}") from err
    write_json(OUTPUT, {"checkpoint_step": meta["step"], "episodes_per_policy": ev.num_envs * ev.episodes_per_env,
                        **report})
    plots.policy_returns({levels: {**results[levels], **baselines[levels]} for levels in results}, FIGURE)


if __name__ == "__main__":
    main()
