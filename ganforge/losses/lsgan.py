"""Least squares (LSGAN, Mao et al. 2017): D's raw score is pulled towards the targets by squared error."""

from ganforge.losses.base import LOSSES, TargetLoss


@LOSSES.register("lsgan", "least squares towards the targets (Mao et al. 2017)")
class LeastSquares(TargetLoss):
    def d_term(self, real_out, fake_out):
        return 0.5 * ((real_out - self.real_target).square().mean() + (fake_out - self.fake_target).square().mean())

    def g_term(self, fake_out):
        return 0.5 * (fake_out - self.real_target).square().mean()
