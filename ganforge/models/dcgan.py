"""DCGAN (Radford, Metz, Chintala 2015) for 28, 32, 56, 64 and 128 pixel images (4 or 7 times a power of 2).

G: z -> linear projection to a (w * 2^(k-1)) x s x s block (s = 7 for 28 pixels, else 4), then k
transposed 4x4 stride-2 convolutions, each halving the channels, the last giving the image
through Tanh. Batch norm and ReLU everywhere but at the output.
D mirrors it: k 4x4 stride-2 convolutions with LeakyReLU(0.2), a normalisation everywhere but at
the input (batch norm as in the paper; layer norm for gradient penalties, which batch norm breaks;
none), then one linear unit giving a logit. Weights ~ N(0, 0.02), norm scales ~ N(1, 0.02).
`g_depth` / `d_depth` (0 in the paper) add that many 3x3 stride-1 convolutions, each with its norm and
activation, at every hidden resolution of G / D.

The conditional pair (cGAN): G joins a learned class embedding to z; D is a projection
discriminator (Miyato & Koyama 2018): D(x, y) = head(h) + <embed(y), h>, with h D's features of x.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from ganforge.errors import GanforgeError


def _plan(image_size: int) -> tuple[int, int]:
    """(side of the smallest feature map, number of stride-2 stages) for an image size."""
    for start in (4, 7):
        stages = math.log2(image_size / start)
        if stages >= 1 and stages.is_integer():
            return start, int(stages)
    raise GanforgeError(f"DCGAN supports 28, 32, 56, 64 and 128 pixel images (4 or 7 times a power of 2), "
                        f"not {image_size}")


def _refine(channels: int, depth: int, norm, act) -> list[nn.Module]:
    """`depth` 3x3 stride-1 convolutions at one resolution, each followed by its norm (if any) and activation."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, 1, 1, bias=norm is None)]
        layers += [norm(channels)] if norm else []
        layers += [act()]
    return layers


def init_dcgan(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: all weights from N(0, 0.02); batch-norm scales from N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, image_size: int = 28, channels: int = 1, z_dim: int = 100, g_width: int = 32,
                 g_depth: int = 0):
        super().__init__()
        self.z_dim, self.image_size, self.channels = z_dim, image_size, channels
        self.start, stages = _plan(image_size)
        widths = [g_width * 2 ** i for i in reversed(range(stages))]  # e.g. [64, 32] for 28 pixels
        # z (B, z_dim) -> (B, widths[0] * s * s); no bias: batch norm follows
        self.project = nn.Linear(z_dim, widths[0] * self.start ** 2, bias=False)
        relu = lambda: nn.ReLU(True)
        layers: list[nn.Module] = [nn.BatchNorm2d(widths[0]), relu()]  # widths[0] x s x s
        layers += _refine(widths[0], g_depth, nn.BatchNorm2d, relu)
        for cin, cout in pairwise(widths):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), relu()]
            layers += _refine(cout, g_depth, nn.BatchNorm2d, relu)
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]  # channels x size x size
        self.net = nn.Sequential(*layers)
        init_dcgan(self)

    def latent_entry(self) -> tuple[torch.Tensor, nn.Module]:
        """(the weight that acts on z, on z's columns: a cGAN's also reads the class embedding; the module whose
        output is the early activation that pca directions read)."""
        return self.project.weight[:, :self.z_dim], self.net[1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).unflatten(1, (-1, self.start, self.start))
        return self.net(x)


D_NORMS = {"batch": nn.BatchNorm2d, "layer": lambda c: nn.GroupNorm(1, c), "none": None}


class DCGANDiscriminator(nn.Module):
    def __init__(self, image_size: int = 28, channels: int = 1, d_width: int = 32, d_norm: str = "batch",
                 d_depth: int = 0):
        super().__init__()
        start, stages = _plan(image_size)
        widths = [d_width * 2 ** i for i in range(stages)]  # e.g. [32, 64] for 28 pixels
        norm = D_NORMS[d_norm]
        leaky = lambda: nn.LeakyReLU(0.2, True)
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), leaky()]
        layers += _refine(widths[0], d_depth, norm, leaky)
        for cin, cout in pairwise(widths):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=norm is None)]
            layers += [norm(cout)] if norm else []
            layers += [leaky()]
            layers += _refine(cout, d_depth, norm, leaky)
        self.features = nn.Sequential(*layers)  # widths[-1] x s x s
        self.head = nn.Linear(widths[-1] * start ** 2, 1)  # one logit per image
        init_dcgan(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


EMBED_DIM = 32  # length of the cGAN generator's class embedding


class CGANGenerator(DCGANGenerator):
    """DCGAN generator of G(z, y): the class embedding is joined to z before the projection, and
    every batch norm is class-conditional (a per-class scale and shift on top of its own, zero at
    the start), as in the projection-discriminator paper's generator."""

    def __init__(self, image_size: int = 28, channels: int = 1, z_dim: int = 100, g_width: int = 32,
                 n_classes: int = 10, g_depth: int = 0):
        super().__init__(image_size, channels, z_dim + EMBED_DIM, g_width, g_depth)
        self.z_dim, self.n_classes = z_dim, n_classes
        self.embed = nn.Embedding(n_classes, EMBED_DIM)
        norms = [m.num_features for m in self.net if isinstance(m, nn.BatchNorm2d)]
        self.gains = nn.ModuleList(nn.Embedding(n_classes, c) for c in norms)
        self.shifts = nn.ModuleList(nn.Embedding(n_classes, c) for c in norms)
        for table in (*self.gains, *self.shifts):
            nn.init.zeros_(table.weight)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.project(torch.cat([z, self.embed(y)], dim=1)).unflatten(1, (-1, self.start, self.start))
        norms = iter(zip(self.gains, self.shifts))
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, nn.BatchNorm2d):
                gain, shift = next(norms)
                x = x * (1 + gain(y)[:, :, None, None]) + shift(y)[:, :, None, None]
        return x


class CGANDiscriminator(DCGANDiscriminator):
    """Projection discriminator: D(x, y) = head(h) + <embed(y), h> with h = D's flattened features of x."""

    def __init__(self, image_size: int = 28, channels: int = 1, d_width: int = 32, d_norm: str = "batch",
                 n_classes: int = 10, d_depth: int = 0):
        super().__init__(image_size, channels, d_width, d_norm, d_depth)
        self.n_classes = n_classes
        self.embed = nn.Embedding(n_classes, self.head.in_features)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x).flatten(1)
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(1)
