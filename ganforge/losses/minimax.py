"""The minimax loss of the GAN paper (Goodfellow et al. 2014): D by cross-entropy; G minimises
log(1 - D(G(z))), i.e. maximises D's own loss on forgeries. Its gradient vanishes while D wins easily."""

from ganforge.losses.base import LOSSES
from ganforge.losses.non_saturating import NonSaturating, bce


@LOSSES.register("minimax", "the paper's game: G minimises log(1 - D(G(z))); saturates early on")
class Minimax(NonSaturating):
    def g_term(self, fake_out):
        return -bce(fake_out, self.fake_target)
