"""What a model is to ganforge: a registered class (MODELS) of one family, with its networks and options.

A family is what a kind of model adds to the game the loop plays, and owns:
- its defaults: those that follow from other options (`defaults`, at validation) and those that follow from the
  data (`settle`: the image size, D and G's depths, adaptive augmentation), written into the config once, before
  the networks are built, so that config.json and every checkpoint hold the run's every value;
- its spec: the networks' constructor arguments (`spec()`), stored in every checkpoint;
- its conditioning: what G and D are given besides noise and images (`condition`, `mismatch`);
- its forgeries (`forge`), and the length of the noise it draws (`noise_dim`);
- its training: the phases it adds to the loss's (`phases`, see phases.py), the optimiser of each network
  (`optimizer`, fused Adam unless it says otherwise), and what it carries from step to step (`state_dict`,
  `load_state_dict`, saved in every checkpoint);
- its panels (`panel`), what a sampler needs from a checkpoint besides G (`extra_state`), and its sampling:
  the object that draws from a trained model (`sampler`, `load_sampler`; see sampling.Sampler).
The families: unconditional (mlp, dcgan) and class-conditional (cgan) in image.py; StackGAN's Stage-I
and Stage-II (stackgan1, stackgan2) in text.py. A model class names its two networks (plain
nn.Modules from models/) and declares its options.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganforge.data import ImageData, load_data
from ganforge.distributed import SINGLE, Group
from ganforge.errors import GanforgeError
from ganforge.io import load_module_state, unpack_state
from ganforge.phases import Phase
from ganforge.registry import Option, Registry, non_negative
from ganforge.stats import report

MODELS: Registry[type[Family]] = Registry("model")


def pick_generator(tensors: dict[str, torch.Tensor], ema: bool = True) -> str:
    """Which generator of a checkpoint draws: its EMA ("G_ema") when the run kept one and `ema`, else "G"."""
    return "G_ema" if ema and any(k.startswith("G_ema/") for k in tensors) else "G"


def family_of(spec: dict, where: str | Path = "") -> type[Family]:
    """The registered model class of a spec; a GanforgeError naming `where` (a checkpoint) for one unknown here."""
    name = spec.get("model") if isinstance(spec, dict) else None
    if name not in MODELS:
        raise GanforgeError(f"{where}: \"model_spec\" is {repr(spec)[:80]}; expected an object whose \"model\" is "
                            f"one of {', '.join(MODELS)}")
    return MODELS[name]


def _construct(cls: type[nn.Module], spec: dict) -> nn.Module:
    wanted = inspect.signature(cls).parameters  # each network takes its own part of the spec
    return cls(**{k: v for k, v in spec.items() if k in wanted})


def build_generator(spec: dict) -> nn.Module:
    return _construct(family_of(spec).generator, spec)


def build_discriminator(spec: dict) -> nn.Module:
    D = _construct(family_of(spec).discriminator, spec)
    if spec.get("spectral_norm"):  # every weight layer, so that D is 1-Lipschitz up to its activations
        for module in list(D.modules()):
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                spectral_norm(module)
    return D


class Family:
    """The base of every model class (see the module's docstring). One instance per run, made before the
    networks: `Family(cfg, data, device, group, resume)`, where `cfg` is the run's TrainConfig and `resume` the
    checkpoint (meta, tensors) a resumed run continues from."""

    name: str  # set by MODELS.register
    options: tuple[Option, ...] = ()
    generator: type[nn.Module]
    discriminator: type[nn.Module]
    sizes: tuple[int, ...] = (28, 32, 56, 64, 128, 256)  # the image sizes its networks are built at
    conv = True  # convolutional: trained in the channels_last memory layout when the config asks for it
    kind = "image"  # what its sampler draws from: noise (and a label), "image"; or a caption, "text"

    # --- before a run: its config and its data
    lr = 2e-4  # Adam's learning rate for G and D where the config leaves them unset: the DCGAN paper's

    @classmethod
    def defaults(cls, cfg) -> dict:
        """The defaults that follow from other options, as this model decides them: {key: value}, of which
        validation writes those the config leaves unset (None), and `train --help` lists per model. A subclass adds
        its own to super().defaults(cfg)."""
        return {"lr_g": cls.lr, "lr_d": cls.lr}

    @classmethod
    def check(cls, cfg) -> None:
        """Raise a GanforgeError for an option this model cannot train with (cfg has its defaults filled in)."""

    @classmethod
    def resolve(cls, cfg):
        """A new run's config completed from elsewhere (Stage-II: from its Stage-I run); most models: as is."""
        return cfg

    @classmethod
    def settle(cls, cfg, data: ImageData) -> dict:
        """The defaults that depend on the data, as this model decides them for `data`: the image size and
        channels, and whether augmentation adapts. config.settle writes those the config leaves unset into it
        before the networks are built, so that config.json holds every value and a resume derives nothing again.
        A subclass adds its own to super().settle(cfg, data)."""
        size = data.shape[-1]
        if size not in cls.sizes:
            raise GanforgeError(f"--model {cls.name} draws {', '.join(map(str, cls.sizes))} pixel images; "
                                f"{cfg.data} is {size} px: add --image-size {min(cls.sizes, key=lambda s: abs(s - size))}")
        return {"image_size": data.shape[-1], "channels": data.shape[0],
                "ada": not cfg.diffaugment and cls.adaptive_augment(len(data))}

    @classmethod
    def load_data(cls, cfg) -> ImageData:
        return load_data(cfg.data, cfg.image_size, cfg.channels, data_dir=cfg.data_dir, download=cfg.download,
                         folder_labels=cfg.folder_labels)

    def __init__(self, cfg, data: ImageData, device: torch.device, group: Group = SINGLE,
                 resume: tuple[dict, dict] | None = None):
        self.cfg, self.data, self.device, self.group = cfg, data, device, group

    # --- a run's part
    def spec(self) -> dict:
        """The networks' constructor arguments: what a checkpoint rebuilds them from."""
        channels, size, _ = self.data.shape
        return {"model": self.name, "image_size": size, "channels": channels, "z_dim": self.cfg.z_dim,
                "spectral_norm": self.cfg.spectral_norm}

    @property
    def noise_dim(self) -> int:
        """The length of the noise drawn for one forgery."""
        return self.cfg.z_dim

    def condition(self, idx: torch.Tensor, step: int) -> torch.Tensor | None:
        """What G and D are given with the images at `idx` at this step: nothing for unconditional models."""
        return None

    mismatch = None  # or a function: conditions -> conditions that do not match them (a matching-aware D)

    def forge(self, G: nn.Module, z: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | float]:
        """-> (G's forgeries, a regulariser added to G's loss)."""
        return (G(z) if cond is None else G(z, cond)), 0.0

    # --- its training
    def phases(self, phases: list[Phase]) -> list[Phase]:
        """The phases of a step, given the loss's (D's step, then G's): most models add none."""
        return phases

    def optimizer(self, net: str, params, lr: float) -> torch.optim.Optimizer:
        """The optimiser of network `net` ("G" or "D"): Adam with the config's betas, fused (one kernel for all
        parameters: 7x faster than the default loop on a CPU)."""
        return torch.optim.Adam(params, lr=lr, betas=(self.cfg.beta1, self.cfg.beta2), fused=True)

    @classmethod
    def adaptive_augment(cls, n_images: int) -> bool:
        """Whether adaptive augmentation is on where the config leaves it unset, for a set of n_images: off."""
        return False

    def state_dict(self) -> dict:
        """What this model carries from step to step besides the networks (tensors, numbers): none for most."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def sampler(self, G: nn.Module):
        """The object that draws from this model's generator: a sampling.Sampler."""
        raise NotImplementedError

    def panel(self, sampler, n: int, seed: int) -> tuple[torch.Tensor, int | None]:
        """The samples panel: (about n images from fixed noise, images per row or None for a square grid)."""
        return sampler.sample(n, seed), None

    def panel_files(self) -> dict[str, str]:
        """Text files that explain the panels (samples/NAME: text), written once."""
        return {}

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """What this model's sampler needs from a checkpoint besides G (a text encoder, a frozen Stage-I):
        (tensors, JSON)."""
        return {}, {}

    # --- from a checkpoint
    @classmethod
    def load_sampler(cls, meta: dict, tensors: dict[str, torch.Tensor], ema: bool = True):
        """The sampler of a checkpoint of this model, its networks in eval mode without gradients."""
        raise NotImplementedError


def load_net(spec: dict, tensors: dict[str, torch.Tensor], which: str, build=build_generator) -> nn.Module:
    """A network rebuilt from its spec with the checkpoint's tensors under `which/`, in eval mode, frozen."""
    net = build(spec)
    load_module_state(net, unpack_state(which, tensors), which)
    return net.eval().requires_grad_(False)


class ModeSeeking:
    """The mode-seeking term (Mao et al. 2019) in G's loss, for the conditional models (cgan, stackgan): one
    condition drawn with two noises, and G is paid for images as far apart as their noises, so that a class or a
    caption does not come out as one image whatever the noise."""

    options = (
        Option("mode_seeking", float, 1.0, "cgan and stackgan: weight of the mode-seeking term in G's loss (Mao et "
               "al. 2019): one condition, two noises, and G is paid for images as far apart as their noises; 0: off",
               non_negative, before=0.0),
    )

    def seek_modes(self, draw, image: torch.Tensor, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor | float:
        """The term for G's loss: the batch's first half of conditions drawn again with the second half's noise,
        and weight / (mean |image difference| / mean |noise difference|), which falls as G lets the noise change
        the image. `draw(z, cond)` draws images; on D-only steps (no gradient): nothing."""
        h = len(z) // 2
        if not self.cfg.mode_seeking or not torch.is_grad_enabled() or h == 0:
            return 0.0
        twin = draw(z[h:2 * h], cond[:h])
        ratio = (image[:h] - twin).float().abs().mean() / (z[:h] - z[h:2 * h]).abs().mean()
        report("g_loss/ms", ratio)
        return self.cfg.mode_seeking / (ratio + 1e-5)

