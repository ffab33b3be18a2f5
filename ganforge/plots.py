"""Figures of a run: the contest over training (curves.png) and the forgeries sharpening (progress.png)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image


def read_stats(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(stats: list[dict], out: Path, title: str = "") -> None:
    """D and G losses (top) and D(x), D(G(z)) (bottom) against training steps."""
    if not stats:
        return
    steps = [s["step"] for s in stats]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(steps, [s["d_loss"] for s in stats], label="D loss")
    top.plot(steps, [s["g_loss"] for s in stats], label="G loss")
    top.set_ylabel("loss")
    top.legend()
    top.set_title(title or "the contest")
    bottom.plot(steps, [s["d_real"] for s in stats], label="D(x), real images")
    bottom.plot(steps, [s["d_fake"] for s in stats], label="D(G(z)), forgeries")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("D's output")
    bottom.set_xlabel("step")
    bottom.legend()
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_progress(panels: list[Path], out: Path, most: int = 8) -> None:
    """Up to `most` panels, evenly spaced from the first to the last, side by side with their epoch."""
    if not panels:
        return
    if len(panels) > most:
        picks = sorted({round(i * (len(panels) - 1) / (most - 1)) for i in range(most)})
        panels = [panels[i] for i in picks]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, path in zip(axes[0], panels):
        with Image.open(path) as img:
            ax.imshow(img.convert("RGB"))
        ax.set_title(f"epoch {int(path.stem.split('_')[-1])}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
