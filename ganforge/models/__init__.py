"""Generators and discriminators, built from a plain dict of constructor arguments.

The dict (`model_spec`) is stored in every checkpoint, so G can be rebuilt from the file alone.
"""

from __future__ import annotations

import inspect

from torch import nn

from ganforge.errors import GanforgeError
from ganforge.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganforge.models.mlp import MLPDiscriminator, MLPGenerator


def model_spec(cfg, image_shape: tuple[int, int, int]) -> dict:
    """Constructor arguments of G and D for a config and the data's (C, H, W)."""
    channels, size, _ = image_shape
    spec = {"model": cfg.model, "image_size": size, "channels": channels, "z_dim": cfg.z_dim}
    if cfg.model == "dcgan":
        spec |= {"g_width": cfg.g_width, "d_width": cfg.d_width}
    else:
        spec |= {"g_hidden": cfg.mlp_g_hidden, "d_hidden": cfg.mlp_d_hidden, "d_pieces": cfg.mlp_d_pieces}
    return spec


NETWORKS = {"dcgan": (DCGANGenerator, DCGANDiscriminator), "mlp": (MLPGenerator, MLPDiscriminator)}


def _build(spec: dict, which: int) -> nn.Module:
    if spec.get("model") not in NETWORKS:
        raise GanforgeError(f"unknown model {spec.get('model')!r}; known: {', '.join(NETWORKS)}")
    cls = NETWORKS[spec["model"]][which]
    wanted = inspect.signature(cls).parameters  # each network takes its own part of the spec
    return cls(**{k: v for k, v in spec.items() if k in wanted})


def build_generator(spec: dict) -> nn.Module:
    return _build(spec, 0)


def build_discriminator(spec: dict) -> nn.Module:
    return _build(spec, 1)
