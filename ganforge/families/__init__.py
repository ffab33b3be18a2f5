"""Model families and the models registered in MODELS (base.py says what a family owns).

    mlp, dcgan (unconditional), cgan (class-conditional): image.py
    light (unconditional, 32 to 256 pixels, with a W space): light.py
    stackgan1, stackgan2 (text to image, in two stages): text.py

A new model is a `@MODELS.register` class in one of them (or a new module imported below).
"""

from ganforge.families.base import MODELS, Family, build_discriminator, build_generator, family_of, pick_generator

# isort: off
# each registers its models; the order here is the order of the command line's choices
from ganforge.families import image  # noqa: F401  (mlp, dcgan, cgan)
from ganforge.families import light  # noqa: F401  (light)
from ganforge.families import text  # noqa: F401  (stackgan1, stackgan2)
# isort: on

__all__ = ["MODELS", "Family", "build_discriminator", "build_generator", "family_of", "pick_generator"]
