"""A self-supervised feature extractor, `ssl:<data>`, for data without labels.

FID and its kin need features that see what matters in the images. The domain classifier
(classifier.py) learns them from labels; for data without labels (a folder of images, faces)
this module learns them from the images alone, with SimCLR (Chen et al. 2020): two random
augmentations of each image (random resized crop, horizontal flip, brightness and contrast
jitter, for colour images saturation and hue jitter and random grayscale, and mild pixel noise)
are pulled together and pushed away from the other images of the batch by the NT-Xent loss on
a small projection head. The features are the encoder's 128-d representation before that head.
The augmentations run on whole batches at once (one affine grid per image), cheap on a CPU.

The encoder reads every image at a fixed working size (32 px; larger and smaller images are
resized inside), so its cost does not grow with the image size. Training is seeded: the same
data and settings give the same weights. It is stored as safetensors + JSON (data, steps,
final loss, SHA-256) in `<cache>/extractors/`. Nothing is downloaded: it is trained here.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ganforge.data import load_data, to_float
from ganforge.errors import GanforgeError
from ganforge.io import (
    DamagedRecord,
    cache_dir,
    load_module_state,
    load_or_train,
    read_json,
    read_tensors,
    save_record,
)
from ganforge.metrics.extractor import Extractor

WORK_SIZE = 32  # every image is read at this size: Fashion-MNIST's 28 px barely grows, 64 and 128 px shrink
FEATURES = 128  # the representation used as features
PROJECTION = 64  # the projection head's output, where the loss is computed
TEMPERATURE = 0.3
BATCH = 256  # images per step (two views each)
LR = 2e-3
EPOCHS = 10  # default steps: this many passes over the data, kept within [MIN_STEPS, MAX_STEPS]
MIN_STEPS = 100  # a folder of 50-200 images: about 10-30 s on 2 cores
MAX_STEPS = 500  # 60,000 images: about 2.5 minutes on 2 cores
CROP_AREA = (0.4, 1.0)  # random resized crop: share of the image's area
CROP_RATIO = (3 / 4, 4 / 3)  # and aspect ratio
NOISE = 0.15  # Gaussian pixel noise of std up to this on half the views: features that look past a GAN's
# high-frequency artefacts to the shapes (without it, noisy early samples rank below blurrier, earlier ones)


class SSLEncoder(nn.Module):
    """A small CNN (the domain classifier's size): 1- or 3-channel images of any size -> (N, 128)."""

    def __init__(self, channels: int = 1, size: int = WORK_SIZE):
        super().__init__()
        self.channels, self.size = channels, size
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(True), nn.MaxPool2d(2),  # 16 x 16 x 16
            nn.Conv2d(16, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU(True), nn.MaxPool2d(2),  # 64 x 8 x 8
            nn.Conv2d(64, 128, 3, 1, 1), nn.BatchNorm2d(128), nn.ReLU(True), nn.MaxPool2d(2),  # 128 x 4 x 4
            nn.Conv2d(128, FEATURES, 3, 1, 1), nn.BatchNorm2d(FEATURES), nn.ReLU(True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # the features
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [-1, 1] (N, C, H, W) -> features (N, 128)."""
        return self.body(to_work_size(x, self.size).contiguous(memory_format=torch.channels_last))


def projection_head() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, FEATURES), nn.BatchNorm1d(FEATURES), nn.ReLU(True),
                         nn.Linear(FEATURES, PROJECTION))


def to_work_size(images: torch.Tensor, size: int = WORK_SIZE) -> torch.Tensor:
    """Float images brought to the working size (antialiased when shrinking), unchanged when they fit."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


# ---- augmentations: whole batches at once, each image its own random parameters ----

def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator).mul_(high - low).add_(low)


def random_resized_crop(images: torch.Tensor, generator: torch.Generator | None = None,
                        area: tuple[float, float] | None = None, ratio: tuple[float, float] | None = None,
                        flip: bool = True) -> torch.Tensor:
    """A random crop of each image (share `area` of it, aspect `ratio`) resized back to the image's
    size, mirrored left-right with probability 1/2: one affine grid per image, one grid_sample."""
    n = len(images)
    area, ratio = area or CROP_AREA, ratio or CROP_RATIO
    scale = _uniform(n, *area, generator)
    aspect = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator).exp_()
    w = (scale * aspect).sqrt_().clamp_(max=1.0)  # crop width and height as shares of the image's
    h = (scale / aspect).sqrt_().clamp_(max=1.0)
    cx = _uniform(n, -1, 1, generator) * (1 - w)  # crop centre, in grid coordinates [-1, 1]
    cy = _uniform(n, -1, 1, generator) * (1 - h)
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * mirror, cx, h, cy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


_LUMA = torch.tensor([0.299, 0.587, 0.114])
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def color_jitter(images: torch.Tensor, generator: torch.Generator | None = None, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1, p: float = 0.8,
                 grayscale: float = 0.2) -> torch.Tensor:
    """SimCLR's colour distortion on float images in [-1, 1], each image with probability p:
    brightness (x factor), contrast (towards the image's mean gray), and for 3 channels saturation
    (towards gray) and hue (a rotation of the YIQ chroma plane); then for 3 channels a random
    grayscale with probability `grayscale`. Stays in [-1, 1]."""
    n, c = images.shape[:2]
    x = images.add(1).mul_(0.5)  # [0, 1]
    on = (torch.rand(n, generator=generator) < p).float()

    def factor(amount: float) -> torch.Tensor:  # 1 where the jitter is off
        return (1 + on * _uniform(n, -amount, amount, generator)).view(n, 1, 1, 1)

    x = x * factor(brightness)
    gray = (x * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True) if c == 3 else x
    x = (x - gray.mean((1, 2, 3), keepdim=True)) * factor(contrast) + gray.mean((1, 2, 3), keepdim=True)
    if c == 3:
        gray = (x * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - gray) * factor(saturation) + gray
        angle = on * _uniform(n, -hue, hue, generator) * 2 * math.pi
        cos, sin = angle.cos(), angle.sin()
        rotation = torch.zeros(n, 3, 3)  # in YIQ: luma kept, the (I, Q) chroma plane rotated
        rotation[:, 0, 0] = 1
        rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
        matrix = torch.linalg.inv(_RGB_TO_YIQ) @ rotation @ _RGB_TO_YIQ  # (n, 3, 3), RGB -> RGB
        x = torch.einsum("nij,njhw->nihw", matrix, x)
        to_gray = (torch.rand(n, generator=generator) < grayscale).view(n, 1, 1, 1)
        x = torch.where(to_gray, (x * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(x), x)
    return x.clamp_(0, 1).mul_(2).sub_(1)


def add_noise(images: torch.Tensor, generator: torch.Generator | None = None, sigma: float = NOISE,
              p: float = 0.5) -> torch.Tensor:
    """Gaussian pixel noise of a random strength in [0, sigma] on each image with probability p; stays in [-1, 1]."""
    n = len(images)
    strength = (torch.rand(n, generator=generator) < p).float() * _uniform(n, 0, sigma, generator)
    noise = torch.randn(images.shape, generator=generator)
    return images.add(noise.mul_(strength.view(n, 1, 1, 1))).clamp_(-1, 1)


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random view of each float image in [-1, 1] (N, C, S, S): crop and flip, colour, noise."""
    return add_noise(color_jitter(random_resized_crop(images, generator), generator), generator)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's NT-Xent loss: z1[i] and z2[i] are the two views of image i; each view must pick its
    partner among the 2N - 1 others by cosine similarity / temperature (cross-entropy, mean)."""
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, partner)


# ---- training and the cache ----

def ssl_path(spec: str, root: Path | None = None) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)
    return (root or cache_dir()) / "extractors" / f"ssl-{name}.safetensors"


def default_steps(n_images: int) -> int:
    """EPOCHS passes over the data, at least MIN_STEPS and at most MAX_STEPS steps."""
    return min(MAX_STEPS, max(MIN_STEPS, EPOCHS * (n_images // min(BATCH, n_images))))


def train_ssl(spec: str, root: Path | None = None, steps: int | None = None, data_dir: str | None = None,
              progress: bool = True, limit: int | None = None, image_size: int | None = None,
              channels: int | None = None) -> Path:
    """Train the self-supervised extractor of a data source on its images (no labels), save it in
    the cache, return the weights' path.

    steps: default `default_steps(images)`: 500 for Fashion-MNIST's 60,000 images, 100 for a small folder.
    limit: train on only the first `limit` images (for quick tests).
    image_size, channels: load the data so (default: the source's own; a folder: 64 px RGB), e.g. as the run
    being measured has it, so that a folder is not prepared a second time at another size.
    """
    data = load_data(spec, image_size, channels, data_dir=data_dir)
    images = data.images  # indexed only by slices and integer tensors: it may be memory-mapped
    n = min(limit, len(images)) if limit else len(images)
    if n < 2:
        raise GanforgeError(f"{spec}: a self-supervised extractor needs at least 2 images, got {n}")
    channels, image_size = images.shape[1], images.shape[-1]
    batch = min(BATCH, n)
    steps = steps or default_steps(n)
    with torch.random.fork_rng(devices=[]):  # seeded here, without disturbing the caller's random state
        torch.manual_seed(0)
        encoder = SSLEncoder(channels).to(memory_format=torch.channels_last)
        head = projection_head()
    gen = torch.Generator().manual_seed(0)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps, pct_start=0.1)
    encoder.train()
    head.train()
    order, at = torch.randperm(n, generator=gen), 0
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=f"ssl:{spec}", unit="step", disable=not progress)
    losses = []
    for step in range(steps):
        if at + batch > n:  # a new epoch (the last partial batch is dropped)
            order, at = torch.randperm(n, generator=gen), 0
        idx = order[at:at + batch].sort().values  # sorted: reads from a memory map stay local
        at += batch
        x = to_work_size(to_float(images[idx]))
        views = torch.cat([augment(x, gen), augment(x, gen)])
        z = head(encoder(views))
        loss = nt_xent(z[:batch], z[batch:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
        bar.update()
        if step % 10 == 9 or step == steps - 1:
            bar.set_postfix(loss=f"{torch.stack(losses[-10:]).mean():.4f}")
    bar.close()
    final_loss = torch.stack(losses[-min(20, steps):]).mean().item()
    if not math.isfinite(final_loss):
        raise GanforgeError(f"ssl:{spec}: the training loss is {final_loss}; the extractor was not saved")
    path = ssl_path(spec, root)
    save_record(path, encoder.state_dict(), {
        "data": spec, "method": "SimCLR (NT-Xent)", "steps": steps, "batch_size": batch, "images": n,
        "channels": channels, "image_size": image_size, "work_size": WORK_SIZE, "features": FEATURES,
        "temperature": TEMPERATURE, "final_loss": round(final_loss, 5), "seconds": round(time.perf_counter() - start, 1)})
    return path


def load_ssl(spec: str, root: Path | None = None) -> tuple[SSLEncoder, dict]:
    """The cached self-supervised extractor of a data source -> (encoder in eval mode, its JSON)."""
    path = ssl_path(spec, root)
    if not (path.is_file() and path.with_suffix(".json").is_file()):
        raise GanforgeError(f"no self-supervised extractor for {spec} in {path.parent}; it is trained on first use "
                            f"of --extractor ssl:{spec}, or train it with ganforge.metrics.ssl.train_ssl({spec!r})")
    what_to_do, json_path = "delete it to train the extractor again", path.with_suffix(".json")
    meta = read_json(json_path, "record", what_to_do)
    if (not isinstance(meta.get("sha256"), str) or meta.get("channels") not in (1, 3)
            or not isinstance(meta.get("work_size"), int) or isinstance(meta["work_size"], bool)
            or not 8 <= meta["work_size"] <= 512):
        raise DamagedRecord(f"{json_path}: damaged, not the JSON of a ganforge self-supervised extractor; {what_to_do}")
    state = read_tensors(path, meta["sha256"], json_path.name, what_to_do)
    encoder = SSLEncoder(meta["channels"], meta["work_size"])
    load_module_state(encoder, state, f"{path} (ssl:{spec})")
    return encoder.eval(), meta


class SelfSupervised(Extractor):
    """The self-supervised encoder of a data source: its 128-d representation as features.

    Trained on first use (said on stderr); when the cached files are damaged it says so and trains
    it again. `steps` and `limit` go to `train_ssl` when it trains. `sha256` identifies the weights
    (key caches of features by it)."""

    classes = None

    def __init__(self, data: str, root: Path | None = None, train_if_missing: bool = True,
                 steps: int | None = None, limit: int | None = None, image_size: int | None = None,
                 channels: int | None = None):
        self.name = f"ssl:{data}"
        self.net, self.meta = load_or_train(
            self.name, ssl_path(data, root), lambda: load_ssl(data, root),
            lambda: train_ssl(data, root, steps=steps, limit=limit, image_size=image_size, channels=channels),
            train_if_missing)
        self.sha256 = self.meta["sha256"]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        if images.shape[1] != self.meta["channels"]:  # gray to RGB, or RGB to its luma: real and fake alike
            images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else (
                images * _LUMA.view(1, 3, 1, 1)).sum(1, keepdim=True)
        return self.net(images)
