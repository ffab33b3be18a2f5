"""The non-saturating loss (Goodfellow et al. 2014): D by cross-entropy; G pushes D(G(z)) towards the
real target, which keeps G's gradients large while D still wins easily."""

import torch
import torch.nn.functional as F

from ganforge.losses.base import LOSSES, TargetLoss


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of D's logits against one target."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@LOSSES.register("non-saturating", "cross-entropy; G maximises log D(G(z)) (the default)")
class NonSaturating(TargetLoss):
    logits = True

    def d_term(self, real_out, fake_out):
        return bce(real_out, self.real_target) + bce(fake_out, self.fake_target)

    def g_term(self, fake_out):
        return bce(fake_out, self.real_target)
