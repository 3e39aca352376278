"""Stage evaluate_baselines: the uniformly random and every constant-action policy on the evaluation levels.

Independent of the agent, so DVC keeps this (slow: most constant actions play to the 1000-step timeout)
result while the agent is retrained.
"""
from rlinterp.agent.evaluate import baseline_policies, evaluate_policies, summarise
from rlinterp.config import load_params
from rlinterp.envs import NUM_ACTIONS
from rlinterp.runtime import stage_main, stage_paths
from rlinterp.files import write_json


@stage_main
def main() -> None:
    paths = stage_paths("output")
    params = load_params("params.yaml")
    policies = baseline_policies(NUM_ACTIONS, params.evaluate.seed)
    results = evaluate_policies(params.env, params.evaluate, policies)
    write_json(paths.output, {levels: {name: summarise(result) for name, result in played.items()}
                        for levels, played in results.items()})


if __name__ == "__main__":
    main()
