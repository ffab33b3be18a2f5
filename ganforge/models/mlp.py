"""The fully connected GAN of Goodfellow et al. (2014), as in the paper's MNIST model.

G: z -> two ReLU layers -> image through Tanh (the paper used a sigmoid for [0, 1] pixels).
D: two maxout layers with dropout -> one logit. Weights uniform in [-0.05, 0.05] for G and
[-0.005, 0.005] for D, biases 0, as in the paper's released MNIST setup.
"""

from __future__ import annotations

import torch
from torch import nn


def _init_uniform(module: nn.Module, bound: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


class MLPGenerator(nn.Module):
    def __init__(self, image_size: int = 28, channels: int = 1, z_dim: int = 100, g_hidden: int = 1200):
        super().__init__()
        self.z_dim, self.image_size, self.channels = z_dim, image_size, channels
        self.net = nn.Sequential(
            nn.Linear(z_dim, g_hidden), nn.ReLU(True),
            nn.Linear(g_hidden, g_hidden), nn.ReLU(True),
            nn.Linear(g_hidden, channels * image_size ** 2), nn.Tanh(),
        )
        _init_uniform(self, 0.05)

    def latent_entry(self) -> tuple[torch.Tensor, nn.Module]:
        """(the weight that acts on z; the module whose output pca directions read)."""
        return self.net[0].weight, self.net[1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(1, (self.channels, self.image_size, self.image_size))


class Maxout(nn.Module):
    """`units` outputs, each the largest of `pieces` linear functions of the input."""

    def __init__(self, n_in: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(n_in, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(len(x), self.units, self.pieces).amax(-1)


class MLPDiscriminator(nn.Module):
    def __init__(self, image_size: int = 28, channels: int = 1, d_hidden: int = 240, d_pieces: int = 5,
                 d_dropout: bool = True):
        super().__init__()
        p_in, p_hidden = (0.2, 0.5) if d_dropout else (0.0, 0.0)
        self.net = nn.Sequential(
            nn.Flatten(), nn.Dropout(p_in),
            Maxout(channels * image_size ** 2, d_hidden, d_pieces), nn.Dropout(p_hidden),
            Maxout(d_hidden, d_hidden, d_pieces), nn.Dropout(p_hidden),
            nn.Linear(d_hidden, 1),
        )
        _init_uniform(self, 0.005)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)
