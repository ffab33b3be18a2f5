"""What a feature extractor is: images in [-1, 1] (N, C, H, W) -> features (N, D), and class probabilities
for a classifier. The extractors themselves are registered by name in features.py (EXTRACTORS)."""

from __future__ import annotations

import torch


class Extractor:
    name: str
    classes: list[str] | None = None  # class names when it predicts classes
    sha256: str  # of its weights (of its definition for one without weights): caches of its features are keyed by it

    def features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def probs(self, images: torch.Tensor) -> torch.Tensor | None:
        return None
