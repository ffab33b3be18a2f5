"""Generators and discriminators, built from a plain dict of constructor arguments.

The dict (`model_spec`) is stored in every checkpoint, so G can be rebuilt from the file alone.
"""

from __future__ import annotations

import inspect

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganforge.errors import GanforgeError
from ganforge.models.dcgan import CGANDiscriminator, CGANGenerator, DCGANDiscriminator, DCGANGenerator
from ganforge.models.mlp import MLPDiscriminator, MLPGenerator
from ganforge.models.stackgan import StageIGenerator, StageIIGenerator, TextDiscriminator


def model_spec(cfg, image_shape: tuple[int, int, int], classes: list[str] | None = None) -> dict:
    """Constructor arguments of G and D for a config, the data's (C, H, W) and its class names."""
    channels, size, _ = image_shape
    spec = {"model": cfg.model, "image_size": size, "channels": channels, "z_dim": cfg.z_dim,
            "spectral_norm": cfg.spectral_norm}
    if cfg.model == "mlp":
        spec |= {"g_hidden": cfg.mlp_g_hidden, "d_hidden": cfg.mlp_d_hidden, "d_pieces": cfg.mlp_d_pieces}
        if not cfg.mlp_d_dropout:  # only when off, so that earlier checkpoints' specs still match
            spec["d_dropout"] = False
    else:
        spec |= {"g_width": cfg.g_width, "d_width": cfg.d_width, "d_norm": cfg.d_norm}
    if cfg.model == "cgan":
        if not classes:
            raise GanforgeError(f"--model cgan needs labelled data; {cfg.data} has no labels "
                                "(for a folder: one subfolder per class and --set folder_labels=true)")
        spec |= {"n_classes": len(classes), "class_names": list(classes)}
    return spec


NETWORKS = {"dcgan": (DCGANGenerator, DCGANDiscriminator), "mlp": (MLPGenerator, MLPDiscriminator),
            "cgan": (CGANGenerator, CGANDiscriminator), "stackgan1": (StageIGenerator, TextDiscriminator),
            "stackgan2": (StageIIGenerator, TextDiscriminator)}


def _build(spec: dict, which: int) -> nn.Module:
    if spec.get("model") not in NETWORKS:
        raise GanforgeError(f"unknown model {spec.get('model')!r}; known: {', '.join(NETWORKS)}")
    cls = NETWORKS[spec["model"]][which]
    wanted = inspect.signature(cls).parameters  # each network takes its own part of the spec
    return cls(**{k: v for k, v in spec.items() if k in wanted})


def build_generator(spec: dict) -> nn.Module:
    return _build(spec, 0)


def build_discriminator(spec: dict) -> nn.Module:
    D = _build(spec, 1)
    if spec.get("spectral_norm"):  # every weight layer, so that D is 1-Lipschitz up to its activations
        for module in list(D.modules()):
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                spectral_norm(module)
    return D


def is_conditional(net: nn.Module) -> bool:
    """Whether G or D takes a class label besides its input."""
    return bool(getattr(net, "n_classes", 0))
