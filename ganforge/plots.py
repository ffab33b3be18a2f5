"""Figures of a run: the contest over training (curves.png) and the forgeries sharpening (progress.png)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image

from ganforge.io import write_atomic
from ganforge.stats import RunStats


def save_figure(fig, out, dpi: int = 100) -> None:
    """Render a figure to PNG, then close it: into a file object, or to a path atomically (a crash never
    leaves half a file)."""
    buf = out if hasattr(out, "write") else io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    if buf is not out:
        write_atomic(Path(out), buf.getvalue())


def plot_curves(stats: RunStats, out, title: str = "", probabilities: bool = True,
                ada_target: float | None = None) -> None:
    """D and G losses (top) and D(x), D(G(z)) (bottom) against training steps, then adaptive augmentation's
    signal and probability where the run logged them, and FID where measured; D's outputs are probabilities
    for losses whose D gives logits, raw scores for the others."""
    measured, stats = stats.evals, stats.train
    if not stats:
        return
    adaptive = any("aug_rt" in s for s in stats)
    steps = [s["step"] for s in stats]
    rows = 2 + adaptive + bool(measured)
    fig, axes = plt.subplots(rows, 1, figsize=(8, 3 + 2.75 * (rows - 1)), sharex=True)
    top, bottom = axes[0], axes[1]
    top.plot(steps, [s.get("d_loss", math.nan) for s in stats], label="D loss")
    top.plot(steps, [s.get("g_loss", math.nan) for s in stats], label="G loss")  # none in a line without G steps
    top.set_ylabel("loss")
    top.legend()
    top.set_title(title or "the contest")
    bottom.plot(steps, [s.get("d_real", math.nan) for s in stats], label="D(x), real images")
    bottom.plot(steps, [s.get("d_fake", math.nan) for s in stats], label="D(G(z)), forgeries")
    if probabilities:
        bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("D's output" if probabilities else "D's raw score")
    bottom.legend()
    if adaptive:
        plot_adaptive(axes[2], {"": stats}, ada_target)
    if measured:
        axes[-1].plot([s["step"] for s in measured], [s["fid"] for s in measured], "o-", label="FID")
        axes[-1].set_ylabel(f"FID ({measured[-1]['extractor']}, n={measured[-1]['n_fake']})")
        axes[-1].legend()
    axes[-1].set_xlabel("step")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out, dpi=100)


def plot_adaptive(ax, runs: dict[str, list[dict]], target: float | None) -> None:
    """Adaptive augmentation in each run's train lines: D's overfitting signal r_t = E[sign D(x_real)]
    (solid), the augmentation probability p (dashed, same colour) and the target r_t (grey)."""
    for i, (name, lines) in enumerate(runs.items()):
        lines = [s for s in lines if "aug_rt" in s]
        steps, colour = [s["step"] for s in lines], f"C{i}"
        label = f"{name}: " if name else ""
        ax.plot(steps, [s["aug_rt"] for s in lines], color=colour, label=f"{label}r_t = E[sign D(x)]")
        ax.plot(steps, [s["aug_p"] for s in lines], "--", color=colour, label=f"{label}p, augmentation")
    if target is not None:
        ax.axhline(target, color="grey", lw=1, label=f"target r_t {target:g}")
    ax.set_ylim(-1.02, 1.02)
    ax.set_ylabel("adaptive augmentation")
    ax.legend(fontsize="small")


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
    save_figure(fig, out, dpi=100)


def plot_compare(runs: dict[str, list[dict]], out: Path) -> None:
    """FID against images seen and against training seconds, one line per run."""
    fig, (by_images, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, measured in runs.items():
        fid = [s["fid"] for s in measured]
        by_images.plot([s["images_seen"] for s in measured], fid, "o-", label=name)
        by_time.plot([s["seconds"] for s in measured], fid, "o-", label=name)
    extractor = next(iter(runs.values()))[-1]["extractor"]
    by_images.set_ylabel(f"FID ({extractor})")
    by_images.set_xlabel("images seen")
    by_time.set_xlabel("training seconds")
    by_images.legend(fontsize="small")
    for ax in (by_images, by_time):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out, dpi=100)


def plot_side_by_side(panels: dict[str, object], out: Path, nrow: int = 6) -> None:
    """Image grids (float, in [-1, 1]) side by side, each under its title."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels.items()):
        _show(ax, images, nrow, title, width=48)
    fig.tight_layout()
    save_figure(fig, out, dpi=120)


def _show(ax, images, nrow: int, title: str = "", width: int = 24) -> None:
    import textwrap

    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1), pad_value=1)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(textwrap.fill(title, width), fontsize=8)
    ax.axis("off")


def plot_arithmetic(columns: list[tuple[str, object, object]], results, out: Path, title: str = "") -> None:
    """The DCGAN paper's layout: for each term of the expression a column of its exemplars above
    the image of their average z, then "=" and the grid of results (result z plus small noise).
    columns: (label, exemplar images (k, C, H, W), average image (1, C, H, W)); results: (9, C, H, W)."""
    fig = plt.figure(figsize=(2.0 * len(columns) + 4.5, 6.5))
    grid = fig.add_gridspec(2, len(columns) + 1, height_ratios=[3, 1], width_ratios=[1] * len(columns) + [2.6])
    for i, (label, exemplars, average) in enumerate(columns):
        _show(fig.add_subplot(grid[0, i]), exemplars, nrow=1, title=label)
        _show(fig.add_subplot(grid[1, i]), average, nrow=1, title="average z")
    _show(fig.add_subplot(grid[:, -1]), results, nrow=3, title="= result (and with small noise)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)


def plot_directions(images, strength, method: str, amounts, out: Path, title: str = "") -> None:
    """One row per latent direction: the same few samples, each moved along it by `amounts` (a strip per sample).
    images: (k, samples, steps, C, H, W) in [-1, 1]; strength: (k,) each direction's share."""
    k, n, steps = images.shape[:3]
    share = "eigenvalues" if method == "sefa" else "variance"
    fig, axes = plt.subplots(k, n, squeeze=False, figsize=(n * steps * 0.62 + 1.4, k * 0.72 + 0.9))
    for d in range(k):
        for s in range(n):
            _show(axes[d, s], images[d, s], nrow=steps)
        axes[d, 0].axis("on")
        axes[d, 0].set_xticks([])
        axes[d, 0].set_yticks([])
        for side in axes[d, 0].spines.values():
            side.set_visible(False)
        axes[d, 0].set_ylabel(f"{d}  ({100 * float(strength[d]):.1f}%)", rotation=0, ha="right", va="center",
                              fontsize=8)
    for s in range(n):
        axes[0, s].set_title(f"sample {s}: {float(amounts[0]):+g} to {float(amounts[-1]):+g}", fontsize=8)
    fig.suptitle(title or f"{method} directions (share of the {share})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
