"""Feature extractors, registered by name in EXTRACTORS: `pixels`, `classifier:<data>`, `ssl:<data>`, `inception`.

An extractor maps float images in [-1, 1] (N, C, H, W) to features (N, D); a classifier also
gives class probabilities. `ssl:<data>` is a self-supervised encoder (ssl.py) for data without
labels. `get_extractor(name)` builds one; a missing classifier or self-supervised encoder is
trained on first use (and says so).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ganforge.errors import GanforgeError
from ganforge.io import load_or_train
from ganforge.metrics.classifier import resize_to
from ganforge.metrics.extractor import Extractor
from ganforge.registry import Registry


class Pixels(Extractor):
    """Raw pixels, average-pooled to 8x8: a sanity check that needs no training."""

    name = "pixels"
    sha256 = hashlib.sha256(b"pixels: adaptive_avg_pool2d 8x8").hexdigest()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(images, 8).flatten(1)


class Classifier(Extractor):
    """ganforge's domain classifier: penultimate-layer features and softmax probabilities. For data with
    attributes and no classes (the faces, CelebA), its attribute classifier: features only, of the images
    resized to the classifier's size."""

    def __init__(self, data: str, root: Path | None = None, train_if_missing: bool = True):
        from ganforge.metrics.classifier import (
            classifier_path,
            has_attributes_only,
            load_classifier,
            train_classifier,
        )

        self.name = f"classifier:{data}"
        attributes = not classifier_path(data, root).is_file() and has_attributes_only(data)
        self.net, self.meta = load_or_train(self.name, classifier_path(data, root, attributes),
                                            lambda: load_classifier(data, root, attributes),
                                            lambda: train_classifier(data, root, attributes=attributes),
                                            train_if_missing)
        self.classes, self.sha256 = self.meta.get("classes"), self.meta["sha256"]

    def _checked(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != self.meta["channels"]:
            raise GanforgeError(f"{self.name} takes {self.meta['channels']}-channel images, "
                                f"the samples have {images.shape[1]}")
        return resize_to(images, self.meta["image_size"]) if self.classes is None else images

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.body(self._checked(images))

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor | None:
        return None if self.classes is None else self.net(self._checked(images)).softmax(1)


# --- the registry: a factory per kind of extractor; "classifier" and "ssl" take the data they were trained on
EXTRACTORS = Registry("feature extractor")


@EXTRACTORS.register("pixels", "raw pixels pooled to 8x8: a sanity check that needs no training")
def _pixels(data, root, **_):
    return Pixels()


@EXTRACTORS.register("classifier", "classifier:<data>, ganforge's classifier of labelled data, trained here on "
                     "first use (the default for data with labels)")
def _classifier(data, root, **_):
    return Classifier(data, root)


_classifier.per_data = True  # named classifier:<data>


@EXTRACTORS.register("ssl", "ssl:<data>, a self-supervised extractor trained here on the data's images (the "
                     "default for data without labels)")
def _ssl(data, root, image_size=None, channels=None, **_):
    from ganforge.metrics.ssl import SelfSupervised

    return SelfSupervised(data, root, image_size=image_size, channels=channels)


_ssl.per_data = True  # named ssl:<data>


@EXTRACTORS.register("inception", "Inception-v3 pool3 features as FID's reference code computes them, from "
                     "pytorch-fid's weights file (--inception-weights)")
def _inception(data, root, inception_weights=None, **_):
    from ganforge.metrics.inception import Inception

    return Inception(inception_weights, root)


def get_extractor(name: str, root: Path | None = None, inception_weights: str | Path | None = None,
                  image_size: int | None = None, channels: int | None = None) -> Extractor:
    """An extractor by name: pixels, inception, classifier:<data> or ssl:<data>. `image_size` and `channels`:
    how the data is loaded should ssl:<data> train first (as the images measured have them)."""
    kind, _, data = name.partition(":")
    if kind not in EXTRACTORS or getattr(EXTRACTORS[kind], "per_data", False) != bool(data):
        raise GanforgeError(f"unknown feature extractor {name!r}; choose one of: {EXTRACTORS.help()}")
    return EXTRACTORS[kind](data, root, inception_weights=inception_weights, image_size=image_size,
                            channels=channels)


def extract(extractor: Extractor, images: torch.Tensor, batch: int = 100) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 or float images -> (features (N, D) float64, probabilities (N, K) or None), in batches."""
    feats, probs = [], []
    starts = range(0, len(images), batch)
    for i in tqdm(starts, desc=f"features ({extractor.name})", unit="batch", leave=False, disable=len(starts) < 20):
        chunk = images[i:i + batch]
        chunk = chunk.float().div(127.5).sub(1) if chunk.dtype == torch.uint8 else chunk.float()
        feats.append(extractor.features(chunk).double())
        p = extractor.probs(chunk)
        if p is not None:
            probs.append(p.double())
    return torch.cat(feats), torch.cat(probs) if probs else None
