"""Augmentation in front of D: DiffAugment (Zhao et al. 2020), fixed or adaptive (ADA, Karras et al. 2020).

Every image D sees, real or forged, in D's step and in G's step, passes through the same kinds of
random transforms, each image drawing its own: D cannot memorise a small data set, and G still gets
gradients through the transforms. A policy is a comma-separated list of `color`, `translation` and
`cutout`; images are in [-1, 1]. Randomness comes from torch's global generator (the device's for draws
made on it), which checkpoints save and restore.

Two pipelines, both called on a batch and told D's scores of each step's real images (`observe`):
- `Augment(policy)`: every augmentation of the policy on every image (DiffAugment); no state.
- `AdaptiveAugment(policy)`: each augmentation on each image with probability p, which starts at 0 and
  follows D: every `interval` observations, r_t = E[sign D(x_real)] over them; p rises while r_t is above
  `target` (D tells the training images apart too well: it is overfitting) and falls below it. p and the
  running sums stay on the device (no host sync in the step) and travel in the checkpoint (`state_dict`).
`make_augment` picks one from the run's options.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ganforge.stats import report

Params = tuple[torch.Tensor | None, ...]  # one augmentation's random draws for a batch


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One random factor per image, shaped to broadcast over (C, H, W)."""
    return torch.rand(len(x), 1, 1, 1).to(x) * (high - low) + low


# Each augmentation is a draw (its random numbers for a batch, from its shape alone) and an apply (no
# randomness); `color(x)` and the others are the two in one. Drawing apart lets AdaptiveAugment draw exactly
# what the fixed policy draws, in the same order, and its per-image choices after them.
def _draw_color(x: torch.Tensor) -> Params:
    brightness = _uniform(x, -0.5, 0.5)
    saturation = _uniform(x, 0.0, 2.0) if x.shape[1] > 1 else None
    return brightness, saturation, _uniform(x, 0.5, 1.5)


def _apply_color(x: torch.Tensor, params: Params) -> torch.Tensor:
    brightness, saturation, contrast = params
    x = x + brightness
    if saturation is not None:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * saturation + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * contrast + mean


def color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2 around the pixel's channel mean) and contrast (x0.5..1.5)."""
    return _apply_color(x, _draw_color(x))


def _pixel_grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, _, h, w = x.shape
    return (torch.arange(n, device=x.device).view(n, 1, 1), torch.arange(h, device=x.device).view(1, h, 1),
            torch.arange(w, device=x.device).view(1, 1, w))


TRANSLATION_RATIO = 0.125  # the largest shift, as a fraction of the side
CUTOUT_RATIO = 0.5  # the side of the square cut out, as a fraction of the side


def _draw_translation(x: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> Params:
    n, _, h, w = x.shape
    sh, sw = round(h * ratio), round(w * ratio)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    return dy, dx


def _apply_translation(x: torch.Tensor, params: Params, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    dy, dx = params
    _, _, h, w = x.shape
    sh, sw = round(h * ratio), round(w * ratio)
    b, rows, cols = _pixel_grid(x)
    padded = F.pad(x, [sw, sw, sh, sh])  # output pixel (r, c) reads padded (r + sh - dy, c + sw - dx)
    return padded[b, :, rows + sh - dy, cols + sw - dx].permute(0, 3, 1, 2)


def translation(x: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels in each direction, filling with zeros."""
    return _apply_translation(x, _draw_translation(x, ratio), ratio)


def _draw_cutout(x: torch.Tensor, ratio: float = CUTOUT_RATIO) -> Params:
    n, _, h, w = x.shape
    ch, cw = round(h * ratio), round(w * ratio)
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - cw // 2
    return top, left


def _apply_cutout(x: torch.Tensor, params: Params, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    top, left = params
    _, _, h, w = x.shape
    ch, cw = round(h * ratio), round(w * ratio)
    _, rows, cols = _pixel_grid(x)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x)


def cutout(x: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero a (ratio * size)-sided square centred at a random pixel of each image (clipped at the edges)."""
    return _apply_cutout(x, _draw_cutout(x, ratio), ratio)


AUGMENTATIONS = {"color": color, "translation": translation, "cutout": cutout}
# name -> (draw, apply), for the pipelines
_PARTS: dict[str, tuple[Callable[[torch.Tensor], Params], Callable[[torch.Tensor, Params], torch.Tensor]]] = {
    "color": (_draw_color, _apply_color),
    "translation": (_draw_translation, _apply_translation),
    "cutout": (_draw_cutout, _apply_cutout),
}


def parse_policy(policy: str) -> list[str]:
    """'color,translation' -> ['color', 'translation']; unknown names raise ValueError."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
    return names


class Augment:
    """A fixed DiffAugment policy: every augmentation of it on every image (the identity for an empty
    policy). The interface of every pipeline: `pipeline(x)` augments a batch; `observe(real_out)` is told
    D's raw scores of each D step's real images (ignored here); `state_dict()` / `load_state_dict(d)` for
    checkpoints (nothing to keep here); `probability`, the chance that an image gets each augmentation."""

    def __init__(self, policy: str = ""):
        self.names = parse_policy(policy)
        self.policy = ",".join(self.names)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = AUGMENTATIONS[name](x)
        return x

    def observe(self, real_out: torch.Tensor) -> None:
        """D's scores of a D step's real images; a fixed policy does not use them."""

    @property
    def probability(self) -> float:
        return 1.0 if self.names else 0.0

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore: a checkpoint of an adaptive run resumed with a fixed policy keeps the fixed one."""

    def to(self, device: torch.device | str) -> Augment:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.policy!r})"


# ADA's defaults. The paper moves p from 0 to 1 in 500k images, a small part of its runs of millions of images
# on GPUs. Here a 10-minute run on 2 CPU cores sees about 40k-100k images: at 500k, p could not climb past
# 0.1-0.2 in a whole run, long after D has memorised a small set. 20k images lets p reach where it needs to
# within the first minutes, while one update (interval * batch = 4 * 64 = 256 images) still moves it by only
# ~0.013, fine enough to settle instead of oscillating.
ADA_POLICY = "color,translation,cutout"  # what adaptive augmentation applies where no policy is given
ADA_TARGET = 0.6  # the r_t = E[sign D(x_real)] at which p holds steady (the paper's value)
ADA_INTERVAL = 4  # D steps between adjustments of p (the paper's N = 4 minibatches)
ADA_SPEED_IMAGES = 20_000  # images it takes p to go from 0 to 1 at the most (see above)


class AdaptiveAugment(Augment):
    """ADA (Karras et al. 2020) over a DiffAugment policy: each augmentation of the policy is applied to
    each image on its own with probability p (an image not chosen for it passes that stage unchanged and
    keeps its gradient), and p follows D's overfitting. `observe(real_out)` (once per D step) adds up
    sign(D(x_real)) on the device; every `interval` observations r_t = E[sign D(x_real)] over them, and p
    moves by sign(r_t - target) * (images observed) / speed_images, clamped to [0, 1].

    p starts at `initial_p` (0: no augmentation until D overfits). p, the running sums and the last r_t are
    tensors on the device of the batches seen (moved there at the first call, or by `.to(device)`); nothing
    in the step waits for the device. Every update reports "aug_p" and "aug_rt" (ganforge.stats). Random
    draws, from torch's generators, in a fixed order: the fixed policy's draws, augmentation by
    augmentation, then one uniform per (augmentation, image) on the batch's device for the choices. So p = 1
    gives exactly the fixed policy's output for the same RNG state, and p = 0 the input itself.

    Under data parallelism, `total` sums a tensor over the processes (distributed.sum_over_ranks): each
    observation adds every process's scores and images, so that the sums and p are the same on all of them
    (and rank 0's checkpoint holds everyone's)."""

    def __init__(self, policy: str = ADA_POLICY, target: float = ADA_TARGET,
                 interval: int = ADA_INTERVAL, speed_images: float = ADA_SPEED_IMAGES, initial_p: float = 0.0,
                 total: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__(policy)
        self.total = total
        if not self.names:
            raise ValueError("adaptive augmentation needs a policy to adapt, e.g. 'color,translation,cutout'")
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 < target < 1.0:
            raise ValueError(f"ADA target must be a number in (0, 1), the E[sign D(x_real)] to hold (the paper "
                             f"uses 0.6); got {target!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"ADA interval must be a whole number of D steps >= 1 (default 4); got {interval!r}")
        if (isinstance(speed_images, bool) or not isinstance(speed_images, (int, float))
                or not 0 < speed_images < float("inf")):
            raise ValueError(f"ADA speed_images must be a positive number of images (those it takes p to go "
                             f"from 0 to 1; default {ADA_SPEED_IMAGES}); got {speed_images!r}")
        if isinstance(initial_p, bool) or not isinstance(initial_p, (int, float)) or not 0.0 <= initial_p <= 1.0:
            raise ValueError(f"ADA initial_p must be a probability in [0, 1]; got {initial_p!r}")
        self.target, self.interval, self.speed_images = float(target), interval, speed_images
        self._p = torch.tensor(float(initial_p))
        self._rt = torch.tensor(float("nan"))  # the last r_t; none yet
        self._reset()

    def _reset(self) -> None:
        device = self._p.device
        self._sign_sum = torch.zeros((), device=device)  # sum of sign(D(x_real)) since the last update
        self._count = torch.zeros((), device=device)  # how many scores that sum holds
        self._images = torch.zeros((), device=device)  # images in them
        self._observed = 0  # observations since the last update

    @property
    def p(self) -> torch.Tensor:
        """The current probability, a 0-dim float32 tensor on the pipeline's device."""
        return self._p

    @property
    def rt(self) -> torch.Tensor:
        """The last r_t = E[sign D(x_real)] that moved p (NaN before the first), a 0-dim tensor."""
        return self._rt

    @property
    def probability(self) -> float:
        return float(self._p)  # a host sync: for display, not for the step

    def to(self, device: torch.device | str) -> AdaptiveAugment:
        device = torch.device(device)
        if self._p.device != device:
            self._p, self._rt = self._p.to(device), self._rt.to(device)
            self._sign_sum, self._count = self._sign_sum.to(device), self._count.to(device)
            self._images = self._images.to(device)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.to(x.device)
        parts = [_PARTS[name] for name in self.names]
        params = [draw(x) for draw, _ in parts]  # the fixed policy's draws, in its order
        chosen = torch.rand(len(parts), len(x), device=x.device) < self._p  # (augmentation, image)
        for (_, apply), drawn, mask in zip(parts, params, chosen):
            x = torch.where(mask.view(-1, 1, 1, 1), apply(x, drawn), x)
        return x

    def observe(self, real_out: torch.Tensor) -> None:
        """D's raw scores (logits or critic values; any shape with the images first) of one D step's real
        images. Adds up their signs on the device; every `interval`-th call moves p."""
        real_out = real_out.detach()
        if real_out.numel() == 0:
            return
        self.to(real_out.device)
        images = real_out.shape[0] if real_out.dim() else 1
        seen = torch.stack([torch.sign(real_out.float()).sum(), torch.tensor(float(real_out.numel())).to(real_out.device),
                            torch.tensor(float(images)).to(real_out.device)])
        sign_sum, count, images = self.total(seen) if self.total is not None else seen  # every process's
        self._sign_sum, self._count, self._images = self._sign_sum + sign_sum, self._count + count, self._images + images
        self._observed += 1
        if self._observed >= self.interval:
            self._update()

    def _update(self) -> None:
        rt = self._sign_sum / self._count
        step = self._images / self.speed_images
        self._p = (self._p + torch.sign(rt - self.target) * step).clamp(0.0, 1.0)
        self._rt = rt
        self._reset()
        report("aug_p", self._p)
        report("aug_rt", rt)

    def state_dict(self) -> dict:
        """p, the last r_t and the running sums since the last update, as CPU tensors: enough to continue
        exactly (with torch's RNG states, which the checkpoint keeps)."""
        def cpu(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to("cpu", copy=True)
        return {"p": cpu(self._p), "rt": cpu(self._rt), "sign_sum": cpu(self._sign_sum), "count": cpu(self._count),
                "observed": torch.tensor(self._observed), "images": cpu(self._images)}

    def load_state_dict(self, state: dict) -> None:
        missing = [k for k in ("p", "rt", "sign_sum", "count", "observed", "images") if k not in state]
        if missing:
            raise ValueError(f"adaptive augmentation state lacks {', '.join(missing)}: not a checkpoint of "
                             f"AdaptiveAugment")
        device = self._p.device

        def scalar(key: str) -> torch.Tensor:
            return torch.as_tensor(state[key], dtype=torch.float32).detach().reshape(()).to(device, copy=True)
        self._p, self._rt = scalar("p"), scalar("rt")
        self._sign_sum, self._count, self._images = scalar("sign_sum"), scalar("count"), scalar("images")
        self._observed = int(state["observed"])

    def __repr__(self) -> str:
        return (f"AdaptiveAugment({self.policy!r}, target={self.target}, interval={self.interval}, "
                f"speed_images={self.speed_images})")


def make_augment(policy: str, adaptive: bool = False, target: float = ADA_TARGET, interval: int = ADA_INTERVAL,
                 speed_images: float = ADA_SPEED_IMAGES, total: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> Augment:
    """The pipeline a run's options ask for: the fixed `policy` (the identity for ""), or with `adaptive`,
    ADA over it (which needs a policy; ValueError otherwise), its sums over the processes by `total`."""
    if adaptive:
        return AdaptiveAugment(policy, target=target, interval=interval, speed_images=speed_images, total=total)
    return Augment(policy)


def augmenter(policy: str) -> Augment:
    """The fixed policy parsed once, as one function of a batch (the identity for an empty policy)."""
    return Augment(policy)


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    return augmenter(policy)(x)
