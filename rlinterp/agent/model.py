"""The recurrent IMPALA agent: conv encoder -> fc -> GRU -> policy and value heads.

Precision: `set_precision(torch.bfloat16)` runs the encoder (convolutions and fc, nearly all the compute)
under bf16 autocast; its features, the GRU state, logits and value stay fp32.

Every activation a researcher may want to read or patch passes through a named `HookPoint`
(`hook_features`, `hook_hx`, `hook_logits`, `hook_value`): `with rlinterp.hooks.attached(agent, hx=fn)` reads,
or replaces, the hidden state in the real and in the simulated loop alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from rlinterp.hooks import HookPoint


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


class ConvSequence(nn.Module):
    """IMPALA stage: conv, 3x3/2 max-pool (halves the resolution), residual blocks."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(out_channels) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv(x), kernel_size=3, stride=2, padding=1)
        return self.blocks(x)


class ImpalaEncoder(nn.Module):
    """uint8 frames (N, H, W, C) -> features (N, fc_size). `input_pool` > 1 shrinks the frame first, by
    averaging pool x pool blocks or by stacking them as channels (space_to_depth, which loses nothing)."""

    def __init__(self, obs_shape: tuple[int, int, int], channels: tuple[int, ...], blocks_per_stage: int,
                 fc_size: int, input_pool: int = 1, input_downsample: str = "average"):
        super().__init__()
        height, width, in_channels = obs_shape
        self.input_pool, self.space_to_depth = input_pool, input_downsample == "space_to_depth"
        height, width = height // input_pool, width // input_pool
        if self.space_to_depth:
            in_channels *= input_pool ** 2
        stages = []
        for out_channels in channels:
            stages.append(ConvSequence(in_channels, out_channels, blocks_per_stage))
            in_channels = out_channels
            height, width = (height + 1) // 2, (width + 1) // 2
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_channels * height * width, fc_size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.embed_pixels(obs.permute(0, 3, 1, 2).float().div_(255.0))

    def embed_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Float frames (N, C, H, W) in [0, 1]: the differentiable entry the simulator feeds decoded frames to."""
        if self.input_pool > 1:
            x = F.pixel_unshuffle(x, self.input_pool) if self.space_to_depth else F.avg_pool2d(x, self.input_pool)
        x = self.stages(x.contiguous(memory_format=torch.channels_last))
        return F.relu(self.fc(F.relu(x).flatten(1)))


def sample_actions(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One action per row, drawn from the policy the logits define."""
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


@dataclass
class AgentOutput:
    """One agent step (or a sequence of steps, with a leading time axis)."""
    features: torch.Tensor  # encoder output fed to the GRU
    hx: torch.Tensor        # GRU state AFTER this step: the state the logits and value are read from
    logits: torch.Tensor    # unnormalised action log-probabilities
    value: torch.Tensor     # state-value estimate

    @staticmethod
    def stack(steps: list[AgentOutput]) -> AgentOutput:
        """Steps' outputs stacked along a new leading time axis."""
        return AgentOutput(*(torch.stack([getattr(step, name) for step in steps])
                             for name in ("features", "hx", "logits", "value")))


class RecurrentAgent(nn.Module):
    """IMPALA-CNN + GRU actor-critic. The hidden state is zeroed at every episode start."""

    def __init__(self, obs_shape: tuple[int, int, int], num_actions: int, channels: tuple[int, ...] = (16, 32, 32),
                 blocks_per_stage: int = 2, fc_size: int = 256, hidden_size: int = 64, input_pool: int = 1,
                 input_downsample: str = "average", heads_input: str = "hx", init: str = "pytorch"):
        super().__init__()
        self.encoder_dtype: torch.dtype | None = None
        self.hidden_size = hidden_size
        self.heads_input = heads_input
        self.num_actions = num_actions
        self.encoder = ImpalaEncoder(obs_shape, tuple(channels), blocks_per_stage, fc_size, input_pool,
                                     input_downsample)
        self.gru = nn.GRUCell(fc_size, hidden_size)
        head_size = {"hx": hidden_size, "features": fc_size, "features_and_hx": fc_size + hidden_size}[heads_input]
        self.policy_head = nn.Linear(head_size, num_actions)
        self.value_head = nn.Linear(head_size, 1)
        self.hook_features = HookPoint()
        self.hook_hx = HookPoint()
        self.hook_logits = HookPoint()
        self.hook_value = HookPoint()
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        """`pytorch`: convolutions keep PyTorch's default (fan-in scaled) init, the fc is orthogonal (gain
        sqrt(2)), head biases keep PyTorch's default. `reference`: the reference implementation's TensorFlow
        defaults, Glorot-uniform convolutions and fc with zero biases, and zero head biases. Both: orthogonal
        GRU weights with zero biases, orthogonal heads with gains 0.01 (policy) and 1 (value)."""
        if init == "reference":
            for layer in [m for m in self.encoder.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
            for head in (self.policy_head, self.value_head):
                nn.init.zeros_(head.bias)
        elif init == "pytorch":
            nn.init.orthogonal_(self.encoder.fc.weight, gain=nn.init.calculate_gain("relu"))
            nn.init.zeros_(self.encoder.fc.bias)
        else:
            raise ValueError(f"init = {init!r}: expected reference or pytorch")
        for weight in (self.gru.weight_ih, self.gru.weight_hh):
            nn.init.orthogonal_(weight)
        nn.init.zeros_(self.gru.bias_ih)
        nn.init.zeros_(self.gru.bias_hh)
        nn.init.orthogonal_(self.policy_head.weight, gain=0.01)
        nn.init.orthogonal_(self.value_head.weight, gain=1.0)

    def set_precision(self, dtype: torch.dtype | None) -> RecurrentAgent:
        """Run the encoder under autocast to `dtype` (e.g. torch.bfloat16), or in fp32 with None."""
        self.encoder_dtype = dtype
        return self

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 frames (N, H, W, C) -> features, at the encoder's precision (returned as fp32)."""
        return self._at_precision(self.encoder, obs)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float frames (N, C, H, W) in [0, 1] -> features, at the encoder's precision (returned as fp32)."""
        return self._at_precision(self.encoder.embed_pixels, pixels)

    def _at_precision(self, fn, x: torch.Tensor) -> torch.Tensor:
        if self.encoder_dtype is None:
            return fn(x)
        with torch.autocast(x.device.type, dtype=self.encoder_dtype):
            return fn(x).float()

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch_size, self.hidden_size, device=device)

    def heads(self, features: torch.Tensor, hx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy logits and value from what `heads_input` names: the hx (original), the features, or both."""
        if self.heads_input == "hx":
            x = hx
        elif self.heads_input == "features":
            x = features
        else:
            x = torch.cat([features, hx], dim=-1)
        return self.hook_logits(self.policy_head(x)), self.hook_value(self.value_head(x).squeeze(-1))

    def step(self, obs: torch.Tensor, hx: torch.Tensor, first: torch.Tensor) -> AgentOutput:
        """One step for a batch: obs (B,H,W,C) uint8, hx (B,hidden) from the previous step, first (B,) bool.

        Where `first` is set the episode has just started and the incoming state is replaced by zeros.
        """
        return self._recur(self.encode(obs), hx * (~first).unsqueeze(-1).to(hx.dtype))

    def step_pixels(self, pixels: torch.Tensor, hx: torch.Tensor) -> AgentOutput:
        """One step on float frames (B, 3, 64, 64) in [0, 1], never resetting: the simulator's agent step."""
        return self._recur(self.encode_pixels(pixels), hx)

    def sequence_pixels(self, pixels: torch.Tensor, hx: torch.Tensor) -> AgentOutput:
        """`step_pixels` over a sequence, pixels (T, B, 3, 64, 64), the state before step 0 (B, hidden): the
        encoder runs on all T*B frames at once, the GRU and heads step in time (every hook fires once per step, as
        in T calls of `step_pixels`). The simulator's agent pass wherever the actions are recorded."""
        steps, batch = pixels.shape[:2]
        features = self.encode_pixels(pixels.flatten(0, 1)).view(steps, batch, -1)
        outputs = []
        for t in range(steps):
            outputs.append(self._recur(features[t], hx))
            hx = outputs[-1].hx
        return AgentOutput.stack(outputs)

    def _recur(self, features: torch.Tensor, hx: torch.Tensor) -> AgentOutput:
        features = self.hook_features(features)
        hx = self.hook_hx(self.gru(features, hx))
        logits, value = self.heads(features, hx)
        return AgentOutput(features, hx, logits, value)

    def forward_sequence(self, obs: torch.Tensor, hx: torch.Tensor, first: torch.Tensor) -> AgentOutput:
        """A rollout segment: obs (T,B,H,W,C), the state before step 0 (B,hidden), first (T,B).

        The encoder runs on all T*B frames at once; only the 64-unit GRU is stepped in time.
        """
        steps, batch = first.shape
        features = self.hook_features(self.encode(obs.flatten(0, 1))).view(steps, batch, -1)
        keep = (~first).unsqueeze(-1).to(features.dtype)
        states = []
        for t in range(steps):
            hx = self.gru(features[t], hx * keep[t])
            states.append(hx)
        hxs = self.hook_hx(torch.stack(states))
        logits, value = self.heads(features, hxs)
        return AgentOutput(features, hxs, logits, value)
