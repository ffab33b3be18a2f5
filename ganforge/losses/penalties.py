"""Penalties on D's input gradient, which losses add to D's loss.

- `gradient_penalty` (WGAN-GP, Gulrajani et al. 2017): (||grad D||_2 - 1)^2 at random interpolates
  between real images and forgeries;
- `r1_penalty` (Mescheder et al. 2018): ||grad D||^2 at real images; R3GAN's R2 is the same at forgeries.
Both take the gradient with the graph kept (a double backward), so D's loss can be trained through them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


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


def r1_penalty(out: torch.Tensor, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """E[||grad D(x)||^2] over images x (which must require grad), from D's outputs on them: R1 on real
    images, R2 on forgeries. The caller weighs it (gamma / 2) and may reuse the outputs for D's loss."""
    return _input_gradient(out, x, scale).square().sum(1).mean()
