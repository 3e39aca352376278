"""Prediction-quality measures between simulated and real rollouts, per window and simulated step.

Every function takes time-major tensors (K, B, ...) and returns (K, B): one value per step and window, so the
caller can take medians and inter-quartile ranges over windows at each step k.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def mse(predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean squared error over everything after (K, B)."""
    return (predicted - real).pow(2).flatten(2).mean(-1)


def psnr(predicted: torch.Tensor, real: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (frames in [0, peak]); +inf for identical frames."""
    return 10 * torch.log10(peak ** 2 / mse(predicted, real))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(predicted: torch.Tensor, real: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of frames (K, B, C, H, W) in [0, 1], averaged over channels and
    positions, with a Gaussian window (7 px: frames are 32-64 px) and the standard constants."""
    k, b, c, h, w = real.shape
    kernel = _gaussian_window(window, sigma).to(real).expand(c, 1, window, window)
    x, y = predicted.reshape(k * b, c, h, w), real.reshape(k * b, c, h, w)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(-1).view(k, b)


def cosine(predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of vectors (K, B, D)."""
    return F.cosine_similarity(predicted, real, dim=-1, eps=1e-8)


def action_agreement(predicted_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """1 where the most likely actions agree, else 0."""
    return (predicted_logits.argmax(-1) == real_logits.argmax(-1)).float()


def policy_kl(predicted_logits: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """KL(real policy || simulated policy) in nats."""
    real_log = real_logits.log_softmax(-1)
    return (real_log.exp() * (real_log - predicted_logits.log_softmax(-1))).sum(-1)
