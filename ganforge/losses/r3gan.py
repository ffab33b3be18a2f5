"""R3GAN's loss (Huang, Gokaslan, Kuleshov, Tompkin, "The GAN is dead; long live the GAN! A Modern GAN
Baseline", NeurIPS 2024): the relativistic pairing loss, regularised by zero-centred R1 and R2.

Each real image x is paired with a forgery G(z), and D is asked which of the two is the real one:
    D: softplus(-(D(x) - D(G(z))))        G: softplus(-(D(G(z)) - D(x)))
plus, in D's loss, (gamma / 2) (R1 + R2): R1 = E||grad D(x)||^2 at real images, R2 = E||grad D(G(z))||^2
at forgeries. Pairing avoids the mode dropping of the plain game; the two penalties give it local
convergence, which the paper proves and which lets it drop the usual tricks. A matching-aware D (text
to image) also pairs each real image with itself under a caption that does not match it. D's outputs
are scores, not probabilities: d_real and d_fake are reported raw. D is not normalised by batch norm
(which would couple the per-image penalties): layer norm unless d_norm says otherwise.
"""

import torch
import torch.nn.functional as F

from ganforge.errors import GanforgeError
from ganforge.losses.base import LOSSES, Loss
from ganforge.losses.penalties import r1_penalty
from ganforge.registry import Option, non_negative
from ganforge.stats import report


@LOSSES.register("r3gan", "relativistic pairing with zero-centred R1 and R2 (R3GAN, Huang et al. 2024)")
class R3GAN(Loss):
    options = (Option("r3gan_gamma", float, 1.0, "r3gan: gamma of its R1 and R2 penalties, (gamma / 2) (R1 + R2)",
                      non_negative),)
    d_norm = "layer"
    input_gradient = True

    @classmethod
    def check(cls, cfg):
        super().check(cfg)
        if cfg.r1_gamma:
            raise GanforgeError(f"r1_gamma={cfg.r1_gamma!r}: r3gan has its own R1 and R2 penalties; set their "
                                "weight with --set r3gan_gamma=G")

    def discriminator(self, D, real, fake, cond=None):
        gamma = self.cfg.r3gan_gamma
        if gamma:
            real, fake = real.detach().requires_grad_(True), fake.detach().requires_grad_(True)
        real_out, fake_out = D(real, cond), D(fake, cond)
        D.observe(real_out)
        negatives = fake_out
        if D.mismatch is not None:  # the same real images under captions that do not match them
            negatives = torch.cat([fake_out, D(real.detach(), D.mismatch(cond))])
        pairs = real_out.float().repeat(len(negatives) // len(real_out)) - negatives.float()
        loss = F.softplus(-pairs).mean()
        report("d_loss", loss)
        self.report_scores(real_out, fake_out)
        if not gamma:
            return loss
        r1 = r1_penalty(D(real, cond, plain=True) if D.wrapped else real_out, real, D.loss_scale())
        r2 = r1_penalty(D(fake, cond, plain=True) if D.wrapped else fake_out, fake, D.loss_scale())
        report("d_loss/r1", r1)
        report("d_loss/r2", r2)
        return loss + gamma / 2 * (r1 + r2)

    def generator(self, D, real, fake, cond=None):
        loss = F.softplus(-(D(fake, cond).float() - D(real.detach(), cond).float())).mean()
        report("g_loss", loss)
        return loss
