"""Drawing from a generator: the one seeding function, a sampler object, and writing images out.

`noise(n, z_dim, seed)` is how every part of ganforge turns a seed into z vectors: row i of a seed
is the same whatever n (the rows are drawn in blocks of 16, each from its own generator, because
torch's CPU `randn` fills the last numbers of a draw differently when its count is not a multiple
of 16). So sample 5 of seed 42 is the same face in `ganforge sample --n 8`, `--n 64`, the studio and
a `--concept A=42`.
`Generator` wraps a trained G with what it needs to draw: `sample(n, seed, label)`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.utils import save_image

from ganforge.data import to_uint8
from ganforge.errors import GanforgeError
from ganforge.io import write_atomic

BLOCK = 16  # rows of noise drawn together from one generator
_MASK = 2**64 - 1


def _block_seed(seed: int, block: int) -> int:
    """A 64-bit seed for block `block` of `seed` (SplitMix64 of the two): distinct blocks, distinct streams."""
    x = (seed + block * 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def noise(n: int, z_dim: int, seed: int, start: int = 0, truncation: float | None = None) -> torch.Tensor:
    """Rows start .. start + n - 1 of the noise of `seed`: z ~ N(0, I), (n, z_dim). Row i is the same
    whatever n and start. With `truncation`, clamped elementwise to [-truncation, truncation] (the
    truncation trick, by clamping rather than resampling)."""
    if n <= 0:
        return torch.empty(0, z_dim)
    first, last = start // BLOCK, (start + n - 1) // BLOCK
    blocks = [torch.randn(BLOCK, z_dim, generator=torch.Generator().manual_seed(_block_seed(seed, b)))
              for b in range(first, last + 1)]
    z = torch.cat(blocks)[start - first * BLOCK:][:n]
    return z.clamp(-truncation, truncation) if truncation else z


@torch.no_grad()
def generate(G: nn.Module, *inputs: torch.Tensor | None, batch_size: int = 256) -> torch.Tensor:
    """G(*inputs) in eval mode, in batches, on G's device: floats in [-1, 1] on the CPU. Inputs that are
    None are left out (G(z) for an unconditional G, G(z, labels) for a conditional one)."""
    inputs = [x for x in inputs if x is not None]
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    out = []
    for i in range(0, len(inputs[0]), batch_size):
        out.append(G(*(x[i:i + batch_size].to(device) for x in inputs)).float().cpu())
    G.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@dataclass
class Latent:
    """Where a sampler's latent enters its generator, for directions and latent arithmetic: `weight` (A, the layer
    acting on the latent's first `dims` numbers, what SeFa factorises), `layer` (the module whose output is the
    early activation pca reads), `length` (the latent's whole length) and `space`: "z", the noise itself, or "w",
    a mapping network's output."""

    weight: torch.Tensor
    layer: nn.Module
    dims: int
    length: int
    space: str = "z"


class Sampler:
    """What every sampler is, whichever family made it: the protocol export, directions, the latent verbs and
    the studio use, asking `takes(capability)` instead of a type.

    noise_dim: the length of the noise of one image. capabilities: "labels" (a class label per image), "captions"
    (a caption per image), "latent" (directions and arithmetic: `latent()` says where). `draw(noise, condition)`:
    images in [-1, 1] of noise (n, noise_dim) and the condition (labels, captions or their embeddings; None).
    `to_latent(noise)` and `draw_latent(latent, condition)`: the same drawing through the latent space, which is the
    noise itself unless the generator has a mapping network (space "w"), `latent_space` its name and
    `latent_net()` the module that draws from it (differentiable, for inversion). `graph()`: what ONNX export traces."""

    capabilities: frozenset[str] = frozenset()
    meta: dict
    latent_space: str = "z"

    @property
    def noise_dim(self) -> int:
        raise NotImplementedError

    def takes(self, capability: str) -> bool:
        return capability in self.capabilities

    def draw(self, noise: torch.Tensor, condition=None) -> torch.Tensor:
        raise NotImplementedError

    def latent(self) -> Latent:
        raise GanforgeError(f"latent directions do not know where the latent enters a {self.model_name}")

    def to_latent(self, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def draw_latent(self, latent: torch.Tensor, condition=None) -> torch.Tensor:
        return self.draw(latent, condition)

    def latent_net(self) -> nn.Module:
        raise GanforgeError(f"a {self.model_name} has no latent space to draw from")

    def graph(self) -> tuple[nn.Module, list[str], list[str], Callable]:
        """(the module exported, its input names, its output names, inputs(n, seed): a batch of n inputs of a seed)."""
        raise NotImplementedError

    @property
    def model_name(self) -> str:
        return self.meta.get("model_spec", {}).get("model", type(self).__name__)


class Generator(Sampler):
    """A generator ready to draw images: `sample(n, seed)`, and for a class-conditional one `label=`.

    net: G (or its EMA), left in whatever mode and device it is in (drawing switches it to eval mode and
    back). classes: the class names of a class-conditional G, else None. meta: the checkpoint's JSON when
    it was loaded from one (its config, step, and "generator": which of G and G_ema draws)."""

    def __init__(self, net: nn.Module, classes: list[str] | None = None, meta: dict | None = None):
        self.net, self.classes, self.meta = net, classes, meta or {}
        self.z_dim, self.image_size, self.channels = net.z_dim, net.image_size, net.channels
        self.capabilities = frozenset(name for name, has in (("labels", self.conditional),
                                                             ("latent", hasattr(net, "latent_entry"))) if has)
        self.latent_space = "w" if hasattr(net, "mapping") else "z"

    @property
    def noise_dim(self) -> int:
        return self.z_dim

    def draw(self, noise: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self(noise, condition)

    def latent(self) -> Latent:
        if not self.takes("latent"):
            return super().latent()
        weight, layer = self.net.latent_entry()
        w = self.latent_space == "w"
        return Latent(weight, layer, weight.shape[1], self.net.w_dim if w else self.z_dim, self.latent_space)

    @torch.no_grad()
    def to_latent(self, noise: torch.Tensor) -> torch.Tensor:
        return generate(self.net.mapping, noise) if self.latent_space == "w" else noise

    def draw_latent(self, latent: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return generate(self.latent_net(), latent, condition)

    def latent_net(self) -> nn.Module:
        return self.net.synthesis if self.latent_space == "w" else self.net

    def graph(self):
        if self.conditional:
            return self.net, ["z", "label"], ["image"], lambda n, seed: (noise(n, self.z_dim, seed), self.labels(n))
        return self.net, ["z"], ["image"], lambda n, seed: (noise(n, self.z_dim, seed),)

    @property
    def conditional(self) -> bool:
        return self.classes is not None

    def label_index(self, label: int | str) -> int:
        """A class given by index or by name -> its index."""
        if not self.conditional:
            raise GanforgeError("this generator is not class-conditional; it takes no label")
        if isinstance(label, str) and label in self.classes:
            return self.classes.index(label)
        if isinstance(label, str) and label.isdigit():
            label = int(label)
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(self.classes):
            return label
        raise GanforgeError(f"unknown class {label!r}; this model's classes: "
                            + ", ".join(f"{i}={name}" for i, name in enumerate(self.classes)))

    def labels(self, n: int, label: int | str | torch.Tensor | None = None) -> torch.Tensor | None:
        """The labels of n samples: `label` for all of them (an index, a name, or one per sample); by
        default every class in turn. None for an unconditional G (which refuses a label)."""
        if not self.conditional:
            if label is not None:
                self.label_index(label)  # raises: it takes no label
            return None
        if label is None:
            return torch.arange(n) % len(self.classes)
        if isinstance(label, torch.Tensor) and label.dim() == 1:
            if not ((label >= 0) & (label < len(self.classes))).all():
                raise GanforgeError(f"labels must be in 0..{len(self.classes) - 1}")
            return label.long()
        return torch.full((n,), self.label_index(label.item() if isinstance(label, torch.Tensor) else label))

    def __call__(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(z[, labels]): float images in [-1, 1], NCHW, on the CPU."""
        return generate(self.net, z, labels)

    def sample(self, n: int = 16, seed: int = 0, label: int | str | torch.Tensor | None = None,
               truncation: float | None = None, output: str = "float", shift: torch.Tensor | None = None) -> torch.Tensor:
        """n images from the noise of `seed` (sample i is the same whatever n): float in [-1, 1] NCHW, or with
        output="uint8" bytes in [0, 255]. A class-conditional G draws `label` (index or name), by default
        every class in turn. `shift` (a latent direction times an amount) is added to every latent (z, or w for a
        generator with a mapping network)."""
        if output not in ("float", "uint8"):
            raise GanforgeError(f"output={output!r}: choose float or uint8")
        z, labels = noise(n, self.z_dim, seed, truncation=truncation), self.labels(n, label)
        images = self(z, labels) if shift is None else self.draw_latent(self.to_latent(z) + shift, labels)
        return to_uint8(images) if output == "uint8" else images

    def class_grid(self, per_class: int, seed: int = 0) -> torch.Tensor:
        """A row of `per_class` images for each class; each column shares its noise."""
        if not self.conditional:
            raise GanforgeError("a grid by class needs a class-conditional generator (--model cgan)")
        z = noise(per_class, self.z_dim, seed).repeat(len(self.classes), 1)
        return self(z, torch.arange(len(self.classes)).repeat_interleave(per_class))


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """Float images in [-1, 1] -> one PNG grid (rows of about sqrt(n))."""
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    buf = io.BytesIO()
    save_image(images, buf, format="png", nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    write_atomic(Path(path), buf.getvalue())  # a crash never leaves half a panel


def write_samples(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """.png: a grid; .npy: uint8 (N, H, W) for one channel, (N, H, W, 3) for three."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise GanforgeError(f"{path}: the output must end in .png (a grid) or .npy (an array)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        save_grid(images, path, nrow)
    else:
        array = to_uint8(images).permute(0, 2, 3, 1).numpy()
        np.save(path, array[..., 0] if array.shape[-1] == 1 else array)
    return path


def save_gif(images: torch.Tensor, path: Path, frame_ms: int = 120, scale: int = 4) -> None:
    """Float images in [-1, 1] -> an animated GIF that plays them forth and back, each enlarged `scale` times."""
    from PIL import Image

    frames = [Image.fromarray(a.squeeze(-1)).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST)
              for a in to_uint8(images).permute(0, 2, 3, 1).numpy()]
    frames += frames[-2:0:-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
