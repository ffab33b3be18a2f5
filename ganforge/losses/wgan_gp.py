"""WGAN-GP (Gulrajani et al. 2017): the Wasserstein critic without clipping, plus a gradient penalty
gp_weight * E[(||grad D(x_hat)||_2 - 1)^2] at random interpolates x_hat of real images and forgeries.
Batch norm breaks the per-image penalty, so D normalises by layer norm unless told otherwise."""

from ganforge.losses.base import LOSSES
from ganforge.losses.penalties import gradient_penalty
from ganforge.losses.wgan import Wasserstein
from ganforge.registry import Option, positive
from ganforge.stats import report


@LOSSES.register("wgan-gp", "Wasserstein critic with a gradient penalty (layer norm in D)")
class WassersteinGP(Wasserstein):
    options = (Option("gp_weight", float, 10.0, "wgan-gp: weight of the gradient penalty", positive),)
    d_norm = "layer"
    input_gradient = True

    def penalties(self, D, real, fake, cond, real_out):
        gp = gradient_penalty(lambda x: D(x, cond, plain=True), real, fake, scale=D.loss_scale())
        report("d_loss/gp", gp)
        return self.cfg.gp_weight * gp + super().penalties(D, real, fake, cond, real_out)

    def after_discriminator_step(self, D):
        """No clipping: the penalty keeps D near 1-Lipschitz."""
