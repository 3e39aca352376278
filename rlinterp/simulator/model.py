"""The agent-environment simulator: a generative model of rollouts with the frozen agent inside its loop.

    context frames --encoder--> latent (the "bottleneck") --converters--> simulator state, agent hx, previous action
    each step: (state, action) --layer-norm GRU--> deterministic h --prior/posterior--> categorical z
               (h, z) --decoders--> frame, reward, done;   frame --frozen agent--> hx, logits, value, action
               the agent's action (straight-through one-hot) or the recorded one drives the next step

Everything is differentiable: a gradient of any agent output at step t reaches the latent through the agent, the
decoded frames and the simulated dynamics. The agent's weights are frozen (`requires_grad_(False)`) and never in
an optimiser. Hook points on the agent (`hook_hx`, ...) fire in this loop as in the real environment.

Window alignment (store conventions: hx[s] is the agent's state after seeing obs[s], action[s] was taken at s,
reward[s] and done[s] follow action[s]); with c = num_init_steps, simulated step i is window step s = c - 1 + i:
    encoder input  obs[0 : c]          agent hx before step 0   hx[c - 2]      action into step 0   action[c - 2]
    step i labels  obs[s], hx[s]       reward[s - 1], done[s - 1]   action into step i + 1 (teacher forcing) action[s]
Reward and done label the transition INTO step i, made by the action the state has received (as the original's
labels do); after an episode's last frame one more step carries its done (and final reward) with no frame label.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rlinterp.agent.model import AgentOutput, RecurrentAgent
from rlinterp.config import SimulatorConfig
from rlinterp.distributed import Shard, draw_rows
from rlinterp.hooks import HookPoint
from rlinterp.simulator.networks import DownBlock, FrameEmbedder, ImageDecoder, NormGRUCell, mlp

FRAME_SIZE = 64


def straight_through_onehot(probs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """One-hot of `index` in the forward pass whose gradient flows into `probs` (straight-through)."""
    onehot = F.one_hot(index, probs.shape[-1]).to(probs.dtype)
    return onehot + probs - probs.detach()


@dataclass
class Latent:
    """The encoder's output: the latent that drives a rollout, plus what its loss needs."""
    value: torch.Tensor                  # (B, bottleneck_size) the latent itself
    mean: torch.Tensor | None = None     # vae only: posterior mean and log-variance
    logvar: torch.Tensor | None = None


IDENTITY_CALIBRATION = torch.tensor([[1.0, 0.0], [1.0, 0.0]])   # event_calibration: scale 1, offset 0


@dataclass
class Rollout:
    """A simulated window, time-major lists stacked to (K, B, ...)."""
    frames: torch.Tensor          # decoded frames (K, B, 3, S, S) in [0, 1] (clamped, identity gradient)
    reward: torch.Tensor          # (K, B) expected reward under the reward head's distribution
    reward_logits: torch.Tensor   # (K, B, R) over the simulator's reward support
    done_logit: torch.Tensor      # (K, B)
    env_h: torch.Tensor           # deterministic state (K, B, deter)
    env_z: torch.Tensor           # stochastic one-hot state (K, B, groups * classes)
    prior_logits: torch.Tensor    # (K, B, groups, classes)
    post_logits: torch.Tensor | None   # (K, B, groups, classes) where the posterior was used, else None
    imagined: torch.Tensor        # (K,) bool: prior state used at this step
    env_update: torch.Tensor      # (K, B) L2 norm of the change of the deterministic state
    agent_features: torch.Tensor  # (K, B, F) the agent's CNN features of the decoded frame
    agent_hx: torch.Tensor        # (K, B, H) agent state after seeing the decoded frame
    agent_logits: torch.Tensor    # (K, B, A)
    agent_value: torch.Tensor     # (K, B)
    agent_action: torch.Tensor    # (K, B) the agent's action: drawn from its policy where the rollout samples
                                  # actions and the agent acts, else its most likely one


class Simulator(nn.Module):
    """Encoder + converters + recurrent state-space stepper + decoders. The agent is passed to `rollout`."""

    def __init__(self, config: SimulatorConfig, agent_hidden_size: int, num_actions: int):
        super().__init__()
        self.config = config
        self.size = FRAME_SIZE // config.image_pool
        self.num_actions = num_actions
        self.agent_hidden_size = agent_hidden_size
        self.hook_env_h, self.hook_frame, self.hook_action = HookPoint(), HookPoint(), HookPoint()
        c = config
        stoch = c.stoch_groups * c.stoch_classes
        # context encoder: down blocks per frame, a GRU over the context, an MLP to the latent's parameters
        blocks, channels, size = [], 3, self.size
        for out in c.encoder_channels:
            blocks.append(DownBlock(channels, out, size))
            channels, size = out, size // 2
        self.frame_encoder = nn.Sequential(*blocks, nn.Flatten())
        self.context_gru = nn.GRU(channels * size * size, c.encoder_gru_size)
        width = c.encoder_gru_size
        self.to_latent = mlp(width, width, c.bottleneck_size * (2 if c.bottleneck == "vae" else 1), layers=2)
        # converters from the latent to the initial states
        self.to_env_state = mlp(c.bottleneck_size, (c.bottleneck_size + c.deter_size + stoch) // 2,
                                c.deter_size + stoch, layers=2)
        self.to_agent_hx = mlp(c.bottleneck_size, (c.bottleneck_size + agent_hidden_size) // 2, agent_hidden_size,
                               layers=2)
        self.to_action = mlp(c.bottleneck_size, (c.bottleneck_size + num_actions) // 2, num_actions, layers=2)
        # the prior samples' latents come from: N(prior_mean, L L^T) with L = prior_scale (then on the sphere for
        # sphere). As initialised, the bottleneck's own prior; `fit_prior` replaces it with the encoded data's.
        self.register_buffer("prior_mean", torch.zeros(c.bottleneck_size))
        self.register_buffer("prior_scale", torch.eye(c.bottleneck_size))
        # recurrent state-space model
        self.state_input = nn.Linear(stoch, c.hidden_size)
        self.action_input = nn.Linear(num_actions, c.hidden_size, bias=False)
        self.input_norm = nn.LayerNorm(c.hidden_size, eps=1e-3)
        self.gru = NormGRUCell(c.hidden_size, c.deter_size)
        self.prior = mlp(c.deter_size, c.hidden_size, stoch, layers=1, norm=True)
        self.embedder = FrameEmbedder(self.size, c.embed_depth)
        self.post_deter = nn.Linear(c.deter_size, c.hidden_size)
        self.post_embed = nn.Linear(self.embedder.out_size, c.hidden_size, bias=False)
        self.post_out = nn.Sequential(nn.LayerNorm(c.hidden_size, eps=1e-3), nn.ELU(), nn.Linear(c.hidden_size, stoch))
        # decoders from the feature (h, z)
        feature = c.deter_size + stoch
        self.image_decoder = ImageDecoder(feature, self.size, c.decoder_depth)
        self.reward_head = mlp(feature, c.head_size, len(c.reward_support), c.head_layers, norm=True)
        self.register_buffer("reward_support", torch.tensor(c.reward_support, dtype=torch.float32), persistent=False)
        self.done_head = mlp(feature, c.head_size, 1, c.head_layers, norm=True)
        # (reward, done) x (scale, offset) of the event logits at imagined steps: identity as initialised and while
        # training; `fit_event_calibration` fits it after training
        self.register_buffer("event_calibration", IDENTITY_CALIBRATION.clone())

    def reward_target(self, reward: torch.Tensor) -> torch.Tensor:
        """Rewards (...) -> two-hot targets (..., R) over the reward support: a reward between two support values is
        split between them in proportion to its distance (so the expected value is the reward itself)."""
        support = self.reward_support
        reward = reward.clamp(support[0], support[-1])
        upper = torch.searchsorted(support, reward.contiguous()).clamp(1, len(support) - 1)
        low, high = support[upper - 1], support[upper]
        weight_high = (reward - low) / (high - low)
        target = torch.zeros(*reward.shape, len(support), device=reward.device)
        target.scatter_(-1, (upper - 1).unsqueeze(-1), (1 - weight_high).unsqueeze(-1))
        return target.scatter_add_(-1, upper.unsqueeze(-1), weight_high.unsqueeze(-1))

    def likeliest_reward(self, reward_logits: torch.Tensor) -> torch.Tensor:
        """The support value the reward head finds most likely: a reward the game can give."""
        return self.reward_support[reward_logits.argmax(-1)]

    # -- frames ---------------------------------------------------------------------------------------
    def frames_from_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 obs (..., 64, 64, 3) -> float frames (..., 3, S, S) in [0, 1] at the simulator's resolution."""
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:]).permute(0, 3, 1, 2).float().div_(255.0)
        if self.config.image_pool > 1:
            x = F.avg_pool2d(x, self.config.image_pool)
        return x.reshape(*lead, *x.shape[1:])

    def agent_pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """Simulated frames -> the 64x64 frames the agent sees (nearest upsampling)."""
        if self.config.image_pool == 1:
            return frames
        return F.interpolate(frames, scale_factor=self.config.image_pool, mode="nearest")

    # -- latent ---------------------------------------------------------------------------------------
    def encode(self, context: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None,
               shard: Shard = Shard()) -> Latent:
        """Context frames (B, c, 3, S, S) -> latent. A vae draws from its posterior when `sample` (a `shard` of a
        batch split over ranks draws its rows of the whole batch's noise)."""
        batch, steps = context.shape[:2]
        embedded = self.frame_encoder(context.flatten(0, 1) - 0.5).view(batch, steps, -1)
        _, last = self.context_gru(embedded.transpose(0, 1))
        params = self.to_latent(last[0])
        if self.config.bottleneck == "sphere":
            return Latent(F.normalize(params, dim=-1))
        mean, logvar = params.chunk(2, dim=-1)
        logvar = logvar.clamp(-10, 5)
        if not sample:
            return Latent(mean, mean, logvar)
        noise = draw_rows(torch.randn, mean.shape, shard, generator=generator, device=mean.device)
        return Latent(mean + noise * (0.5 * logvar).exp(), mean, logvar)

    def prior_latent(self, batch: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
                     ) -> torch.Tensor:
        """Latents drawn from the prior: the bottleneck's own (N(0, I) for vae, uniform on the unit sphere for
        sphere) or the Gaussian `fit_prior` fitted (projected onto the sphere for sphere)."""
        noise = torch.randn(batch, self.config.bottleneck_size, generator=generator, device=device,
                            dtype=self.prior_mean.dtype)
        latent = self.prior_mean + noise @ self.prior_scale.T
        return F.normalize(latent, dim=-1) if self.config.bottleneck == "sphere" else latent

    def fit_prior(self, latents: torch.Tensor) -> None:
        """Make the prior the Gaussian of `latents` (N, bottleneck), the training windows' encoded latents: a
        bottleneck whose loss leaves the encoder's latents on a small part of the space (on the CPU profile four
        directions hold 97% of their variance) would otherwise start every prior sample where no window lies."""
        covariance = torch.cov(latents.T.double())
        jitter = 1e-6 * covariance.diagonal().mean() * torch.eye(len(covariance), dtype=covariance.dtype,
                                                                 device=covariance.device)
        self.prior_mean.copy_(latents.mean(0))
        self.prior_scale.copy_(torch.linalg.cholesky(covariance + jitter).float())

    # -- rewards and ends -------------------------------------------------------------------------------
    def event_logits(self, feature: torch.Tensor, imagined: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward head's logits (K, B, R) and the done head's logit (K, B) of features (K, B, F); at the
        `imagined` steps (K,) (prior states) recalibrated by `event_calibration`."""
        reward_logits, done_logit = self.reward_head(feature), self.done_head(feature).squeeze(-1)
        calibrated_reward, calibrated_done = self._calibrated(reward_logits, done_logit, self.event_calibration)
        step = imagined.view(-1, *([1] * (done_logit.dim() - 1)))
        return (torch.where(step.unsqueeze(-1), calibrated_reward, reward_logits),
                torch.where(step, calibrated_done, done_logit))

    def _calibrated(self, reward_logits: torch.Tensor, done_logit: torch.Tensor, calibration: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Event logits scaled and offset: every reward logit by the scale, the nonzero rewards' by the offset too
        (with two rewards, Platt scaling of their log-odds), the done logit likewise."""
        (reward_scale, reward_offset), (done_scale, done_offset) = calibration
        nonzero = (self.reward_support != 0).to(reward_logits.dtype)
        return reward_scale * reward_logits + reward_offset * nonzero, done_scale * done_logit + done_offset

    def fit_event_calibration(self, reward_logits: torch.Tensor, reward_target: torch.Tensor,
                              done_logit: torch.Tensor, done: torch.Tensor) -> None:
        """Fit `event_calibration` by maximum likelihood to the raw event logits of imagined steps (N, R), (N,) and
        their real outcomes (two-hot reward targets (N, R), done (N,)). Why: the heads learn mostly on posterior
        states, and on prior states they under-predict events (on the CPU profile, open loop on training windows,
        0.004 rewards per step against 0.011 real); a per-event scale and offset restores the rate there without
        changing which steps rank highest, and leaves teacher-forced steps alone."""
        identity = IDENTITY_CALIBRATION.to(done_logit.device)
        params = identity.clone().requires_grad_(True)
        optimizer = torch.optim.LBFGS([params], max_iter=100, line_search_fn="strong_wolfe")

        def negative_log_likelihood() -> torch.Tensor:
            optimizer.zero_grad()
            reward, end = self._calibrated(reward_logits, done_logit, params)
            loss = (-(reward_target * reward.log_softmax(-1)).sum(-1).mean()
                    + F.binary_cross_entropy_with_logits(end, done)
                    + 1e-4 * (params - identity).pow(2).sum())     # finite where an event never happens
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(negative_log_likelihood)
        self.event_calibration.copy_(params.detach())

    def reset_event_calibration(self) -> None:
        """Identity calibration, as training needs (the heads learn from raw logits)."""
        self.event_calibration.copy_(IDENTITY_CALIBRATION)

    # -- dynamics -------------------------------------------------------------------------------------
    @staticmethod
    def _category(probs: torch.Tensor, modal: bool, generator: torch.Generator | None, shard: Shard
                  ) -> torch.Tensor:
        """The index of a categorical sample (or the mode) of `probs` (B, ..., classes). A sample inverts the CDF
        at a uniform draw, which a `shard` of a batch takes from the whole batch's draws."""
        if modal:
            return probs.argmax(-1)
        uniform = draw_rows(torch.rand, probs.shape[:-1], shard, generator=generator, device=probs.device)
        below = probs.detach().cumsum(-1) <= uniform.unsqueeze(-1)
        return below.sum(-1).clamp_max(probs.shape[-1] - 1)

    def _stoch(self, logits: torch.Tensor, modal: bool, generator: torch.Generator | None, shard: Shard
               ) -> torch.Tensor:
        """Straight-through one-hot categorical sample (or mode) of logits (B, groups, classes), flattened."""
        probs = logits.softmax(-1)
        return straight_through_onehot(probs, self._category(probs, modal, generator, shard)).flatten(1)

    def _group(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.view(-1, self.config.stoch_groups, self.config.stoch_classes)

    def initial_agent_inputs(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The converters' predictions of the agent's hx (tanh) and the logits of the action before step 0.

        Training fits them on a detached latent (losses.py), so they never shape the latent; in generation
        they drive the rollout and gradients flow through them."""
        return torch.tanh(self.to_agent_hx(latent)), self.to_action(latent)

    def decode_frames(self, feature: torch.Tensor) -> torch.Tensor:
        """Features (..., deter + stoch) -> frames (..., 3, S, S), clamped to [0, 1] in the forward pass with an
        identity gradient (so a frame decoded out of range is still pulled back)."""
        decoded = self.image_decoder(feature.flatten(0, -2)).view(*feature.shape[:-1], 3, self.size, self.size)
        return decoded + (decoded.clamp(0, 1) - decoded).detach()

    def rollout(self, latent: torch.Tensor, agent: RecurrentAgent, steps: int, *,
                frames: torch.Tensor | None = None, actions: torch.Tensor | None = None,
                agent_hx: torch.Tensor | None = None, action_prev: torch.Tensor | None = None,
                imagine_from: int | None = None, action_steps: int | None = None, modal: bool = False,
                sample_actions: bool = False, replay: bool = False, generator: torch.Generator | None = None,
                shard: Shard = Shard(), env_grads: bool = True, batched: bool = True) -> Rollout:
        """Simulate `steps` steps from `latent` (B, bottleneck) with `agent` acting on the decoded frames.

        frames (K, B, 3, S, S): real frames for the posterior at steps before `imagine_from` (training);
            without them every step uses the prior.
        actions (K, B) int: recorded actions fed to step i + 1 at steps i < `action_steps` (default
            `imagine_from`: teacher forcing where the posterior is used); otherwise the agent's own action as a
            straight-through one-hot. Open-loop prediction passes imagine_from=0, action_steps=K.
        agent_hx (B, H), action_prev (B,) int: the agent's state and the action before step 0; default: the
            converters' predictions from the latent (generation).
        modal: use the most likely categorical state, prior or posterior, instead of sampling (the original's
            generation mode).
        sample_actions: the agent's own actions are drawn from its policy with `generator`, as it plays the real
            game, instead of its most likely action (the original's choice, and a deterministic rollout's).
        replay: `actions` are ones the agent took in this rollout before (a stored sample): each enters as the
            agent's own choice does, a one-hot whose gradient flows into the agent's probabilities, so a replayed
            sample reproduces its trajectory and its gradients through the environment.
        generator, shard: the sampled states' random numbers; a shard of a batch split over ranks draws its rows
            of the whole batch's numbers from a generator every rank holds in the same state.
        env_grads: False detaches every action before it enters the simulated environment, so gradients
            reach earlier steps only through the agent's own hidden state (the original's `env_grads`).
        batched: where every step's action is recorded, the dynamics do not depend on what the agent sees, so the
            decoder and the agent's CNN run once over all steps after the dynamics (training, open-loop
            prediction); False steps them inside the loop all the same (the reference the agreement test and
            benchmarks/simulator_throughput.py compare with). The reward and done heads always run once.

        Hook points (`rlinterp.hooks.attached(simulator, ...)`) fire where each tensor is made and before it is
        used, once per step: `env_h` (deterministic state), `frame` (decoded frame), `action` (one-hot fed to the
        next step); saliency adds zero leaves there to read gradients. The agent's own points (`hx`, ...) fire as
        in the real environment. Batched, every step's `env_h` and `action` fire before the first `frame`.
        """
        c = self.config
        imagine_from = (steps if frames is not None else 0) if imagine_from is None else imagine_from
        action_steps = imagine_from if action_steps is None else action_steps
        if frames is None and imagine_from > 0:
            raise ValueError("rollout: posterior steps (imagine_from > 0) need real frames")
        recorded = batched and actions is not None and action_steps >= steps and not replay
        state = self.to_env_state(latent)
        h, z_logits = state[:, :c.deter_size], self._group(state[:, c.deter_size:])
        z = self._stoch(z_logits, modal, generator, shard)
        init_hx, init_action_logits = self.initial_agent_inputs(latent)
        hx = init_hx if agent_hx is None else agent_hx
        if action_prev is None:
            action = straight_through_onehot(init_action_logits.softmax(-1), init_action_logits.argmax(-1))
        else:
            action = F.one_hot(action_prev.long(), self.num_actions).to(latent.dtype)
        embeds = self.embedder(frames[:imagine_from].flatten(0, 1)).view(imagine_from, latent.shape[0], -1) \
            if imagine_from > 0 else None
        out: dict[str, list] = {k: [] for k in ("feature", "env_update", "prior_logits", "post_logits", "frames",
                                                "agent", "choice")}
        for i in range(steps):
            x = F.elu(self.input_norm(self.state_input(z) + self.action_input(action)))
            h_new = self.gru(x, h)
            h_new = self.hook_env_h(h_new)
            out["env_update"].append((h_new - h).norm(dim=-1))
            h = h_new
            prior_logits = self._group(self.prior(h))
            out["prior_logits"].append(prior_logits)
            if i < imagine_from:
                post_logits = self._group(self.post_out(self.post_deter(h) + self.post_embed(embeds[i])))
                out["post_logits"].append(post_logits)
                z = self._stoch(post_logits, modal, generator, shard)
            else:
                z = self._stoch(prior_logits, modal, generator, shard)
            feature = torch.cat([h, z], dim=-1)
            out["feature"].append(feature)
            if not recorded:
                frame = self.hook_frame(self.decode_frames(feature))
                agent_out = agent.step_pixels(self.agent_pixels(frame), hx)
                hx = agent_out.hx
                out["frames"].append(frame)
                out["agent"].append(agent_out)
            agent_acts = actions is None or i >= action_steps
            if agent_acts or replay:
                probs = agent_out.logits.softmax(-1)
                choice = self._category(probs, not sample_actions, generator, shard) if agent_acts else \
                    actions[i].long()
                action = straight_through_onehot(probs, choice)
                out["choice"].append(choice)
            else:
                action = F.one_hot(actions[i].long(), self.num_actions).to(latent.dtype)
            action = self.hook_action(action)
            if not env_grads:
                action = action.detach()
        feature = torch.stack(out["feature"])
        if recorded:
            frames_out = torch.stack([self.hook_frame(frame) for frame in self.decode_frames(feature)])
            agent_out = agent.sequence_pixels(
                self.agent_pixels(frames_out.flatten(0, 1)).view(*frames_out.shape[:2], 3, FRAME_SIZE, FRAME_SIZE),
                hx)
        else:
            frames_out = torch.stack(out["frames"])
            agent_out = AgentOutput.stack(out["agent"])
        imagined = torch.arange(steps, device=latent.device) >= imagine_from
        agent_action = agent_out.logits.argmax(-1)
        if out["choice"]:       # the steps (a suffix) where the agent acted or replayed: the actions it took
            agent_action[steps - len(out["choice"]):] = torch.stack(out["choice"])
        reward_logits, done_logit = self.event_logits(feature, imagined)
        return Rollout(frames=frames_out, reward=reward_logits.softmax(-1) @ self.reward_support,
                       reward_logits=reward_logits, done_logit=done_logit,
                       env_h=feature[..., :c.deter_size], env_z=feature[..., c.deter_size:],
                       prior_logits=torch.stack(out["prior_logits"]),
                       post_logits=torch.stack(out["post_logits"]) if out["post_logits"] else None,
                       imagined=imagined,
                       env_update=torch.stack(out["env_update"]), agent_features=agent_out.features,
                       agent_hx=agent_out.hx, agent_logits=agent_out.logits, agent_value=agent_out.value,
                       agent_action=agent_action)
