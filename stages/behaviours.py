"""Stage behaviours: cluster the combined agent-and-simulator dynamics of simulated samples into behaviours.

Reads data/samples.zarr and the bases of the analyse stages (simulator-state PCs for the features; the real
agent-hx ICs for each behaviour's typical IC profile). The same clustering of untrained agents' hx on the same
frames (`analysis.untrained_agents` initialisations), beside the same simulator states, is one of its nulls.
Writes data/behaviours/labels.npz, metrics/behaviours.json and, per behaviour, an exemplar GIF and a summary figure
in plots/behaviours/.
"""
import numpy as np

from rlinterp import plots
from rlinterp.agent.acting import untrained_hidden_state_draws
from rlinterp.analysis.behaviour import BehaviourLabels, cluster_behaviours
from rlinterp.analysis.decompose import Basis
from rlinterp.config import load_params
from rlinterp.envs import ACTION_NAMES, NUM_ACTIONS
from rlinterp.runtime import StageError, stage_main, stage_paths
from rlinterp.files import atomic_directory, write_json
from rlinterp.store import RolloutStore
from rlinterp.video import write_gif


@stage_main
def main() -> None:
    paths = stage_paths("samples", "env_basis", "hx_basis", "out", "metrics", "figures")
    params = load_params("params.yaml")
    config = params.behaviours
    samples = RolloutStore(paths.samples)
    lengths = samples.episode_ends - samples.episode_starts
    if len(set(lengths)) != 1:
        raise StageError(f"{paths.samples}: samples of different lengths {sorted(set(lengths))[:5]}; "
                         "expected one length")
    shape = (samples.num_episodes, int(lengths[0]))
    hx = np.asarray(samples["hx"][:]).reshape(*shape, -1)
    env_basis, hx_basis = Basis.load(paths.env_basis), Basis.load(paths.hx_basis)
    env_pcs = env_basis.pca(np.asarray(samples["env_h"][:]))[:, :config.env_components].reshape(*shape, -1)
    untrained = untrained_hidden_state_draws(params.agent, samples, config.seed, params.analysis.untrained_agents)
    nulls = {"untrained_agent": [np.concatenate([draw.reshape(hx.shape), env_pcs], axis=-1)   # same frames, simulator
                                 for draw in untrained]}
    window_labels, behaviour, metrics = cluster_behaviours(np.concatenate([hx, env_pcs], axis=-1), tuple(config.lags),
                                                           config.clusters, config.cluster_method, config.seed, nulls)
    actions = np.asarray(samples["action"][:]).reshape(shape)
    values = np.asarray(samples["value"][:]).reshape(shape)
    ics = hx_basis.ica(hx.reshape(-1, hx.shape[-1])).reshape(*shape, -1)
    summaries, per_behaviour = [], []
    for b in range(metrics["clusters"]):
        members = np.flatnonzero(behaviour == b)
        if len(members) == 0:
            continue
        summary = {"behaviour": b, "samples": int(len(members)),
                   "mean_value": float(values[members].mean()),
                   "action_distribution": (np.bincount(actions[members].ravel(), minlength=NUM_ACTIONS)
                                           / actions[members].size).round(4).tolist(),
                   "top_action": ACTION_NAMES[int(np.bincount(actions[members].ravel()).argmax())]}
        per_behaviour.append(summary)
        summaries.append({**summary, "ic_profile": ics[members].mean(0)})
        for i, sample in enumerate(members[:config.videos]):
            frames = samples.episode(int(sample), ["obs"])["obs"]
            write_gif(f"{paths.figures}/behaviour_{b:02d}_sample_{int(sample):04d}.gif", frames, fps=8)
    with atomic_directory(paths.out) as out:
        BehaviourLabels(window_labels, behaviour).save(out / "labels.npz")
    write_json(paths.metrics, {**metrics, "samples": int(samples.num_episodes), "lags": list(config.lags),
                               "behaviours": per_behaviour})
    plots.behaviour_summary(summaries, ACTION_NAMES, f"{paths.figures}/behaviours.png")


if __name__ == "__main__":
    main()
