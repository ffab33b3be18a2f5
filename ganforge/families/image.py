"""The image families: unconditional G(z) (mlp, dcgan) and class-conditional G(z, y) (cgan)."""

from __future__ import annotations

from typing import ClassVar

from ganforge.errors import GanforgeError
from ganforge.families.base import MODELS, Family, ModeSeeking, load_net, pick_generator
from ganforge.models.dcgan import CGANDiscriminator, CGANGenerator, DCGANDiscriminator, DCGANGenerator
from ganforge.models.mlp import MLPDiscriminator, MLPGenerator
from ganforge.registry import Option, bounded
from ganforge.sampling import Generator


class Unconditional(Family):
    """G(z) and D(x): noise in, images out, no condition."""

    def sampler(self, G):
        return Generator(G)

    @classmethod
    def load_sampler(cls, meta, tensors, ema=True):
        return Generator(load_net(meta["model_spec"], tensors, pick_generator(tensors, ema)), meta=meta)


class ClassConditional(Family):
    """G(z, y) and D(x, y) for class labels y: the data's labels are the condition, panels have a row per class."""

    @classmethod
    def load_data(cls, cfg):
        data = super().load_data(cfg)
        if not data.classes:
            raise GanforgeError(f"--model {cfg.model} needs labelled data; {cfg.data} has no labels "
                                "(for a folder: one subfolder per class and --set folder_labels=true)")
        return data

    def spec(self):
        return super().spec() | {"n_classes": len(self.data.classes), "class_names": list(self.data.classes)}

    def condition(self, idx, step):
        return self.data.labels[idx].to(self.device)

    def sampler(self, G):
        return Generator(G, list(self.data.classes))

    def panel(self, sampler, n, seed):
        """A row per class, the same noise down each column."""
        per_class = max(n // len(sampler.classes), 1)
        return sampler.class_grid(per_class, seed), per_class

    @classmethod
    def load_sampler(cls, meta, tensors, ema=True):
        spec = meta["model_spec"]
        classes = spec.get("class_names") or [str(i) for i in range(spec["n_classes"])]
        return Generator(load_net(spec, tensors, pick_generator(tensors, ema)), list(classes), meta)


# --- the models
WIDTHS = (  # the conv nets' widths, shared by every DCGAN-shaped model
    Option("g_width", int | None, None, "conv G: channels of its last hidden layer, doubling towards the input; "
           "none: the model's ({decided})", bounded(1, 4096)),
    Option("d_width", int | None, None, "conv D: channels of its first layer, doubling with depth; none: the "
           "model's ({decided})", bounded(1, 4096)),
)


class Conv:
    """What the DCGAN-shaped models share: their widths (options, defaults) and D's normalisation, in the spec."""

    options = WIDTHS
    default_width = 64

    @classmethod
    def defaults(cls, cfg):
        return super().defaults(cfg) | {"g_width": cls.default_width, "d_width": cls.default_width}

    def spec(self):
        return super().spec() | {"g_width": self.cfg.g_width, "d_width": self.cfg.d_width, "d_norm": self.cfg.d_norm}


class Deep(Conv):
    """The DCGAN pair's depth: 3x3 convolutions added at each hidden resolution of G and of D. Its default
    follows the image size, known once the data is (settle); the spec records the depth the nets were built with."""

    options = (
        Option("g_depth", int | None, None, "dcgan and cgan: 3x3 convolutions G adds at each hidden resolution; "
               "none: the model's ({decided}; 0 is the paper's)", bounded(0, 16), before=0),
        Option("d_depth", int | None, None, "dcgan and cgan: 3x3 convolutions D adds at each hidden resolution; "
               "none: the model's ({decided})", bounded(0, 16), before=0),
    )
    default_depths: ClassVar[dict[int, tuple[int, int]]] = {}  # image size -> (G's, D's); 0 at any other size

    @classmethod
    def settle(cls, cfg, data):
        g, d = cls.default_depths.get(data.shape[-1], (0, 0))
        return super().settle(cfg, data) | {"g_depth": g, "d_depth": d}

    def depths(self) -> tuple[int, int]:
        return self.cfg.g_depth, self.cfg.d_depth

    def spec(self):
        depths = dict(zip(("g_depth", "d_depth"), self.depths()))
        return super().spec() | {k: v for k, v in depths.items() if v}  # only when set: earlier specs still match


@MODELS.register("mlp", "fully connected G and maxout D (Goodfellow et al. 2014)")
class MLP(Unconditional):
    generator, discriminator = MLPGenerator, MLPDiscriminator
    conv = False
    options = (
        Option("mlp_g_hidden", int, 1200, "mlp: units of G's two ReLU layers (the 2014 paper's MNIST model)",
               bounded(1, 65536)),
        Option("mlp_d_hidden", int, 240, "mlp: maxout units of D's two layers", bounded(1, 65536)),
        Option("mlp_d_pieces", int, 5, "mlp: pieces per maxout unit", bounded(1, 64)),
        Option("mlp_d_dropout", bool, True, "mlp: D's dropout (0.2 on the input, 0.5 after each maxout layer), as "
               "in the paper"),
    )

    def spec(self):
        cfg = self.cfg
        spec = super().spec() | {"g_hidden": cfg.mlp_g_hidden, "d_hidden": cfg.mlp_d_hidden,
                                 "d_pieces": cfg.mlp_d_pieces}
        return spec if cfg.mlp_d_dropout else spec | {"d_dropout": False}  # so that earlier specs still match


@MODELS.register("dcgan", "conv nets for G and D (Radford et al. 2015; the default)")
class DCGAN(Deep, Unconditional):
    generator, discriminator = DCGANGenerator, DCGANDiscriminator
    # for a CPU budget: at widths 32 a step costs a third of the paper's 64, and the higher rate learns faster
    # in the same minutes; at 28 pixels one 3x3 convolution more per resolution in G and D costs half the steps
    # and gains more (benchmarks/results/tuning-*.json; the README's table). At 64 pixels it makes a step 4x as
    # dear, and a 10-minute run on the faces at 32 drew poorer faces with it (docs/gallery.md): 0 there
    default_width, lr, default_depths = 32, 4e-4, {28: (1, 1)}


@MODELS.register("cgan", "class-conditional DCGAN: conditional batch norm in G, projection D")
class CGAN(ModeSeeking, Deep, ClassConditional):
    """The paper's widths (64) and rate (2e-4): at dcgan's 32 and 4e-4 a 5-minute Fashion-MNIST run drew one
    image per class whatever the noise (recall 0.0; docs/gallery.md), where widths 64 had kept 0.28. Even so its
    sandals, sneakers and bags came out as one smudge each; mode seeking (on by default) gives each class its
    variety back (benchmarks/results/quality-cgan-5min*.json; docs/training.md)."""

    generator, discriminator = CGANGenerator, CGANDiscriminator

    def forge(self, G, z, cond):
        image = G(z, cond)
        return image, self.seek_modes(G, image, z, cond)

