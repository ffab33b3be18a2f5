"""GAN losses, one module each, registered by name in LOSSES (base.py says what a loss is).

    non-saturating, minimax (Goodfellow et al. 2014), lsgan (Mao et al. 2017), hinge (Lim & Ye 2017),
    wgan (Arjovsky et al. 2017), wgan-gp (Gulrajani et al. 2017), r3gan (Huang et al. 2024)

A new loss is a module here with a `@LOSSES.register` class, and its import below.
"""

from ganforge.losses.base import LOSSES, Critic, Loss, TargetLoss
from ganforge.losses.penalties import gradient_penalty, r1_penalty

# isort: off
# each registers itself; the order here is the order of the command line's choices
from ganforge.losses import non_saturating  # noqa: F401  (the default)
from ganforge.losses import minimax  # noqa: F401
from ganforge.losses import lsgan  # noqa: F401
from ganforge.losses import hinge  # noqa: F401
from ganforge.losses import wgan  # noqa: F401
from ganforge.losses import wgan_gp  # noqa: F401
from ganforge.losses import r3gan  # noqa: F401
# isort: on

__all__ = ["LOSSES", "Critic", "Loss", "TargetLoss", "gradient_penalty", "r1_penalty"]
