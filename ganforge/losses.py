"""GAN losses as pure functions of D's logits.

D(x) = sigmoid(logit). D is trained by binary cross-entropy towards `real_target` on real images
and `fake_target` on forgeries; by default 1 and 0, and the other way round for the convention in
which D near 0 means real. G's loss comes in two forms (Goodfellow et al. 2014):
- minimax: G minimises log(1 - D(G(z))), i.e. maximises D's own loss on forgeries;
- non-saturating: G pushes D(G(z)) towards the real target, which keeps its gradients large
  while D still wins easily.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0,
           fake_target: float = 0.0) -> torch.Tensor:
    """D's loss: cross-entropy on real images plus on forgeries (each a mean over its batch)."""
    return _bce(real_logits, real_target) + _bce(fake_logits, fake_target)


def g_loss(fake_logits: torch.Tensor, kind: str = "non-saturating", real_target: float = 1.0,
           fake_target: float = 0.0) -> torch.Tensor:
    if kind == "non-saturating":
        return _bce(fake_logits, real_target)
    if kind == "minimax":
        return -_bce(fake_logits, fake_target)
    raise ValueError(f"unknown G loss {kind!r}")
