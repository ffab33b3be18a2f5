"""Drawing images from captions with a trained StackGAN: Stage-I alone, or Stage-I then Stage-II.

`ganforge.load(CKPT)` of a StackGAN checkpoint gives a `TextToImage` (its text encoder travels in the
checkpoint, and a Stage-II checkpoint carries its frozen Stage-I). `pipe(captions, n, seed)` draws n
images per caption from the same n noises, so the columns of a figure differ only by the text.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.models.text import TextEncoder
from ganforge.runfolder import RunFolder
from ganforge.sampling import Latent, Sampler, noise

MAX_CAPTION = 200  # characters a caption may have at drawing time


def check_captions(captions: list[str]) -> list[str]:
    """Captions as drawn: whitespace collapsed; empty or over-long ones are refused, naming them."""
    cleaned = [" ".join(str(c).split()) for c in captions]
    if not cleaned:
        raise GanforgeError("no caption given")
    for i, c in enumerate(cleaned, 1):
        if not c:
            raise GanforgeError(f"caption {i} is empty")
        if len(c) > MAX_CAPTION:
            raise GanforgeError(f"caption {i} has {len(c)} characters; at most {MAX_CAPTION} are allowed")
    return cleaned


class Stages(nn.Module):
    """StackGAN's two generators chained as TextToImage draws them: (noise, text) -> (Stage-II, Stage-I image)."""

    def __init__(self, stage1: nn.Module, stage2: nn.Module):
        super().__init__()
        self.stage1, self.stage2 = stage1, stage2

    def forward(self, noise: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coarse = self.stage1(noise[:, :self.stage1.z_dim], text)
        return self.stage2(coarse, noise[:, self.stage1.z_dim:], text), coarse


class TextToImage(Sampler):
    """A StackGAN ready to draw: its text encoder, Stage-I generator and (for a Stage-II model) Stage-II
    generator; `meta` is the checkpoint's JSON when it was loaded from one. Its condition is a caption per image
    (or their embeddings); its latent is Stage-I's z, the first numbers of the noise."""

    capabilities = frozenset({"captions", "latent"})

    def __init__(self, encoder: TextEncoder, stage1: nn.Module, stage2: nn.Module | None = None,
                 meta: dict | None = None):
        self.encoder, self.stage1, self.stage2, self.meta = encoder, stage1, stage2, meta or {}

    def draw(self, noise: torch.Tensor, condition: list[str] | torch.Tensor | None = None) -> torch.Tensor:
        if condition is None:
            raise GanforgeError("a text-to-image model draws from captions")
        text = self.encoder.encode(condition) if isinstance(condition, list) else condition
        coarse, fine = self.render(text, noise)
        return coarse if fine is None else fine

    def latent(self) -> Latent:
        weight, layer = self.stage1.latent_entry()
        return Latent(weight, layer, weight.shape[1], self.noise_dim)

    def graph(self):
        """For StackGAN, unit-length random vectors stand in for caption embeddings."""
        def inputs(n, seed):
            return noise(n, self.noise_dim, seed), F.normalize(noise(n, self.stage1.text_dim, seed + 1), dim=1)
        if self.stage2 is None:
            return self.stage1, ["noise", "text"], ["image"], inputs
        return Stages(self.stage1, self.stage2).eval(), ["noise", "text"], ["image", "stage1"], inputs

    @property
    def noise_dim(self) -> int:
        return self.stage1.z_dim + (self.stage2.z_dim if self.stage2 is not None else 0)

    @torch.no_grad()
    def __call__(self, captions: list[str], n: int = 8, seed: int = 0, same_noise: bool = True,
                 shift: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (Stage-I images, Stage-II images or None): n per caption, caption after caption, in [-1, 1].
        The n noises of `seed` are the same for every caption, or with same_noise=False all differ; `shift`
        (a vector of noise_dim numbers, e.g. a latent direction times an amount) is added to every noise."""
        text = self.encoder.encode(captions).repeat_interleave(n, dim=0)
        z = noise(n, self.noise_dim, seed).repeat(len(captions), 1) if same_noise else \
            noise(n * len(captions), self.noise_dim, seed)
        return self.render(text, z if shift is None else z + shift)

    @torch.no_grad()
    def render(self, text: torch.Tensor, z: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The images of text embeddings (N, text_dim) with noises (N, noise_dim): (Stage-I, Stage-II or None)."""
        device = next(self.stage1.parameters()).device
        nets = [net for net in (self.stage1, self.stage2) if net is not None]
        modes = [net.training for net in nets]
        for net in nets:
            net.eval()
        coarse, fine = [], []
        for i in range(0, len(z), batch_size):
            zi, ti = z[i:i + batch_size].to(device), text[i:i + batch_size].to(device)
            c = self.stage1(zi[:, :self.stage1.z_dim], ti)
            coarse.append(c.float().cpu())
            if self.stage2 is not None:
                fine.append(self.stage2(c, zi[:, self.stage1.z_dim:], ti).float().cpu())
        for net, mode in zip(nets, modes):
            net.train(mode)
        return torch.cat(coarse), torch.cat(fine) if fine else None

    def warn_unknown(self, captions: list[str]) -> None:
        for c in captions:
            unknown = self.encoder.unknown_words(c)
            if unknown:
                print(f"note: the text encoder has never seen {', '.join(map(repr, unknown))} "
                      f"(in {c!r}); those words are read as unknown", file=sys.stderr)


def panel_captions(pipe: TextToImage, folder: Path) -> list[str]:
    """The captions a text-to-image model's panels are drawn for: its run's samples/captions.txt, or those a model
    folder records; [] when neither has any."""
    try:
        text = (RunFolder(folder).samples / "captions.txt").read_text(encoding="utf-8")
        return [c for c in text.splitlines() if c.strip()]
    except (OSError, UnicodeDecodeError):
        return list(pipe.meta.get("captions") or [])


def t2i_figure(captions: list[str], coarse: torch.Tensor, fine: torch.Tensor | None, path: Path) -> None:
    """One row per caption: its Stage-I images and, beside them, its Stage-II images, as in the StackGAN figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    from ganforge.plots import save_figure

    n = len(coarse) // len(captions)
    size = fine.shape[-1] if fine is not None else coarse.shape[-1]
    stages = [("Stage-I", F.interpolate(coarse, size=size, mode="nearest"), coarse.shape[-1])]
    if fine is not None:
        stages.append(("Stage-II", fine, fine.shape[-1]))
    fig, axes = plt.subplots(len(captions), len(stages), squeeze=False,
                             figsize=(len(stages) * max(n, 2) * 0.9 + 2.4, len(captions) * 1.25 + 0.5))
    for row, caption in enumerate(captions):
        for col, (name, images, native) in enumerate(stages):
            grid = make_grid(images[row * n:(row + 1) * n], nrow=n, padding=2, normalize=True, value_range=(-1, 1))
            ax = axes[row, col]
            ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{name} ({native}x{native})", fontsize=9)
            if col == 0:
                ax.set_ylabel(textwrap.fill(caption, 24), rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)
