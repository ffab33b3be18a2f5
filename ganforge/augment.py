"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image D sees.

Every image D sees, real or forged, in D's step and in G's step, passes through the same kinds of
random transforms, each image drawing its own: D cannot memorise a small data set, and G still gets
gradients through the transforms. A policy is a comma-separated list of `color`, `translation` and
`cutout`; images are in [-1, 1]. Randomness comes from torch's global generator, which checkpoints
save and restore.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One random factor per image, shaped to broadcast over (C, H, W)."""
    return torch.rand(len(x), 1, 1, 1).to(x) * (high - low) + low


def color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2 around the pixel's channel mean) and contrast (x0.5..1.5)."""
    x = x + _uniform(x, -0.5, 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * _uniform(x, 0.0, 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean


def _pixel_grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, _, h, w = x.shape
    return (torch.arange(n, device=x.device).view(n, 1, 1), torch.arange(h, device=x.device).view(1, h, 1),
            torch.arange(w, device=x.device).view(1, 1, w))


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels in each direction, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = round(h * ratio), round(w * ratio)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    b, rows, cols = _pixel_grid(x)
    padded = F.pad(x, [sw, sw, sh, sh])  # output pixel (r, c) reads padded (r + sh - dy, c + sw - dx)
    return padded[b, :, rows + sh - dy, cols + sw - dx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a (ratio * size)-sided square centred at a random pixel of each image (clipped at the edges)."""
    n, _, h, w = x.shape
    ch, cw = round(h * ratio), round(w * ratio)
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - cw // 2
    _, rows, cols = _pixel_grid(x)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x)


AUGMENTATIONS = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(policy: str) -> list[str]:
    """'color,translation' -> ['color', 'translation']; unknown names raise ValueError."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
    return names


def augmenter(policy: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The policy parsed once, as one function of a batch (the identity for an empty policy)."""
    steps = [AUGMENTATIONS[name] for name in parse_policy(policy)]

    def augment(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x
    return augment


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    return augmenter(policy)(x)
