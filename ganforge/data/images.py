"""The in-memory form of every data source: ImageData, and the conversions between uint8 and float images."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class ImageData:
    images: torch.Tensor  # uint8 (N, C, H, W) in memory, or a prepared set's memory-mapped ShardedImages
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
