"""Stage evaluate_agent: the trained agent and its memoryless ablation beside the baseline policies."""

from rlinterp import plots
from rlinterp.agent.checkpoint import load_agent
from rlinterp.agent.acting import AGENT_POLICIES, agent_policies
from rlinterp.agent.evaluate import agent_bar, best_constant_actions, compare_with_baselines, evaluate_policies
from rlinterp.config import load_params
from rlinterp.envs import ACTION_NAMES
from rlinterp.runtime import StageError, setup_torch, stage_main, stage_paths
from rlinterp.files import read_json, write_json


def named_by_action(policies: dict) -> dict:
    """The figure's labels: constant policies by their action's name (constant_8 -> constant RIGHT+UP)."""
    return {f"constant {ACTION_NAMES[int(name.split('_')[1])]}" if name.startswith("constant_") else name: result
            for name, result in policies.items()}


@stage_main
def main() -> None:
    paths = stage_paths("checkpoint", "baselines", "output", "figure")
    params = load_params("params.yaml")
    device = setup_torch(params.compute)
    agent, meta = load_agent(paths.checkpoint, device, expected=params.agent)
    baselines = read_json(paths.baselines)
    ev = params.evaluate
    best = best_constant_actions(baselines)
    results = evaluate_policies(params.env, ev, agent_policies(agent, ev.seed, best, str(device)))
    try:
        report = compare_with_baselines(results, baselines, best, ACTION_NAMES)
    except ValueError as err:
        raise StageError(f"{paths.baselines}: {err}") from err
    write_json(paths.output, {"checkpoint_step": meta["step"], "episodes_per_policy": ev.num_envs * ev.episodes_per_env,
                              "bar": agent_bar(report), **report})
    figure = {levels: named_by_action({**{n: report[levels][n] for n in AGENT_POLICIES}, **baselines[levels]})
              for levels in results}
    plots.policy_returns(figure, report, paths.figure)


if __name__ == "__main__":
    main()
