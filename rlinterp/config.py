"""Typed, validated parameters: `params.yaml` loaded into one dataclass per section.

Every field is required (params.yaml is the single source of values) and carries its documentation and
constraints in `param(...)`. Loading fails with one `ConfigError` naming the key, the offending value and
what was expected: unknown keys, missing keys, wrong types and out-of-range values alike, before a stage
touches any output.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlinterp.errors import InputError

PROCGEN_GAMES = ("bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
                 "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot")


class ConfigError(InputError, ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


def param(doc: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
          choices: tuple[Any, ...] | None = None) -> Any:
    """A required dataclass field with its documentation and constraints."""
    return field(metadata={"doc": doc, "ge": ge, "gt": gt, "le": le, "choices": choices})


@dataclass(frozen=True)
class EnvConfig:
    name: str = param("Procgen game", choices=PROCGEN_GAMES)
    distribution_mode: str = param("Procgen difficulty",
                                   choices=("easy", "hard", "extreme", "memory", "exploration"))
    num_levels: int = param("number of training levels (0, unlimited, is refused: it leaves no level unseen)", ge=0)
    start_level: int = param("first training level seed", ge=0)
    use_backgrounds: bool = param("draw background images")
    restrict_themes: bool = param("one visual theme per game")
    use_monochrome_assets: bool = param("monochrome rectangles instead of sprites")
    center_agent: bool = param("camera follows the agent")
    paint_vel_info: bool = param("paint the agent's velocity in the frame corner")
    use_sequential_levels: bool = param("go on to the next level instead of ending the episode at the goal")


@dataclass(frozen=True)
class AgentConfig:
    channels: tuple[int, ...] = param("IMPALA stage widths (original: 16, 32, 32)", ge=1)
    blocks_per_stage: int = param("residual blocks per IMPALA stage (original: 2)", ge=0)
    fc_size: int = param("width of the fc layer between the CNN and the GRU", ge=1)
    hidden_size: int = param("GRU hidden size: the hx that is analysed (original: 64)", ge=1)
    input_pool: int = param("shrink the frame by this factor before the CNN (original: 1)", ge=1)
    input_downsample: str = param("how input_pool shrinks the frame: average its pixels, or space_to_depth (stack "
                                  "each pool x pool block as channels: smaller but lossless)",
                                  choices=("average", "space_to_depth"))
    heads_input: str = param("what the policy and value heads read: hx (the original: everything the agent does "
                             "passes through the analysed state), features (a non-recurrent control; the GRU "
                             "still runs) or features_and_hx (both, concatenated)",
                             choices=("hx", "features", "features_and_hx"))
    init: str = param("initial weights: reference (the reference implementation's TensorFlow defaults: "
                      "Glorot-uniform convs and fc, zero biases) or pytorch (PyTorch's default conv init, an "
                      "orthogonal fc); both: orthogonal GRU and heads (gains 0.01 policy, 1 value)",
                      choices=("reference", "pytorch"))


@dataclass(frozen=True)
class ComputeConfig:
    device: str = param("torch device: cpu, cuda, cuda:N", choices=None)
    num_threads: int = param("torch CPU threads (0 = torch's default)", ge=0)
    precision: str = param("auto (bf16 where the CPU or GPU has bf16 units, else fp32) | fp32 | bf16: the "
                           "precision of the agent's encoder (convs and fc); GRU, heads, losses and optimiser "
                           "stay fp32", choices=("auto", "fp32", "bf16"))
    nproc_per_node: int = param("processes per node for train_agent and train_simulator (one per GPU); above 1, "
                                "or with nnodes above 1, their stages run under torchrun with DDP", ge=1)
    nnodes: int = param("nodes of a distributed training run; each other node runs the stage's command with "
                        "MASTER_ADDR (node 0's address) and NODE_RANK set (README)", ge=1)
    master_port: int = param("the port on node 0 where the nodes of a multi-node run meet", ge=1, le=65535)


@dataclass(frozen=True)
class TrainAgentConfig:
    seed: int = param("seed of torch, numpy and the environments", ge=0)
    total_steps: int = param("environment steps to train for", ge=1)
    num_envs: int = param("parallel environments", ge=1)
    num_steps: int = param("steps per environment per rollout", ge=1)
    bptt_steps: int = param("length of the sequences the GRU is re-run over in training; divides num_steps",
                            ge=1)
    epochs: int = param("PPO epochs per rollout", ge=1)
    minibatches: int = param("minibatches per epoch; they split the num_envs x num_steps / bptt_steps sequences",
                             ge=1)
    learning_rate: float = param("Adam learning rate (above 1 every run diverges)", gt=0, le=1)
    anneal_lr: bool = param("decay the learning rate linearly to zero over total_steps")
    adam_eps: float = param("Adam epsilon", gt=0)
    gamma: float = param("discount factor", gt=0, le=1)
    gae_lambda: float = param("GAE lambda", ge=0, le=1)
    clip_coef: float = param("PPO ratio clip", gt=0)
    clip_value: bool = param("clip the value update to clip_coef around the old value, as in the original")
    value_coef: float = param("value loss weight", ge=0)
    entropy_coef: float = param("entropy bonus weight at the start of training", ge=0)
    entropy_coef_final: float = param("entropy bonus weight reached after entropy_decay_steps (equal to "
                                      "entropy_coef: a constant bonus, the original)", ge=0)
    entropy_decay_steps: int = param("environment steps over which the bonus moves linearly from entropy_coef "
                                     "to entropy_coef_final; it stays there after", ge=1)
    max_grad_norm: float = param("global gradient-norm clip", gt=0)
    normalize_rewards: bool = param("divide rewards by the running std of the discounted return")
    checkpoint_every: int = param("save a checkpoint every this many updates (resume point)", ge=1)

    def entropy_coef_at(self, step: int) -> float:
        """The entropy bonus weight after `step` environment steps: a function of the step alone, so a resumed
        run continues the schedule where it stopped."""
        progress = min(step / self.entropy_decay_steps, 1.0)
        return self.entropy_coef + progress * (self.entropy_coef_final - self.entropy_coef)

    def __post_init__(self) -> None:
        if self.num_steps % self.bptt_steps:
            raise ConfigError(f"train_agent.bptt_steps = {self.bptt_steps}: expected a divisor of "
                              f"train_agent.num_steps = {self.num_steps}")
        sequences = self.num_envs * (self.num_steps // self.bptt_steps)
        if sequences % self.minibatches:
            raise ConfigError(f"train_agent.minibatches = {self.minibatches}: expected a divisor of the "
                              f"{sequences} training sequences (num_envs x num_steps / bptt_steps)")


@dataclass(frozen=True)
class EvaluateConfig:
    seed: int = param("seed of the evaluation environments and action sampling", ge=0)
    num_envs: int = param("parallel environments; each plays episodes_per_env episodes", ge=1)
    episodes_per_env: int = param("episodes per environment (episodes = num_envs * episodes_per_env)", ge=1)
    test_start_level: int = param("first unseen level seed; must lie beyond the training levels", ge=0)
    test_num_levels: int = param("number of unseen levels to draw from", ge=1)


@dataclass(frozen=True)
class RecordConfig:
    seed: int = param("seed of the recording envs and of action sampling", ge=0)
    episodes: int = param("episodes to record (num_envs x episodes per env)", ge=1)
    num_envs: int = param("parallel environments; each records its first episodes/num_envs episodes", ge=1)
    levels: str = param("record on the training levels or on the unseen evaluation levels",
                        choices=("train", "unseen"))
    chunk_steps: int = param("steps per compressed chunk of every per-step array", ge=1)
    shard_steps: int = param("steps per shard (one file per shard per array); a multiple of chunk_steps", ge=1)
    videos: int = param("episode videos written to plots/record/", ge=0)

    def __post_init__(self) -> None:
        if self.episodes % self.num_envs:
            raise ConfigError(f"record.episodes = {self.episodes}: expected a multiple of record.num_envs = "
                              f"{self.num_envs} (every env records the same number of episodes)")
        if self.shard_steps % self.chunk_steps:
            raise ConfigError(f"record.shard_steps = {self.shard_steps}: expected a multiple of "
                              f"record.chunk_steps = {self.chunk_steps}")


@dataclass(frozen=True)
class SimulatorConfig:
    num_init_steps: int = param("real frames the encoder sees; the last one is also the first simulated step "
                                "(original 3)", ge=2)
    num_sim_steps: int = param("simulated steps per window (original 32)", ge=1)
    image_pool: int = param("simulate frames at 64/image_pool pixels, upsampled for the agent (original 1)",
                            choices=(1, 2, 4))
    bottleneck: str = param("vae: Gaussian latent with a KL to N(0, I); sphere: unit vector with a uniformity "
                            "loss (the original's final code)", choices=("vae", "sphere"))
    bottleneck_size: int = param("size of the latent the encoder emits (original 128)", ge=1)
    prior: str = param("where prior samples' latents come from. fitted: a Gaussian fitted after training to the "
                       "latents of training windows (ex-post density estimation), so samples start where the "
                       "encoder puts real windows; bottleneck: the bottleneck's own prior (N(0, I); uniform on the "
                       "sphere), which the encoder need not fill", choices=("fitted", "bottleneck"))
    encoder_channels: tuple[int, ...] = param("channels of the context encoder's down blocks, each halving the "
                                              "resolution (original 64, 64, 64, 128)", ge=1)
    encoder_gru_size: int = param("GRU over the context frames' embeddings (original 512)", ge=1)
    deter_size: int = param("deterministic (layer-normalised GRU) state (original 512)", ge=1)
    stoch_groups: int = param("categorical latents in the stochastic state (original 32)", ge=1)
    stoch_classes: int = param("classes per categorical latent (original 32)", ge=2)
    hidden_size: int = param("width of the state-space model's MLPs (original 1000)", ge=1)
    decoder_depth: int = param("base channels of the image decoder (original 48)", ge=1)
    embed_depth: int = param("base channels of the posterior's frame encoder (original 32)", ge=1)
    head_layers: int = param("hidden layers of the reward and done heads (original 4)", ge=0)
    head_size: int = param("width of the reward and done heads (original 400)", ge=1)
    reward_support: tuple[float, ...] = param("rewards the reward head predicts a distribution over, rising; a "
                                              "reward between two is split between them (two-hot). CoinRun: 0, 10 "
                                              "(the original regressed the reward, so samples' returns went below 0)")

    def __post_init__(self) -> None:
        support = self.reward_support
        if len(support) < 2 or any(b <= a for a, b in zip(support, support[1:])):
            raise ConfigError(f"simulator.reward_support = {list(support)}: expected at least two rising values")


@dataclass(frozen=True)
class TrainSimulatorConfig:
    seed: int = param("seed of the training draw: torch (weight init), window order, sampled states", ge=0)
    split_seed: int = param("seed of the split by level into training, validation and test levels, and of the "
                            "validation windows the metrics use; apart from `seed` so another training draw is "
                            "measured on the same data", ge=0)
    total_windows: int = param("training windows (batches x batch_size) to train for", ge=1)
    batch_size: int = param("windows per batch (original 2)", ge=1)
    learning_rate: float = param("Adam learning rate (original 5e-4; above 1 every run diverges)", gt=0, le=1)
    learning_rate_halflife: int = param("training windows over which the learning rate halves, by windows trained "
                                        "(not by the run's length, so a longer run extends a shorter one); 0 keeps "
                                        "it constant (original)", ge=0)
    max_grad_norm: float = param("gradient-norm clip (original 100)", gt=0)
    test_fraction: float = param("fraction of the levels whose episodes are test data: prediction_quality and "
                                 "sample report on them, and nothing is chosen on them", gt=0, le=0.5)
    validation_fraction: float = param("fraction of the levels whose episodes are validation data: "
                                       "metrics/simulator.json and design comparisons read them", gt=0, le=0.5)
    eval_windows: int = param("validation windows metrics/simulator.json is computed on", ge=1)
    prior_fit_windows: int = param("training windows whose latents the fitted prior (simulator.prior) is fitted "
                                   "on", ge=2)
    calibration_windows: int = param("training windows whose open-loop rollouts the imagined steps' reward and "
                                     "end probabilities are recalibrated on, after training", ge=1)
    kl_weight: float = param("weight of the balanced prior/posterior KL (original 12)", ge=0)
    kl_balance: float = param("share of the KL gradient that trains the prior (original 0.8)", ge=0, le=1)
    image_weight: float = param("weight of the image loss, 0.5 x sum of squared pixel errors", ge=0)
    reward_weight: float = param("weight of the reward loss", ge=0)
    done_weight: float = param("weight of the episode-end (done) loss", ge=0)
    hx_weight: float = param("weight of the agent-hx loss, 0.5 x squared error", ge=0)
    value_weight: float = param("weight of the agent-value loss, 0.5 x squared error of the value the agent "
                                "reads from simulated frames (original 0: only hx)", ge=0)
    features_weight: float = param("weight of the agent-features loss, 0.5 x squared error between the agent's CNN "
                                   "features of simulated and real frames (original 0)", ge=0)
    env_update_weight: float = param("weight of the penalty on deterministic-state change (original 0.5)", ge=0)
    init_weight: float = param("weight of the initial hx / previous-action auxiliary loss (original 1)", ge=0)
    open_loop_weight: float = param("weight of the prediction terms of an open-loop (prior, recorded actions) "
                                    "rollout of each window (original 0: teacher forcing only)", ge=0)
    bottleneck_weight: float = param("weight of the bottleneck loss: KL to N(0, I) for vae, uniformity for "
                                     "sphere", ge=0)
    num_workers: int = param("background processes reading windows from the store (0 = in the main process)",
                             ge=0)
    log_every: int = param("batches between logged curve points", ge=1)
    checkpoint_every: int = param("batches between checkpoints (resume point)", ge=1)


@dataclass(frozen=True)
class SampleConfig:
    seed: int = param("seed of prior latents and stochastic states", ge=0)
    prior_samples: int = param("samples from random latents drawn from the bottleneck's prior", ge=0)
    event_samples: int = param("prior samples whose rewards and ends metrics/sample.json counts: the stored ones, then "
                               "more drawn the same way and not stored (a few hundred samples' share moves by "
                               "several points from draw to draw)", ge=0)
    informed_samples: int = param("samples encoding the start of test-level real episodes (at most one each)", ge=0)
    num_steps: int = param("simulated steps per sample", ge=1)
    batch_size: int = param("samples simulated together", ge=1)
    modal: bool = param("most likely categorical states instead of sampled ones (the original's generation mode)")
    actions: str = param("sampled: the agent's actions in the simulator drawn from its policy, as it plays the real "
                         "game and was recorded; greedy: its most likely action (the original's)",
                         choices=("sampled", "greedy"))
    events: str = param("sampled: rewards and ends drawn from the heads' distributions; likeliest: the original's "
                        "most likely reward and done_prob > 0.5", choices=("sampled", "likeliest"))
    allowed_returns: tuple[float, ...] = param("the episode returns the game allows (CoinRun: 0 or 10), which a "
                                               "sample's return is checked against")
    return_tolerance: float = param("a sample's return counts as allowed within this of one of them", ge=0)
    bootstrap_samples: int = param("resamples of the intervals on how often samples and real windows reward and "
                                   "end", ge=100)
    videos: int = param("sample GIFs written to plots/sample/", ge=0)


@dataclass(frozen=True)
class PredictionQualityConfig:
    seed: int = param("seed of the held-out window choice", ge=0)
    levels: str = param("test: the reported numbers; validation: a design comparison (dvc exp run -S), which "
                        "leaves the test levels unread", choices=("test", "validation"))
    windows: int = param("held-out windows to measure on", ge=1)
    num_steps: int = param("simulated steps per window (may exceed simulator.num_sim_steps to see drift)", ge=1)
    batch_size: int = param("windows simulated together", ge=1)
    videos: int = param("open-loop videos (real | simulated | error) written to plots/prediction_quality_figures/",
                        ge=0)


@dataclass(frozen=True)
class AnalysisConfig:
    seed: int = param("seed of subsamples, decompositions, clustering and embeddings", ge=0)
    fit_samples: int = param("rows the decompositions and clusters are fitted on (all rows are projected)", ge=10)
    pca_components: int = param("principal components kept (original 64; at most the state size)", ge=2)
    ica_components: int = param("independent components, fitted on the leading whitened PCs (original 16)", ge=1)
    ica_max_iter: int = param("FastICA iterations (original 8000)", ge=1)
    ica_tol: float = param("FastICA tolerance (original 0.02)", gt=0)
    nmf_components: int = param("NMF factors of the shifted states (original 16)", ge=1)
    nmf_max_iter: int = param("NMF iterations", ge=1)
    outlier_sigma: float = param("rows whose 5-NN distance exceeds mean + sigma * std are left out of the fits "
                                 "(original 2; 0 keeps all)", ge=0)
    clusters: int = param("clusters (original 32 for agent hx)", ge=2)
    cluster_method: str = param("kmeans, or ward (agglomerative, on the fit subsample)", choices=("kmeans", "ward"))
    embedding_methods: tuple[str, ...] = param("2-D embeddings to compute: tsne and/or umap",
                                               choices=("tsne", "umap"))
    embedding_samples: int = param("rows embedded in 2-D (t-SNE and UMAP are super-linear)", ge=10)
    example_episodes: int = param("episodes drawn as paths and as IC activations over time", ge=0)
    exemplars: int = param("frames shown per cluster", ge=0)
    reset_steps: int = param("each episode's first steps (the reset transient) left out of the structure measures "
                             "compared with the nulls (per-step analyses)", ge=0)
    untrained_agents: int = param("random initialisations of the untrained-agent null (agent hx analyses and "
                                  "behaviours; seeds seed, seed + 1, ...); its interval spans them all", ge=1)


@dataclass(frozen=True)
class BehavioursConfig:
    seed: int = param("seed of clustering", ge=0)
    lags: tuple[int, ...] = param("steps k of the state changes x_t - x_{t+k} in the features (original 2, 4, 6)",
                                  ge=1)
    env_components: int = param("leading simulator-state PCs joined to the agent hx (original 16)", ge=1)
    clusters: int = param("behaviours (original 32)", ge=2)
    cluster_method: str = param("kmeans, or ward", choices=("kmeans", "ward"))
    videos: int = param("exemplar GIFs per behaviour", ge=0)


@dataclass(frozen=True)
class SaliencyConfig:
    seed: int = param("seed of the SmoothGrad noise and of the random hx directions", ge=0)
    samples: tuple[str, ...] = param("sample ids in data/samples.zarr: ids like 3, or ranges like '0 to 8' (end "
                                     "exclusive); the metrics' CIs are over these samples")
    stored_samples: int = param("the first samples whose maps are kept in data/saliency.zarr (the metrics use all)",
                                ge=1)
    random_directions: int = param("random hx directions (norms of the ICs') explained like the ICs: their null",
                                   ge=1)
    combine: bool = param("one saliency map at the mean latent of the chosen samples instead of one per sample")
    num_steps: int = param("simulated steps re-run from each sample's latent", ge=1)
    timesteps: tuple[int, ...] = param("steps t whose targets are explained (original 4)")
    noise_samples: int = param("SmoothGrad copies of the latent, the first unperturbed (original 9)", ge=1)
    noise_scale: float = param("std of the Gaussian noise added to the latent (original 1.25e-4)", ge=0)
    frame_noise_scale: float = param("std of the Gaussian noise added to every frame the agent sees, per SmoothGrad "
                                     "copy, in [0, 1] pixel units (0 = none; not in the original)", ge=0, le=1)
    actions: str = param("action log-probability targets: the greedy action only (original), or also every action",
                         choices=("greedy", "all"))
    blur_kernel: int = param("Gaussian blur kernel of the frame maps in the figures: odd, or 0 = none (original 5)",
                             ge=0)
    blur_sigma: float = param("Gaussian blur sigma (original 5)", gt=0)
    videos: int = param("saliency overlay GIFs written to plots/saliency/", ge=0)

    def __post_init__(self) -> None:
        if self.blur_kernel > 1 and self.blur_kernel % 2 == 0:
            raise ConfigError(f"saliency.blur_kernel = {self.blur_kernel}: expected an odd size (an even kernel "
                              f"shifts the maps by half a pixel and grows them by one), or 0 for no blur")


@dataclass(frozen=True)
class InterventionSpec:
    source: tuple[int, ...] = param("components edited (the original's swap_directions_from)", ge=0)
    target: tuple[int | None, ...] = param("per source: the component to swap it with, or null to collapse it "
                                           "(the original's swap_directions_to)", ge=0)

    def __post_init__(self) -> None:
        if len(self.source) != len(self.target):
            raise ConfigError(f"intervention source {list(self.source)} and target {list(self.target)}: expected "
                              f"lists of equal length")


@dataclass(frozen=True)
class ValidateConfig:
    seed: int = param("seed of the environments, action sampling, matched random edits and resampling", ge=0)
    basis: str = param("basis of the edited directions: ica or pca of the real agent hx", choices=("ica", "pca"))
    interventions: dict[str, InterventionSpec] = param("name -> intervention, one validate stage each")
    levels: str = param("train or unseen levels for the real-environment runs", choices=("train", "unseen"))
    num_envs: int = param("parallel environments in the real-environment runs", ge=1)
    episodes_per_env: int = param("episodes per environment (same level seeds for control and edit)", ge=1)
    sim_samples: int = param("simulated rollouts from the first prior latents of data/samples.zarr", ge=1)
    random_edits: int = param("matched random edits (the edit's own |delta hx| per step, random direction): the "
                              "null each effect is tested against", ge=1)
    bootstrap_samples: int = param("bootstrap and permutation resamples (the smallest p-value is 1 / (this + 1))",
                                   ge=100)
    videos: int = param("side-by-side GIFs (control | edited) of real episodes and of simulated rollouts", ge=0)

    def __post_init__(self) -> None:
        for name in self.interventions:
            if not INTERVENTION_NAME.fullmatch(str(name)):
                raise ConfigError(f"validate.interventions: name {_shown(name)} is refused: expected lower-case "
                                  f"letters, digits and _, starting with a letter (it names a DVC stage, a "
                                  f"directory and a command-line argument)")


def _shown(value: Any, limit: int = 80) -> str:
    """`value` as written in an error message, cut to `limit` characters: a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# Procgen's level seeds are int32: a level range must end at or below this.
LEVEL_SEEDS = 2**31 - 1


# What an intervention may be called: it becomes part of a shell command, a stage name and a path.
INTERVENTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class DynamicsConfig:
    seed: int = param("seed of the shuffled baseline", ge=0)
    max_lag: int = param("largest lag k of cross-correlations and Jacobians (original 10)", ge=1)
    target_step: int = param("step t whose ICs are differentiated with respect to earlier steps (original 4)", ge=1)
    samples: int = param("prior samples whose Jacobians are computed", ge=1)
    batch_size: int = param("samples differentiated together", ge=1)
    plotted_behaviours: int = param("behaviours with their own heat maps (besides all samples), those with the "
                                    "most Jacobian samples", ge=0)


@dataclass(frozen=True)
class PanelConfig:
    samples: int = param("simulated samples exported to the panel, from the first (0 = none)", ge=0)
    real_episodes: int = param("real episodes exported, from the first (informed samples' episodes are added)",
                               ge=0)
    embedding_points: int = param("most points per 2-D embedding (only points of exported items)", ge=1)
    exemplars: int = param("exemplar samples listed per behaviour", ge=0)


@dataclass(frozen=True)
class Params:
    compute: ComputeConfig = param("where torch runs")
    env: EnvConfig = param("the environment")
    agent: AgentConfig = param("the agent's network")
    train_agent: TrainAgentConfig = param("PPO training")
    evaluate: EvaluateConfig = param("agent evaluation against baseline policies")
    record: RecordConfig = param("recording real rollouts")
    simulator: SimulatorConfig = param("the generative model of agent-environment rollouts")
    train_simulator: TrainSimulatorConfig = param("training the simulator")
    sample: SampleConfig = param("simulated rollouts")
    prediction_quality: PredictionQualityConfig = param("prediction quality of the simulator over its horizon")
    analysis: AnalysisConfig = param("decompositions, clusters and embeddings of states")
    behaviours: BehavioursConfig = param("behaviour clusters of simulated agent-environment dynamics")
    saliency: SaliencyConfig = param("SmoothGrad saliency through the simulator")
    validate: ValidateConfig = param("hidden-state interventions and their effect on behaviour")
    dynamics: DynamicsConfig = param("cross-correlation and Jacobians of hidden-state components")
    panel: PanelConfig = param("the interpretability panel (a static web page)")

    def __post_init__(self) -> None:
        env, ev = self.env, self.evaluate
        train_end, test_end = env.start_level + env.num_levels, ev.test_start_level + ev.test_num_levels
        if env.num_levels == 0:
            raise ConfigError("env.num_levels = 0: unlimited training levels leave no level unseen for evaluate; "
                              "expected a finite number of training levels")
        if max(train_end, test_end) > LEVEL_SEEDS:
            raise ConfigError(
                f"training levels [{env.start_level}, {train_end}) and unseen levels [{ev.test_start_level}, "
                f"{test_end}): expected level seeds below {LEVEL_SEEDS} (Procgen's seeds are 32-bit signed)")
        if ev.test_start_level < train_end and env.start_level < test_end:
            raise ConfigError(
                f"evaluate.test_start_level = {ev.test_start_level}, test_num_levels = {ev.test_num_levels}: the "
                f"unseen levels [{ev.test_start_level}, {test_end}) overlap the training levels "
                f"[{env.start_level}, {train_end}); expected disjoint ranges")
        sim = self.simulator
        agent = self.agent
        if sim.image_pool > 1 and (agent.input_downsample != "average" or agent.input_pool % sim.image_pool):
            raise ConfigError(
                f"simulator.image_pool = {sim.image_pool} with agent.input_pool = {agent.input_pool} and "
                f"input_downsample = {agent.input_downsample}: inside the simulator the agent would see frames "
                f"upsampled from {64 // sim.image_pool}x{64 // sim.image_pool}, which never occur in the real "
                f"environment; expected image_pool 1, or a divisor of agent.input_pool with average downsampling")
        if self.validate.sim_samples > self.sample.prior_samples:
            raise ConfigError(f"validate.sim_samples = {self.validate.sim_samples}: expected at most "
                              f"sample.prior_samples = {self.sample.prior_samples} (the simulated edits start from "
                              f"prior samples' latents)")
        sample = self.sample
        if sample.event_samples < sample.prior_samples or (sample.event_samples and not sample.prior_samples):
            raise ConfigError(f"sample.event_samples = {sample.event_samples}: expected at least sample.prior_samples "
                              f"= {sample.prior_samples} (the stored prior samples are counted first), and 0 "
                              f"without stored prior samples")
        if max(self.behaviours.lags) >= self.sample.num_steps:
            raise ConfigError(f"behaviours.lags = {list(self.behaviours.lags)}: expected lags shorter than "
                              f"sample.num_steps = {self.sample.num_steps}")
        late = [t for t in self.saliency.timesteps if not 0 <= t < self.saliency.num_steps]
        if late:
            raise ConfigError(f"saliency.timesteps = {list(self.saliency.timesteps)}: expected steps in "
                              f"[0, saliency.num_steps = {self.saliency.num_steps})")
        dyn = self.dynamics
        if not dyn.max_lag <= dyn.target_step < self.sample.num_steps:
            raise ConfigError(f"dynamics.target_step = {dyn.target_step}: expected max_lag = {dyn.max_lag} <= "
                              f"target_step < sample.num_steps = {self.sample.num_steps}")
        size = 64 // sim.image_pool
        if size % 2 ** len(sim.encoder_channels) or size >> len(sim.encoder_channels) < 2:
            raise ConfigError(f"simulator.encoder_channels = {list(sim.encoder_channels)}: each halves the "
                              f"{size}-pixel frame; expected at most {(size // 2).bit_length() - 1} entries")


def _describe(spec: dict[str, Any], kind: str) -> str:
    """`kind` and its bounds as a reader says them: "a number > 0 and <= 1"."""
    bounds = [f"{sign} {spec[name]}" for name, sign in (("gt", ">"), ("ge", ">="), ("le", "<="))
              if spec.get(name) is not None]
    if spec.get("choices"):
        bounds.append("one of " + ", ".join(map(str, spec["choices"])))
    return " ".join([kind, " and ".join(bounds)]) if bounds else kind


def _convert(value: Any, hint: Any, key: str, spec: dict[str, Any]) -> Any:
    """Check `value` against the type hint and constraints; return it in the field's type."""
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{key} = {_shown(value)}: expected {expected}")

    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, key)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _convert(value, options[0], key, spec)
    if origin is dict:
        item = typing.get_args(hint)[1]
        if not isinstance(value, dict) or not value:
            raise fail(f"a non-empty mapping of names to {getattr(item, '__name__', 'values')}")
        return {str(k): _convert(v, item, f"{key}.{k}", {}) for k, v in value.items()}
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list) or not value:
            raise fail(f"a non-empty list of {item.__name__}")
        return tuple(_convert(v, item, f"{key}[{i}]", spec) for i, v in enumerate(value))  # each item obeys spec
    if hint is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(_describe(spec, "an integer"))
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(_describe(spec, "a number"))
        value = float(value)
        if not math.isfinite(value):
            raise fail(_describe(spec, "a finite number"))
    elif hint is str:
        if not isinstance(value, str):
            raise fail(_describe(spec, "a string"))
    kind = {int: "an integer", float: "a number", str: "a string"}.get(hint, "a value")
    if spec.get("choices") and value not in spec["choices"]:
        raise fail(_describe(spec, kind))
    if spec.get("gt") is not None and not value > spec["gt"]:
        raise fail(_describe(spec, kind))
    if spec.get("ge") is not None and not value >= spec["ge"]:
        raise fail(_describe(spec, kind))
    if spec.get("le") is not None and not value <= spec["le"]:
        raise fail(_describe(spec, kind))
    return value


def build_section(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} = {_shown(data)}: expected a mapping of {cls.__name__} keys")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown key {key}: expected one of {', '.join(fields)}")
    missing = [name for name in fields if name not in data]
    if missing:
        key = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError(f"missing key {key} ({fields[missing[0]].metadata['doc']})")
    values = {name: _convert(data[name], hints[name], f"{prefix}.{name}" if prefix else name, f.metadata)
              for name, f in fields.items()}
    return cls(**values)


def params_from_dict(data: dict[str, Any]) -> Params:
    return build_section(Params, data, "")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the last silently), and
    reading `3e-4` as a number, as DVC's YAML 1.2 reader does (PyYAML's YAML 1.1 reads it as a string)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {_shown(key)} is given twice; expected "
                                  f"each key once")
            seen.add(key)
        return super().construct_mapping(node, deep)


_UniqueKeyLoader.yaml_implicit_resolvers = {key: list(value)
                                           for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                       re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
                                       list("-+0123456789."))


def read_yaml(text: str) -> Any:
    """YAML as every reader of params here reads it (see _UniqueKeyLoader)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_params_file(path: str | Path) -> dict[str, Any]:
    """The sections of a parameter file (params.yaml or a profile), or a ConfigError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such parameter file")
    try:
        data = read_yaml(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); expected a UTF-8 YAML "
                          f"file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())[:300]}") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return data


def load_params(path: str | Path = "params.yaml") -> Params:
    data = read_params_file(path)
    try:
        return params_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, JSON-able dict (tuples become lists) of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_hash(*configs: Any) -> str:
    """Short stable hash of configs, recorded beside outputs so a mismatch is detectable."""
    blob = json.dumps([to_dict(c) for c in configs], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
