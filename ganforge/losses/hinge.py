"""The hinge loss (Lim & Ye 2017; Miyato et al. 2018): D: relu(1 - D(x)) + relu(1 + D(G(z))); G: -D(G(z))."""

import torch.nn.functional as F

from ganforge.losses.base import LOSSES, Loss


@LOSSES.register("hinge", "hinge on D's raw score (SN-GAN, BigGAN)")
class Hinge(Loss):
    def d_term(self, real_out, fake_out):
        return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()

    def g_term(self, fake_out):
        return -fake_out.mean()
