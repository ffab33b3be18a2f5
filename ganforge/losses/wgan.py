"""The Wasserstein GAN (Arjovsky et al. 2017): the critic D maximises D(x) - D(G(z)), G maximises D(G(z)),
and D's weights are clipped to [-clip, clip] after each of its steps, 5 of them per G step."""

import torch

from ganforge.losses.base import LOSSES, Loss
from ganforge.registry import Option, positive


@LOSSES.register("wgan", "Wasserstein critic with weight clipping, 5 D steps per G step")
class Wasserstein(Loss):
    options = (Option("clip", float, 0.01, "wgan: D's weights are clipped to [-clip, clip] after each D step",
                      positive),)
    n_critic = 5

    def d_term(self, real_out, fake_out):
        return fake_out.mean() - real_out.mean()

    def g_term(self, fake_out):
        return -fake_out.mean()

    @torch.no_grad()
    def after_discriminator_step(self, D):
        for p in D.parameters():
            p.clamp_(-self.cfg.clip, self.cfg.clip)
