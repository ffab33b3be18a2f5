"""Drawing samples from a generator and writing them as a PNG grid or a .npy array."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.utils import save_image

from ganforge.data import to_uint8
from ganforge.errors import GanforgeError


def noise(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """The noise vectors z ~ N(0, I) for a seed: the same seed always gives the same z."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def sample(G: nn.Module, n: int, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """n images from G (floats in [-1, 1], NCHW), from the noise of `seed`; G in eval mode."""
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    z = noise(n, G.z_dim, seed)
    out = torch.cat([G(z[i:i + batch_size].to(device)).float().cpu() for i in range(0, n, batch_size)])
    G.train(was_training)
    return out


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """Float images in [-1, 1] -> one PNG grid (rows of about sqrt(n))."""
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    save_image(images, path, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))


def write_samples(images: torch.Tensor, path: str | Path) -> Path:
    """.png: a grid; .npy: uint8 (N, H, W) for one channel, (N, H, W, 3) for three."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise GanforgeError(f"{path}: the output must end in .png (a grid) or .npy (an array)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        save_grid(images, path)
    else:
        array = to_uint8(images).permute(0, 2, 3, 1).numpy()
        np.save(path, array[..., 0] if array.shape[-1] == 1 else array)
    return path
