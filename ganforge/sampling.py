"""Drawing samples from a generator and writing them as a PNG grid or a .npy array."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.utils import save_image

from ganforge.checkpoint import write_atomic
from ganforge.data import to_uint8
from ganforge.errors import GanforgeError


def noise(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """The noise vectors z ~ N(0, I) for a seed: the same seed always gives the same z."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(G: nn.Module, z: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
    """G(z[, labels]) in eval mode, in batches, on the CPU: floats in [-1, 1]."""
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    out = []
    for i in range(0, len(z), batch_size):
        extra = (labels[i:i + batch_size].to(device),) if labels is not None else ()
        out.append(G(z[i:i + batch_size].to(device), *extra).float().cpu())
    G.train(was_training)
    return torch.cat(out)


def default_labels(G: nn.Module, n: int) -> torch.Tensor | None:
    """The labels a conditional G draws n samples with when none are asked for: every class in turn."""
    return torch.arange(n) % G.n_classes if getattr(G, "n_classes", 0) else None


def sample(G: nn.Module, n: int, seed: int = 0, labels: torch.Tensor | int | None = None) -> torch.Tensor:
    """n images from G (floats in [-1, 1], NCHW), from the noise of `seed`; G in eval mode.
    A conditional G draws the given class(es), by default every class in turn."""
    n_classes = getattr(G, "n_classes", 0)
    if labels is not None and not n_classes:
        raise GanforgeError("this generator is not class-conditional; it takes no label")
    labels = default_labels(G, n) if labels is None else torch.as_tensor(labels).expand(n)
    if labels is not None and not ((labels >= 0) & (labels < n_classes)).all():
        raise GanforgeError(f"labels must be in 0..{n_classes - 1}")
    return generate(G, noise(n, G.z_dim, seed), labels)


def class_grid(G: nn.Module, per_class: int, seed: int = 0) -> torch.Tensor:
    """A row of `per_class` images for each class of a conditional G; each column shares its noise."""
    if not getattr(G, "n_classes", 0):
        raise GanforgeError("a grid by class needs a class-conditional generator (--model cgan)")
    z = noise(per_class, G.z_dim, seed).repeat(G.n_classes, 1)
    return generate(G, z, torch.arange(G.n_classes).repeat_interleave(per_class))


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """Float images in [-1, 1] -> one PNG grid (rows of about sqrt(n))."""
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    buf = io.BytesIO()
    save_image(images, buf, format="png", nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    write_atomic(Path(path), buf.getvalue())  # a crash never leaves half a panel


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


def save_gif(images: torch.Tensor, path: Path, frame_ms: int = 120, scale: int = 4) -> None:
    """Float images in [-1, 1] -> an animated GIF that plays them forth and back, each enlarged `scale` times."""
    from PIL import Image

    frames = [Image.fromarray(a.squeeze(-1)).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST)
              for a in to_uint8(images).permute(0, 2, 3, 1).numpy()]
    frames += frames[-2:0:-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
