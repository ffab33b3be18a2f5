"""GAN losses as pure, paired functions of D's outputs, chosen by name, and the gradient penalties.

Every loss is a pair (d_loss, g_loss): d_loss(real_out, fake_out, real_target, fake_target) and
g_loss(fake_out, real_target, fake_target). The targets matter to the losses that have them
(cross-entropy and least squares); hinge and Wasserstein losses ignore them.
- minimax (Goodfellow et al. 2014): D by cross-entropy; G minimises log(1 - D(G(z))), i.e.
  maximises D's own loss on forgeries;
- non-saturating (same paper): G pushes D(G(z)) towards the real target, which keeps its
  gradients large while D still wins easily;
- lsgan (Mao et al. 2017): least squares towards the targets, D's output a raw score;
- hinge (Lim & Ye 2017; Miyato et al. 2018): D: relu(1 - D(x)) + relu(1 + D(G(z))); G: -D(G(z));
- wgan (Arjovsky et al. 2017): critic D(G(z)) - D(x), G: -D(G(z)), with weights clipped to
  [-c, c] after each D step (the trainer does that);
- wgan-gp (Gulrajani et al. 2017): the same, plus `gradient_penalty` on random interpolates.
`r1_penalty` (Mescheder et al. 2018) can be added to any D loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def bce_d(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0, fake_target: float = 0.0):
    """D's cross-entropy on real images plus on forgeries (each a mean over its batch)."""
    return _bce(real, real_target) + _bce(fake, fake_target)


def minimax_g(fake: torch.Tensor, real_target: float = 1.0, fake_target: float = 0.0):
    return -_bce(fake, fake_target)


def non_saturating_g(fake: torch.Tensor, real_target: float = 1.0, fake_target: float = 0.0):
    return _bce(fake, real_target)


def lsgan_d(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0, fake_target: float = 0.0):
    return 0.5 * ((real - real_target).square().mean() + (fake - fake_target).square().mean())


def lsgan_g(fake: torch.Tensor, real_target: float = 1.0, fake_target: float = 0.0):
    return 0.5 * (fake - real_target).square().mean()


def hinge_d(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0, fake_target: float = 0.0):
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def wasserstein_d(real: torch.Tensor, fake: torch.Tensor, real_target: float = 1.0, fake_target: float = 0.0):
    return fake.mean() - real.mean()


def score_g(fake: torch.Tensor, real_target: float = 1.0, fake_target: float = 0.0):
    """G raises D's raw score of its forgeries (hinge and Wasserstein losses)."""
    return -fake.mean()


LossPair = tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]
LOSSES: dict[str, LossPair] = {
    "non-saturating": (bce_d, non_saturating_g),
    "minimax": (bce_d, minimax_g),
    "lsgan": (lsgan_d, lsgan_g),
    "hinge": (hinge_d, score_g),
    "wgan": (wasserstein_d, score_g),
    "wgan-gp": (wasserstein_d, score_g),
}
PROBABILITY_LOSSES = ("non-saturating", "minimax")  # D's output is a logit: sigmoid gives P(real)
TARGET_LOSSES = (*PROBABILITY_LOSSES, "lsgan")  # the losses that use real_label / fake_label


def d_loss(real_out: torch.Tensor, fake_out: torch.Tensor, real_target: float = 1.0, fake_target: float = 0.0,
           kind: str = "non-saturating") -> torch.Tensor:
    return LOSSES[kind][0](real_out, fake_out, real_target, fake_target)


def g_loss(fake_out: torch.Tensor, kind: str = "non-saturating", real_target: float = 1.0,
           fake_target: float = 0.0) -> torch.Tensor:
    return LOSSES[kind][1](fake_out, real_target, fake_target)


def _input_gradient(out: torch.Tensor, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """d sum(out) / dx with the graph kept, so that a penalty on the gradient can be trained.

    Under fp16 loss scaling, `scale` is the scaler's factor: the gradient is taken of the scaled sum,
    so that it does not underflow in half precision, and divided by the factor again (in fp32)."""
    (grad,) = torch.autograd.grad(out.float().sum() * scale, x, create_graph=True)
    return grad.float().flatten(1) / scale


def gradient_penalty(D: Callable, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None, scale: float = 1.0) -> torch.Tensor:
    """WGAN-GP: E[(||grad D(x_hat)||_2 - 1)^2] at x_hat = eps x + (1 - eps) G(z), eps ~ U(0, 1) per image."""
    eps = torch.rand(len(real), 1, 1, 1, generator=generator).to(real)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    return (_input_gradient(D(x_hat), x_hat, scale).norm(dim=1) - 1).square().mean()


def r1_penalty(real_out: torch.Tensor, real: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """R1: E[||grad D(x)||^2] over real images x (which must require grad), from D's outputs on them;
    the trainer multiplies it by gamma / 2 and reuses the same outputs for D's loss."""
    return _input_gradient(real_out, real, scale).square().sum(1).mean()
