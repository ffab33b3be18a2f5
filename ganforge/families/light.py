"""The light model: a FastGAN-like pair for colour images of 32 to 256 pixels (models/light.py), with a
mapping network in front of G, so that its samples have a W space for directions and arithmetic."""

from __future__ import annotations

from ganforge.families.base import MODELS
from ganforge.families.image import Conv, Unconditional
from ganforge.models.light import SIZES, LightDiscriminator, LightGenerator
from ganforge.registry import Option, bounded

# Adaptive augmentation is on by default for sets of fewer images. Measured, 10 minutes at 64 px on 2 cores
# (benchmarks/results/families-faces-64-n200.json, -n1000.json): on 200 faces the light model without augmentation
# collapsed to noise and with ADA did not; on 1,000 it measured better without.
ADA_BELOW = 1000


@MODELS.register("light", "FastGAN-like G (skip-layer excitation, GLU, styles from a mapping network) and a "
                 "residual D, for 32 to 256 pixels")
class Light(Conv, Unconditional):
    generator, discriminator = LightGenerator, LightDiscriminator
    sizes = SIZES
    default_width = 32
    options = (
        Option("map_depth", int, 2, "light: layers of G's mapping network from z to w (0: w is the normalised z)",
               bounded(0, 8)),
    )

    @classmethod
    def adaptive_augment(cls, n_images: int) -> bool:
        return n_images < ADA_BELOW

    def spec(self):
        return super().spec() | {"map_depth": self.cfg.map_depth}
