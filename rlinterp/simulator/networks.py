"""Building blocks of the simulator: MLPs, the context encoder's down blocks, the layer-normalised GRU cell,
the posterior's frame embedder and the image decoder. Sizes come from `SimulatorConfig`."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def mlp(in_size: int, hidden: int, out_size: int, layers: int, norm: bool = False) -> nn.Sequential:
    """`layers` hidden layers of width `hidden` (each Linear [+ LayerNorm] + ELU), then a linear output."""
    modules: list[nn.Module] = []
    for _ in range(layers):
        modules += [nn.Linear(in_size, hidden)] + ([nn.LayerNorm(hidden, eps=1e-3)] if norm else []) + [nn.ELU()]
        in_size = hidden
    return nn.Sequential(*modules, nn.Linear(in_size, out_size))


class DownBlock(nn.Module):
    """Residual block that halves the resolution (the original's ResBlockDown): LN, conv, LN, LeakyReLU, conv,
    max-pool; shortcut max-pool + 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, size: int):
        super().__init__()
        self.norm0 = nn.LayerNorm([in_channels, size, size])
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm1 = nn.LayerNorm([out_channels, size, size])
        self.conv1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.leaky_relu(self.norm1(self.conv0(self.norm0(x)))))
        return F.max_pool2d(y, 2) + self.shortcut(F.max_pool2d(x, 2))


class NormGRUCell(nn.Module):
    """GRU cell with LayerNorm on each gate's pre-activation (DreamerV2's 'gru_layernorm')."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input = nn.Linear(input_size, 3 * hidden_size, bias=False)
        self.hidden = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size, eps=1e-3) for _ in range(3))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        r_i, u_i, n_i = self.input(x).chunk(3, dim=-1)
        r_h, u_h, n_h = self.hidden(h).chunk(3, dim=-1)
        reset = torch.sigmoid(self.norms[0](r_i + r_h))
        update = torch.sigmoid(self.norms[1](u_i + u_h))
        candidate = torch.tanh(self.norms[2](n_i + reset * n_h))
        return update * candidate + (1 - update) * h


class FrameEmbedder(nn.Module):
    """Frame (B, 3, S, S) -> embedding for the posterior: stride-2 4x4 convs with ELU down to 4x4."""

    def __init__(self, size: int, depth: int):
        super().__init__()
        layers, channels = [], 3
        for i in range((size // 4).bit_length() - 1):
            layers += [nn.Conv2d(channels, depth * 2 ** i, 4, stride=2, padding=1), nn.ELU()]
            channels = depth * 2 ** i
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_size = channels * 16

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames - 0.5)


class ImageDecoder(nn.Module):
    """Feature -> frame (B, 3, S, S) around 0.5: a linear map to 4x4, then stride-2 transposed convs."""

    def __init__(self, feature_size: int, size: int, depth: int):
        super().__init__()
        ups = (size // 4).bit_length() - 1
        channels = depth * 2 ** (ups - 1)
        self.start = nn.Linear(feature_size, channels * 16)
        self.start_shape = (channels, 4, 4)
        layers: list[nn.Module] = []
        for i in range(ups):
            out = 3 if i == ups - 1 else channels // 2
            layers.append(nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1))
            if i < ups - 1:
                layers.append(nn.ELU())
            channels = out
        self.net = nn.Sequential(*layers)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.start(feature).view(-1, *self.start_shape)
        return self.net(x) + 0.5
