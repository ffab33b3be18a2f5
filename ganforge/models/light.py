"""A light, fast image GAN for 32, 64, 128 and 256 pixel images, after FastGAN (Liu et al. 2021), with a small
StyleGAN-like mapping network (Karras et al.) in front of G so that samples have a W space.

G = synthesis(mapping(z)).
  mapping: z -> pixel norm -> `map_depth` x (linear, LeakyReLU 0.2) -> w (w_dim = z_dim); depth 0: w = normalised z.
  synthesis: w -> linear to a 4x4 block -> batch norm -> GLU, then one up block per doubling: nearest 2x upsampling
  and a 3x3 convolution to twice the channels, batch norm, GLU (FastGAN's block). The upsample + 3x3 convolution
  is computed as the equal 4x4 stride-2 transposed convolution (its weight summed from the 3x3 one), 4/9 of the
  work and no upsampled copy in memory. Each block's batch norm is followed by a per-channel scale and shift from
  w (zero at the start), the cheap form of StyleGAN's per-layer styles (no modulated convolutions). Skip-layer
  excitation (SLE): the 8x8 and 16x16 features, pooled to 4x4, gate the channels of the features image_size/32
  times larger (the two highest feature resolutions, at 64 px and up). A last upsample + 3x3 convolution (no
  features at full resolution: they cost more memory traffic than their work) and tanh give the image.
  Channels: `g_width` at image_size / 2, doubling at each halving up to 8 * g_width.
D: a 4x4 stride-2 convolution with LeakyReLU(0.2) (no norm at the input), then residual down blocks (FastGAN's
  DownBlockComp): main = 4x4 stride-2 conv, norm, LeakyReLU, 3x3 conv, norm, LeakyReLU; skip = 2x2 average
  pooling, 1x1 conv, norm, LeakyReLU; out = (main + skip) / 2 (`d_refine=False` leaves out the 3x3 conv);
  down to 4x4, then one linear unit giving a logit (shape (n,), as DCGANDiscriminator). Channels: `d_width` after the input convolution, doubling up to 8 * d_width.
  No in-place operations: spectral norm on every layer and R1's double backward both work.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.errors import GanforgeError

SIZES = (32, 64, 128, 256)


class LightSizeError(GanforgeError, ValueError):
    """An image size the light networks do not support (a ValueError and a user-fixable GanforgeError)."""


def _stages(image_size: int) -> int:
    """The number of doublings from 4x4 to the image size."""
    if image_size not in SIZES:
        raise LightSizeError(f"the light networks support {', '.join(map(str, SIZES))} pixel images, not "
                             f"{image_size}; choose one of those sizes (or the dcgan model)")
    return int(math.log2(image_size // 4))


def _widths(width: int, image_size: int) -> dict[int, int]:
    """G's channels per feature resolution (4 to image_size / 2): `width` at image_size / 2, doubling at each
    halving, at most 8 * width."""
    top = image_size // 2
    return {4 * 2 ** i: min(width * top // (4 * 2 ** i), 8 * width) for i in range(_stages(image_size))}


def init_light(module: nn.Module) -> None:
    """He initialisation (fan in, LeakyReLU 0.2 gain) of every weight, zero biases, norm scales 1."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _glu(x: torch.Tensor) -> torch.Tensor:
    """GLU over channels: first half * sigmoid(second half)."""
    a, b = x.chunk(2, dim=1)
    return a * torch.sigmoid(b)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class Mapping(nn.Module):
    """z -> w: pixel norm, then `depth` x (linear, LeakyReLU 0.2); depth 0 gives the normalised z."""

    def __init__(self, z_dim: int, w_dim: int, depth: int):
        super().__init__()
        if depth == 0 and w_dim != z_dim:
            raise ValueError("map_depth 0 needs w_dim == z_dim")
        layers: list[nn.Module] = [PixelNorm()]
        for i in range(depth):
            layers += [nn.Linear(z_dim if i == 0 else w_dim, w_dim), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class UpConv(nn.Module):
    """Nearest 2x upsampling, then a 3x3 convolution (padding 1), computed as the one 4x4 stride-2 transposed
    convolution that gives the same result: each output pixel of a parity sees a 2x2 patch of the input with
    the 3x3 taps summed that land on the same input pixel."""

    # rows of the 4x4 transposed kernel as sums of the 3x3 kernel's rows (ConvTranspose2d's k = 0..3)
    FOLD = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        nn.init.kaiming_normal_(self.weight, a=0.2, nonlinearity="leaky_relu")
        self.register_buffer("fold", self.FOLD.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fold = self.fold.to(self.weight.dtype)
        # (cout, cin, 3, 3) -> (cin, cout, 4, 4), the layout conv_transpose2d takes
        w = torch.einsum("ky,oiyx,lx->iokl", fold, self.weight, fold)
        if x.is_contiguous(memory_format=torch.channels_last):
            w = w.contiguous(memory_format=torch.channels_last)
        return F.conv_transpose2d(x, w, stride=2, padding=1)


class UpBlock(nn.Module):
    """upsample + 3x3 conv to 2 * cout, batch norm, the style's scale and shift, GLU: (cin, s) -> (cout, 2s)."""

    def __init__(self, cin: int, cout: int, w_dim: int, style: bool):
        super().__init__()
        self.conv = UpConv(cin, 2 * cout)
        self.norm = nn.BatchNorm2d(2 * cout)
        self.style = nn.Linear(w_dim, 4 * cout) if style else None
        if self.style is not None:
            nn.init.zeros_(self.style.weight)
            nn.init.zeros_(self.style.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if self.style is not None:
            scale, shift = self.style(w)[:, :, None, None].chunk(2, dim=1)
            x = x * (1 + scale) + shift
        return _glu(x)


class SLE(nn.Module):
    """Skip-layer excitation: low-resolution features (cin, s) -> a channel gate (cout) in (0, 1) for a
    higher-resolution map: pooled to 4x4, a 4x4 convolution, LeakyReLU 0.1, a 1x1 convolution, sigmoid."""

    def __init__(self, cin: int, cout: int, side: int):
        super().__init__()
        self.pool = side // 4
        self.net = nn.Sequential(nn.Conv2d(cin, cout, 4), nn.LeakyReLU(0.1), nn.Conv2d(cout, cout, 1), nn.Sigmoid())

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        low = F.avg_pool2d(low, self.pool) if self.pool > 1 else low
        return high * self.net(low)


class Synthesis(nn.Module):
    """w (n, w_dim) -> image (n, channels, size, size) in [-1, 1]."""

    def __init__(self, image_size: int, channels: int, w_dim: int, g_width: int, style: bool = True,
                 sle: bool = True):
        super().__init__()
        self.image_size, self.channels = image_size, channels
        ch = _widths(g_width, image_size)
        self.init = nn.Linear(w_dim, 2 * ch[4] * 16, bias=False)  # FastGAN's 1x1 -> 4x4 transposed conv
        self.init_norm = nn.BatchNorm2d(2 * ch[4])  # 2 ch[4] x 4 x 4, GLU -> ch[4] x 4 x 4
        self.blocks = nn.ModuleDict({str(s): UpBlock(ch[s // 2], ch[s], w_dim, style) for s in ch if s > 4})
        # SLE: the 8x8 and 16x16 features gate the two highest resolutions' (image_size / 4 and / 2), from 64 px up
        self.factor = image_size // 32
        self.sle = nn.ModuleDict({str(s * self.factor): SLE(ch[s], ch[s * self.factor], s)
                                  for s in (8, 16) if sle and self.factor > 1})
        self.to_image = UpConv(ch[image_size // 2], channels)  # upsample + 3x3 conv to the image, then tanh
        self.image_bias = nn.Parameter(torch.zeros(channels))
        init_light(self)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = _glu(self.init_norm(self.init(w).unflatten(1, (-1, 4, 4))))  # ch[4] x 4 x 4
        feats = {}
        for side, block in self.blocks.items():
            x = block(x, w)  # ch[s] x s x s
            if side in self.sle:
                x = self.sle[side](feats[int(side) // self.factor], x)
            feats[int(side)] = x
        return torch.tanh(self.to_image(x) + self.image_bias[:, None, None])  # channels x size x size


class LightGenerator(nn.Module):
    """G(z) = synthesis(mapping(z)); see the module's docstring."""

    def __init__(self, image_size: int, channels: int = 3, z_dim: int = 128, g_width: int = 32, map_depth: int = 2,
                 style: bool = True, sle: bool = True):
        super().__init__()
        _stages(image_size)
        self.z_dim = self.w_dim = z_dim
        self.image_size, self.channels = image_size, channels
        self.mapping = Mapping(z_dim, self.w_dim, map_depth)
        self.synthesis = Synthesis(image_size, channels, self.w_dim, g_width, style, sle)
        init_light(self.mapping)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mapping(z))

    def latent_entry(self) -> tuple[torch.Tensor, nn.Module]:
        """(every weight that reads w, stacked: the 4x4 block's projection and each block's style, as SeFa
        factorises a StyleGAN's; the projection, whose output pca reads)."""
        synthesis = self.synthesis
        styles = [block.style.weight for block in synthesis.blocks.values() if block.style is not None]
        return torch.cat([synthesis.init.weight, *styles]), synthesis.init


D_NORMS = {"batch": nn.BatchNorm2d, "layer": lambda c: nn.GroupNorm(1, c), "none": None}


def _norm_act(channels: int, norm) -> list[nn.Module]:
    return ([norm(channels)] if norm else []) + [nn.LeakyReLU(0.2)]


class DownBlock(nn.Module):
    """(cin, s) -> (cout, s/2): (4x4 stride-2 conv, norm, act, 3x3 conv, norm, act + pool, 1x1 conv, norm, act) / 2."""

    def __init__(self, cin: int, cout: int, norm, refine: bool = True):
        super().__init__()
        bias = norm is None
        self.main = nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=bias), *_norm_act(cout, norm))
        if refine:
            self.main.extend([nn.Conv2d(cout, cout, 3, 1, 1, bias=bias), *_norm_act(cout, norm)])
        self.skip = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(cin, cout, 1, bias=bias), *_norm_act(cout, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.skip(x)) / 2


class LightDiscriminator(nn.Module):
    def __init__(self, image_size: int, channels: int = 3, d_width: int = 32, d_norm: str = "batch",
                 d_refine: bool = True):
        super().__init__()
        stages = _stages(image_size)
        if d_norm not in D_NORMS:
            raise ValueError(f"d_norm must be one of {', '.join(D_NORMS)}, not {d_norm!r}")
        norm = D_NORMS[d_norm]
        widths = [min(d_width * 2 ** i, 8 * d_width) for i in range(stages)]  # at size/2, size/4, ..., 4
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2)]  # no norm at input
        layers += [DownBlock(cin, cout, norm, d_refine) for cin, cout in pairwise(widths)]
        self.features = nn.Sequential(*layers)  # widths[-1] x 4 x 4
        self.head = nn.Linear(widths[-1] * 16, 1)  # one logit per image
        init_light(self)
        nn.init.normal_(self.head.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)
