"""Image sources. Each gives uint8 images (N, C, H, W) plus optional integer labels, boolean attributes or
captions (text describing each image, for text-to-image models).

`load_data(cfg)` picks the source named by `cfg.data`, brings the images to the model's size and
channel count once, and returns an `ImageData`; `to_float` turns a batch into floats in [-1, 1].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ganforge.errors import GanforgeError

if TYPE_CHECKING:
    from ganforge.data.prepared import ShardedImages


@dataclass
class ImageData:
    images: torch.Tensor | ShardedImages  # uint8 (N, C, H, W), in memory or memory-mapped (a prepared set)
    labels: torch.Tensor | None = None  # int64 (N,)
    classes: list[str] | None = None  # class names, indexed by label
    skipped: list[str] = field(default_factory=list)  # files that could not be decoded
    attributes: torch.Tensor | None = None  # bool (N, A): which attributes each image has
    attribute_names: list[str] | None = None  # A names, one per column of attributes
    captions: list[list[str]] | None = None  # per image, one or more captions describing it
    fingerprint: str | None = None  # what the images were made from: a prepared set's manifest SHA-256

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError("labels and images differ in length")
        if self.attributes is not None and len(self.attributes) != len(self.images):
            raise ValueError("attributes and images differ in length")
        if self.captions is not None and len(self.captions) != len(self.images):
            raise ValueError("captions and images differ in length")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: torch.Tensor) -> ImageData:
        """The images at `index` (a bool mask or integer indices), with their labels, attributes and captions."""
        captions = None
        if self.captions is not None:
            positions = torch.as_tensor(index)
            if positions.dtype == torch.bool:
                positions = positions.nonzero().flatten()
            captions = [self.captions[i] for i in positions.flatten().tolist()]
        return ImageData(self.images[index], None if self.labels is None else self.labels[index], self.classes,
                         attributes=None if self.attributes is None else self.attributes[index],
                         attribute_names=self.attribute_names, captions=captions,
                         fingerprint=None if self.fingerprint is None else _subset_fingerprint(self.fingerprint, index))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def content_sha256(self) -> str:
        """What these images (and labels) were made from: a prepared set's manifest SHA-256, else a hash of
        the images in memory. Caches of anything computed from the data are keyed by it."""
        if self.fingerprint is None:
            h = hashlib.sha256(str(tuple(self.images.shape)).encode())
            h.update(self.images.contiguous().numpy().data)
            if self.labels is not None:
                h.update(self.labels.numpy().tobytes())
            self.fingerprint = h.hexdigest()
        return self.fingerprint


def _subset_fingerprint(parent: str, index) -> str:
    return hashlib.sha256(parent.encode() + torch.as_tensor(index).numpy().tobytes()).hexdigest()


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float32 in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return images.detach().add(1.0).mul_(127.5).clamp_(0, 255).round_().to(torch.uint8)


def fit(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Bring uint8 (N, C, H, W) square images to (N, channels, size, size)."""
    if tuple(images.shape[1:]) == (channels, size, size):
        return images.contiguous() if isinstance(images, torch.Tensor) else images
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:  # ITU-R 601 luma, as Pillow's convert("L")
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round_().to(torch.uint8)
    if images.shape[-1] != size:
        out = torch.empty((len(images), channels, size, size), dtype=torch.uint8)
        for i in range(0, len(images), 4096):  # in slices, to keep the float copy small
            chunk = F.interpolate(images[i:i + 4096].float(), size=(size, size), mode="bilinear",
                                  antialias=True, align_corners=False)
            out[i:i + 4096] = chunk.round_().clamp_(0, 255).to(torch.uint8)
        images = out
    return images.contiguous()


def load_data(spec: str, image_size: int | None = None, channels: int | None = None, *,
              data_dir: str | None = None, download: bool = False, folder_labels: bool = False,
              split: str = "train") -> ImageData:
    """Load a source by name: digits, mnist, fashion-mnist, faces, folder:PATH, celeba:PATH, lsun:PATH (an LMDB
    folder) or prepared:DIR (see prepared.py), or a captioned one for text-to-image models: captions:PATH (see
    captions.py), faces-captions or fashion-mnist-captions. folder:, celeba:, lsun: and captions: are prepared
    into ganforge's cache on first use and read by memory map; the built-in sets are small and held in memory.
    """
    if spec == "digits":
        from ganforge.data.digits import load_digits
        data = load_digits()
    elif spec in ("mnist", "fashion-mnist"):
        from ganforge.data.idx import load_idx
        data = load_idx(spec, split=split, data_dir=data_dir, download=download)
    elif spec == "faces":
        from ganforge.data.faces import load_faces
        data = load_faces()
    elif spec == "faces-captions":
        from ganforge.data.captions import load_faces_captions
        data = load_faces_captions(split=split)
    elif spec == "fashion-mnist-captions":
        from ganforge.data.captions import load_fashion_captions
        data = load_fashion_captions(split=split, data_dir=data_dir, download=download)
    elif spec.startswith("folder:"):
        from ganforge.data.folder import load_folder
        return load_folder(spec.removeprefix("folder:"), size=image_size or 64, channels=channels or 3,
                           labels=folder_labels)
    elif spec.startswith("celeba:"):
        from ganforge.data.celeba import load_celeba
        return load_celeba(spec.removeprefix("celeba:"), size=image_size or 64, channels=channels or 3)
    elif spec.startswith("prepared:"):
        from ganforge.data.prepared import load_prepared
        return load_prepared(spec.removeprefix("prepared:"), image_size, channels)
    elif spec.startswith("lsun:"):
        from ganforge.data.lsun import load_lsun
        return load_lsun(spec.removeprefix("lsun:"), size=image_size or 64, channels=channels or 3)
    elif spec.startswith("captions:"):
        from ganforge.data.captions import load_captions
        return load_captions(spec.removeprefix("captions:"), size=image_size or 64, channels=channels or 3,
                             split=split)
    else:
        raise GanforgeError(f"unknown data {spec!r}; choose digits, mnist, fashion-mnist, faces, folder:PATH, "
                            f"celeba:PATH, lsun:PATH, prepared:DIR, or with captions: captions:PATH, faces-captions "
                            f"or fashion-mnist-captions")
    size = image_size or data.images.shape[-1]
    data.images = fit(data.images, size, channels or data.images.shape[1])
    return data
