"""StackGAN (Zhang et al. 2017): text to image in two stages, sized for a CPU.

Both generators read the caption through Conditioning Augmentation: the text embedding gives a
mean and a log-variance (one linear layer), and the condition c = mu + sigma * eps is sampled, with
a KL(N(mu, sigma^2) || N(0, I)) term added to G's loss so that nearby captions give nearby
conditions. eps is part of the noise the generator takes, so a seed fixes the whole image.

Stage-I: [z, c] -> a DCGAN generator -> a coarse image (28 or 32 pixels; 64 by option).
Stage-II: the Stage-I image -> two stride-2 convs -> joined with c -> residual blocks -> three
upsamplings -> an image twice the Stage-I size. Stage-I is frozen while Stage-II trains. Unlike
the paper's, G2 draws a correction to the Stage-I image upsampled (added before the final tanh,
its last layer starting at zero): it starts from the sketch and learns only what sharpens it,
which a CPU budget of a few hundred steps can afford; the paper's G2 must first learn to redraw it.
Both discriminators are matching-aware (Reed et al. 2016): D(x, text) downsamples x to 7x7 or
4x4 features, joins the text embedding compressed to 128 numbers and replicated over the map, and
gives one logit; the trainer shows it real images with the wrong caption as negatives too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.models.dcgan import D_NORMS, DCGANGenerator, init_dcgan

TEXT_JOIN = 128  # length of the compressed text embedding that D joins to its image features


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), averaged over the batch and the dimensions (StackGAN's code)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()


class CondAugment(nn.Module):
    """text embedding (unit length) -> (c, mu, logvar) with c = mu + exp(logvar / 2) * eps."""

    def __init__(self, text_dim: int, c_dim: int = 128):
        super().__init__()
        self.scale = math.sqrt(text_dim)  # unit-length embeddings -> entries of about unit size
        self.fc = nn.Linear(text_dim, 2 * c_dim)

    def forward(self, text: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.fc(text * self.scale).chunk(2, dim=1)
        logvar = logvar.clamp(-10, 10)  # keeps exp() finite whatever the weights
        return mu + (0.5 * logvar).exp() * eps, mu, logvar


class StageIGenerator(nn.Module):
    """G1(noise, text) -> coarse image; noise = [z, eps] of length z_dim + c_dim (self.z_dim)."""

    def __init__(self, image_size: int = 32, channels: int = 3, z_dim: int = 100, text_dim: int = 128,
                 c_dim: int = 128, g_width: int = 64):
        super().__init__()
        self.image_size, self.channels, self.text_dim, self.c_dim = image_size, channels, text_dim, c_dim
        self.z_dim = z_dim + c_dim  # the noise it takes
        self.ca = CondAugment(text_dim, c_dim)
        self.net = DCGANGenerator(image_size, channels, z_dim + c_dim, g_width)

    def latent_entry(self) -> tuple[torch.Tensor, nn.Module]:
        """(the weight on z, whose noise is [z, eps]: directions move z; the module pca directions read)."""
        return self.net.project.weight[:, :self.z_dim - self.c_dim], self.net.net[1]

    def forward(self, noise: torch.Tensor, text: torch.Tensor, return_kl: bool = False):
        z, eps = noise.split([self.z_dim - self.c_dim, self.c_dim], dim=1)
        c, mu, logvar = self.ca(text, eps)
        image = self.net(torch.cat([z, c], dim=1))
        return (image, kl_divergence(mu, logvar)) if return_kl else image


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(*_block(width, width), nn.Conv2d(width, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class StageIIGenerator(nn.Module):
    """G2(stage-I image, noise, text) -> image of twice the size; noise = eps of length c_dim (self.z_dim).
    upsample: how the up path doubles its maps; ganforge trains "bilinear" (its "nearest", the default for runs
    made before, drew a grid-like texture on Fashion-MNIST that the classifier read as a shirt's)."""

    def __init__(self, image_size: int = 64, channels: int = 3, text_dim: int = 128, c_dim: int = 128,
                 g_width: int = 32, res_blocks: int = 2, upsample: str = "nearest"):
        super().__init__()
        self.image_size, self.channels, self.text_dim, self.c_dim = image_size, channels, text_dim, c_dim
        self.z_dim = c_dim
        w = g_width
        self.ca = CondAugment(text_dim, c_dim)
        self.down = nn.Sequential(  # channels x s -> 4w x s/4 (s = image_size / 2)
            nn.Conv2d(channels, w, 3, 1, 1), nn.ReLU(True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True))
        self.joint = nn.Sequential(*_block(4 * w + c_dim, 4 * w), *(ResBlock(4 * w) for _ in range(res_blocks)))
        up = []  # 4w x s/4 -> w/2 x 2s
        for cin, cout in ((4 * w, 2 * w), (2 * w, w), (w, max(w // 2, 8))):
            up += [nn.Upsample(scale_factor=2, mode=upsample), *_block(cin, cout)]
        self.up = nn.Sequential(*up, nn.Conv2d(max(w // 2, 8), channels, 3, 1, 1))  # the correction, pre-tanh
        init_dcgan(self)
        nn.init.zeros_(self.up[-1].weight)  # at the start, G2 returns the Stage-I image upsampled
        nn.init.zeros_(self.up[-1].bias)

    def forward(self, coarse: torch.Tensor, noise: torch.Tensor, text: torch.Tensor, return_kl: bool = False):
        c, mu, logvar = self.ca(text, noise)
        h = self.down(coarse)
        h = self.joint(torch.cat([h, c[:, :, None, None].expand(-1, -1, *h.shape[2:])], dim=1))
        sketch = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
        image = torch.tanh(torch.atanh(sketch.clamp(-0.999, 0.999)) + self.up(h))
        return (image, kl_divergence(mu, logvar)) if return_kl else image


class TextDiscriminator(nn.Module):
    """Matching-aware D(x, text) -> one logit per pair, for any even image size (28, 32, 56, 64, 128)."""

    def __init__(self, image_size: int = 32, channels: int = 3, text_dim: int = 128, d_width: int = 64,
                 d_norm: str = "batch"):
        super().__init__()
        self.text_dim = text_dim
        norm = D_NORMS[d_norm]
        layers: list[nn.Module] = [nn.Conv2d(channels, d_width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        size, width = image_size // 2, d_width
        while size > 7:  # halve down to 4x4 (powers of two) or 7x7 (28 and 56 pixels)
            layers += [nn.Conv2d(width, min(2 * width, 8 * d_width), 4, 2, 1, bias=norm is None)]
            width, size = min(2 * width, 8 * d_width), size // 2
            layers += [norm(width)] if norm else []
            layers += [nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)  # width x size x size
        self.compress = nn.Sequential(nn.Linear(text_dim, TEXT_JOIN), nn.LeakyReLU(0.2, True))
        self.head = nn.Sequential(nn.Conv2d(width + TEXT_JOIN, width, 3, 1, 1, bias=norm is None),
                                  *([norm(width)] if norm else []), nn.LeakyReLU(0.2, True),
                                  nn.Conv2d(width, 1, size))  # a logit
        self.scale = math.sqrt(text_dim)
        init_dcgan(self)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        t = self.compress(text * self.scale)[:, :, None, None].expand(-1, -1, *h.shape[2:])
        return self.head(torch.cat([h, t], dim=1)).flatten()
