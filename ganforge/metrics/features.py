"""Feature extractors, by name: `pixels`, `classifier:<data>`, `ssl:<data>` and `inception`.

An extractor maps float images in [-1, 1] (N, C, H, W) to features (N, D); a classifier also
gives class probabilities. `ssl:<data>` is a self-supervised encoder (ssl.py) for data without
labels. `get_extractor(name)` builds one; a missing classifier or self-supervised encoder is
trained on first use (and says so).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ganforge.errors import GanforgeError


class Extractor:
    name: str
    classes: list[str] | None = None  # class names when it predicts classes
    sha256: str  # of its weights (of its definition for one without weights): caches of its features are keyed by it

    def features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probs(self, images: torch.Tensor) -> torch.Tensor | None:
        return None


class Pixels(Extractor):
    """Raw pixels, average-pooled to 8x8: a sanity check that needs no training."""

    name = "pixels"
    sha256 = hashlib.sha256(b"pixels: adaptive_avg_pool2d 8x8").hexdigest()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(images, 8).flatten(1)


class Classifier(Extractor):
    """ganforge's domain classifier: penultimate-layer features and softmax probabilities."""

    def __init__(self, data: str, root: Path | None = None, train_if_missing: bool = True):
        from ganforge.metrics.classifier import DamagedCache, classifier_path, load_classifier, train_classifier

        self.name = f"classifier:{data}"
        if not classifier_path(data, root).is_file() and train_if_missing:
            print(f"{self.name}: no trained classifier in the cache yet; training it now (once)", file=sys.stderr)
            train_classifier(data, root)
        try:
            self.net, self.meta = load_classifier(data, root)
        except DamagedCache as e:
            if not train_if_missing:
                raise
            print(f"{e}: training it again now", file=sys.stderr)
            train_classifier(data, root)
            self.net, self.meta = load_classifier(data, root)
        self.classes, self.sha256 = self.meta["classes"], self.meta["sha256"]

    def _checked(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != self.meta["channels"]:
            raise GanforgeError(f"{self.name} takes {self.meta['channels']}-channel images, "
                                f"the samples have {images.shape[1]}")
        return images

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.body(self._checked(images))

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self._checked(images)).softmax(1)


def get_extractor(name: str, root: Path | None = None, inception_weights: str | Path | None = None,
                  image_size: int | None = None, channels: int | None = None) -> Extractor:
    """An extractor by name. `image_size` and `channels`: how the data is loaded should ssl:<data> train first
    (as the images measured have them)."""
    if name == "pixels":
        return Pixels()
    if name == "inception":
        from ganforge.metrics.inception import Inception

        return Inception(inception_weights, root)
    if name.startswith("classifier:") and len(name) > len("classifier:"):
        return Classifier(name.removeprefix("classifier:"), root)
    if name.startswith("ssl:") and len(name) > len("ssl:"):
        from ganforge.metrics.ssl import SelfSupervised

        return SelfSupervised(name.removeprefix("ssl:"), root, image_size=image_size, channels=channels)
    raise GanforgeError(f"unknown feature extractor {name!r}; choose pixels, inception, "
                        "classifier:<data> (e.g. classifier:fashion-mnist) or, for data without labels, "
                        "ssl:<data> (a self-supervised extractor, e.g. ssl:folder:PATH)")


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
