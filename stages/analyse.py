"""Stage analyse@NAME: PCA, ICA, NMF, clusters and 2-D embeddings of one kind of state in one rollout store.

    python stages/analyse.py FIELD --store S --out DIR --metrics JSON --figures DIR [--per-episode] [--untrained-null]

Writes DIR/{basis,projections}.npz (bases for later stages; every row's loadings, IC activations and cluster),
the metrics JSON and figures. --per-episode analyses one vector per episode (e.g. a sample's latent, constant
over its steps); --untrained-null (agent hx) adds the hx of untrained agents on the same frames as a null.
"""
import numpy as np

from rlinterp import plots
from rlinterp.agent.acting import untrained_hidden_state_draws
from rlinterp.analysis.states import Projections, analyse_states
from rlinterp.config import load_params
from rlinterp.envs import ACTION_NAMES, NUM_ACTIONS
from rlinterp.runtime import StageError, stage_main, stage_paths
from rlinterp.files import atomic_directory, write_json
from rlinterp.store import RolloutStore


@stage_main
def main() -> None:
    args = stage_paths("store", "out", "metrics", "figures", positional=("field",),
                       flags=("per_episode", "untrained_null"))
    params = load_params("params.yaml")
    config = params.analysis
    store = RolloutStore(args.store)
    if args.field not in store.fields:
        raise StageError(f"{args.store}: no per-step array {args.field!r} to analyse "
                         f"(it has {', '.join(store.fields)})")
    rows = store.episode_starts if args.per_episode else np.arange(store.num_steps)
    x = store.rows(args.field, rows) if args.per_episode else np.asarray(store[args.field][:])
    x = x.reshape(len(x), -1)
    episode, timestep, length = store.positions(rows)
    context = {name: store.rows(name, rows) for name in ("value", "action", "reward")}
    examples = [] if args.per_episode else [np.arange(store.episode_starts[e], store.episode_ends[e])
                                            for e in range(min(config.example_episodes, store.num_episodes))]
    untrained = untrained_hidden_state_draws(params.agent, store, config.seed,
                                             config.untrained_agents if args.untrained_null else 0)
    measured = np.ones(len(rows), bool) if args.per_episode else timestep >= config.reset_steps
    result = analyse_states(x, config, np.concatenate(examples) if examples else None, untrained, groups=episode,
                            measured=measured)

    with atomic_directory(args.out) as out:
        result.basis.save(out / "basis.npz")
        Projections(rows, result.pca[:, :16].astype(np.float32), result.ica.astype(np.float32), result.labels,
                    result.embedding_rows, result.embeddings).save(out / "projections.npz")
    write_json(args.metrics, {"store": args.store, "field": args.field, **result.metrics})

    figures, title = args.figures, f"{args.field} of {args.store}"
    plots.explained_variance(result.basis.pca_variance_ratio, result.shuffled_variance_ratio,
                             f"{figures}/explained_variance.png", title)
    shown = result.embedding_rows
    position = {row: i for i, row in enumerate(shown)}
    paths = [np.array([position[r] for r in rows_ if r in position]) for rows_ in examples]
    colours = {"cluster": (result.labels[shown], True), "value": (context["value"][shown], False),
               "action": (context["action"][shown], True), "timestep": (timestep[shown], False),
               "episode progress": (timestep[shown] / np.maximum(length[shown] - 1, 1), False)}
    for method, coords in result.embeddings.items():
        plots.embedding_panels(coords, colours, paths, f"{figures}/embedding_{method}.png", f"{title}: {method}")
    plots.activity_over_time([result.ica[rows_] for rows_ in examples], f"{figures}/ica_over_time.png",
                             f"{title}: IC activations of example episodes")
    summaries = [result.cluster_summary(c, context, config.exemplars, NUM_ACTIONS)
                 for c in range(min(8, int(result.labels.max()) + 1))]
    for summary in summaries:
        exemplars = summary.pop("exemplars")
        summary["frames"] = [np.asarray(store["obs"][int(rows[i])]) for i in exemplars] if "obs" in store.fields else []
    plots.cluster_summary(summaries, ACTION_NAMES, f"{figures}/clusters.png", f"{title}: largest clusters")


if __name__ == "__main__":
    main()
