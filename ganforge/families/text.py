"""The text-to-image families: StackGAN (Zhang et al. 2017), a caption as each image's condition.

Stage-I (`--model stackgan1`): the text encoder is pretrained on the captions (or minilm is
loaded), every caption is embedded once, and each step pairs every image with one of its captions
(drawn by a generator seeded by the step, so a resume needs no state). D is matching-aware: the
batch's captions rolled by one give it (real image, wrong caption) negatives. G's loss adds the
Conditioning Augmentation's KL term times kl_weight (reported as g_loss/kl), the matching loss of the
encoder's frozen image side (text_match, g_loss/match) and the mode-seeking term (mode_seeking, g_loss/ms).
Stage-II (`--model stackgan2 --stage1 RUN`): the Stage-I run's text encoder and generator are
taken over and frozen; G2 refines G1(z, text) to twice its size. Its checkpoints carry both, so
`ganforge t2i` needs nothing but the Stage-II checkpoint.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ganforge.checkpoint import load_checkpoint
from ganforge.data import fit
from ganforge.data.sources import spellings
from ganforge.distributed import SINGLE
from ganforge.errors import GanforgeError
from ganforge.families.base import MODELS, Family, ModeSeeking, family_of, load_net, pick_generator
from ganforge.families.image import Conv
from ganforge.io import pack_state
from ganforge.models.stackgan import StageIGenerator, StageIIGenerator, TextDiscriminator
from ganforge.models.text import TEXT_ENCODERS, TextEncoder, has_image_side
from ganforge.registry import Option, bounded, non_negative
from ganforge.stats import report
from ganforge.t2i import TextToImage

STAGE1_MAX = 32  # Stage-I's default size: the data's own, at most this (64-pixel faces are sketched at 32)
MATCH_SIZE = 32  # the encoder's pretraining reads images at Stage-I's size, at most this; the matching loss too
MATCH_SCALE = 10.0  # the matching loss's inverse temperature (DAMSM's gamma_3)
# text_match's default with the builtin encoder at each stage, and Stage-II's consistency weight: chosen by the
# screens in docs/text-to-image.md (benchmarks/results/text_to_image-*-s1-*.json and -s2-*.json)
MATCH_WEIGHT, MATCH_WEIGHT_STAGE2 = 3.0, 16.0
CONSISTENCY = 200.0
PANEL_CAPTIONS = 8


class Captioned(ModeSeeking, Conv, Family):
    """What both stages share: captioned data, a caption embedding as the condition, a matching-aware D."""

    discriminator = TextDiscriminator
    kind = "text"
    upscale = 1  # the stage's image size over Stage-I's
    match_default = MATCH_WEIGHT  # text_match when the config leaves it to the model
    default_width = 32  # a third of the paper's 64's cost; it measured better in the same steps (text-to-image.md)
    options = (
        Option("text_encoder", str, "builtin", "stackgan: the text encoder: " + TEXT_ENCODERS.help(),
               lambda v: None if v in TEXT_ENCODERS else f"choose one of {', '.join(TEXT_ENCODERS)}"),
        Option("c_dim", int, 128, "stackgan: length of the Conditioning Augmentation's condition c (the paper's 128)",
               bounded(1, 4096)),
        Option("kl_weight", float, 1.0, "stackgan: weight of the Conditioning Augmentation's KL term in G's loss "
               "(the paper's 1)", non_negative),
        Option("text_match", float | None, None, "stackgan: weight of the image-text matching loss in G's loss "
               "(AttnGAN's DAMSM, Xu et al. 2018): the builtin text encoder's image side, frozen, must pick each "
               f"forgery's caption among the batch's; none: {MATCH_WEIGHT:g} at Stage-I and "
               f"{MATCH_WEIGHT_STAGE2:g} at Stage-II with the builtin encoder, 0 (off) "
               "with minilm, which has no image side", non_negative),
    )

    @classmethod
    def resolve(cls, cfg):
        """A new run's text_match written out (the builtin encoder has an image side to match with)."""
        return cls.with_match_weight(cfg, image_side=cfg.text_encoder == "builtin")

    @classmethod
    def with_match_weight(cls, cfg, image_side: bool):
        """cfg with text_match set when it was left to the model: the stage's default with an encoder that has an
        image side, else 0. Saved so, a run resumes with the weight it trained with, whatever the default is then."""
        if cfg.text_match is not None:
            return cfg
        return dataclasses.replace(cfg, text_match=cls.match_default if image_side else 0.0)

    @classmethod
    def check(cls, cfg):
        super().check(cfg)
        if cfg.eval_every:
            raise GanforgeError(f"eval_every={cfg.eval_every!r}: is not available for text-to-image models; "
                                "measure them with benchmarks/text_to_image.py")

    @classmethod
    def load_data(cls, cfg):
        data = super().load_data(cfg)
        if data.captions is None:
            raise GanforgeError(f"--model {cfg.model} needs captioned data ({spellings('captions')}); "
                                f"{cfg.data} has no captions")
        return data

    def __init__(self, cfg, data, device, group=SINGLE, resume=None):
        super().__init__(cfg, data, device, group)
        # the checkpoint the encoder (and Stage-I) come from: the one resumed, or Stage-II's Stage-I run
        self.source = resume if resume is not None else self.stage1_checkpoint()
        self.encoder = (TextEncoder.from_state(self.source[0]["text"], self.source[1]) if self.source is not None
                        else TextEncoder.create(cfg, data, progress=group.main))
        # every image's captions as ids into one table of distinct captions, embedded once
        table = list(dict.fromkeys(c for cs in data.captions for c in cs))
        where = {c: i for i, c in enumerate(table)}
        width = max(map(len, data.captions))
        self.caption_ids = torch.tensor([[where[cs[j % len(cs)]] for j in range(width)] for cs in data.captions])
        self.caption_counts = torch.tensor([len(cs) for cs in data.captions])
        self.embeddings = self.encoder.encode(table, progress=self.group.main).to(device)
        image_side = getattr(self.encoder.backend, "image_net", None)  # none for minilm and older builtin runs
        # runs saved before text_match was written out (resolve) leave it to the model: the default now
        self.match_weight = self.with_match_weight(cfg, image_side=image_side is not None).text_match
        if self.match_weight and image_side is None:
            raise GanforgeError(f"text_match={cfg.text_match:g} needs the builtin text encoder's image side, which "
                                f"this {self.encoder.name} encoder has not (runs from before it was kept have none); "
                                "set text_match=0")
        self.match_net = image_side.to(device) if self.match_weight else None
        self.match_size = min(data.shape[-1] // self.upscale, MATCH_SIZE)  # the size its pretraining read
        # the panels' captions: the first caption of images spread over the data, the same every epoch
        picks = torch.linspace(0, len(data) - 1, PANEL_CAPTIONS).long().tolist()
        self.panel_captions = list(dict.fromkeys(data.captions[i][0] for i in picks))

    def stage1_checkpoint(self) -> tuple[dict, dict] | None:
        return None

    def spec(self):
        channels, size, _ = self.data.shape
        cfg = self.cfg
        return {"model": self.name, "image_size": size, "channels": channels, "text_dim": self.encoder.dim,
                "c_dim": cfg.c_dim, "g_width": cfg.g_width, "d_width": cfg.d_width, "d_norm": cfg.d_norm,
                "spectral_norm": cfg.spectral_norm}

    def condition(self, idx, step):
        """The embedding of one caption per image, drawn by a generator fixed by (seed, step)."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        share = torch.rand(len(idx) * self.group.world, generator=gen)[self.group.rank * len(idx):][:len(idx)]
        pick = (share * self.caption_counts[idx]).long()
        return self.embeddings[self.caption_ids[idx, pick].to(self.device)]

    def text_matching(self, image: torch.Tensor, cond: torch.Tensor) -> torch.Tensor | float:
        """The matching loss for G's loss (DAMSM-like): the frozen image encoder of the text encoder's
        pretraining scores each forgery, read at the size that pretraining saw (Stage-I's, at most MATCH_SIZE),
        against the batch's captions, and G is paid for picking its own (a cross-entropy over the batch; a caption
        that occurs twice counts both times). Nothing on D-only steps."""
        if self.match_net is None or not torch.is_grad_enabled():
            return 0.0
        if image.shape[-1] != self.match_size:
            image = F.interpolate(image.float(), size=self.match_size, mode="area")
        logits = F.normalize(self.match_net(image.float()), dim=1) @ cond.float().T * MATCH_SCALE
        same = (cond[:, None, :] == cond[None, :, :]).all(-1).float()
        loss = F.cross_entropy(logits, same / same.sum(1, keepdim=True))
        report("g_loss/match", loss)
        return self.match_weight * loss

    @staticmethod
    def mismatch(cond):
        return cond.roll(1, dims=0)  # each image with its neighbour's caption

    def panel(self, sampler, n, seed):
        """A row per panel caption (samples/captions.txt), the same noise down each column."""
        per_caption = max(n // len(self.panel_captions), 1)
        coarse, fine = sampler(self.panel_captions, per_caption, seed)
        return (coarse if fine is None else fine), per_caption

    def panel_files(self):
        return {"captions.txt": "".join(c + "\n" for c in self.panel_captions)}

    def extra_state(self):
        tensors, meta = self.encoder.state()
        return tensors, {"text": meta}

    @staticmethod
    def checkpoint_encoder(meta, tensors) -> TextEncoder:
        if "text" not in meta:
            raise GanforgeError("the checkpoint carries no text encoder")
        return TextEncoder.from_state(meta["text"], tensors)


@MODELS.register("stackgan1", "text to image, Stage-I: a coarse image from a caption (Zhang et al. 2017)")
class StageI(Captioned):
    generator = StageIGenerator

    @classmethod
    def load_data(cls, cfg):
        data = super().load_data(cfg)
        if cfg.image_size is None and data.shape[-1] > STAGE1_MAX:
            data.images = fit(data.images, STAGE1_MAX, data.shape[0])
        return data

    def spec(self):
        return super().spec() | {"z_dim": self.cfg.z_dim}

    @property
    def noise_dim(self):
        return self.cfg.z_dim + self.cfg.c_dim  # z, then the Conditioning Augmentation's eps

    def forge(self, G, z, cond):
        image, kl = G(z, cond, return_kl=True)
        report("g_loss/kl", kl)
        return image, self.cfg.kl_weight * kl + self.seek_modes(G, image, z, cond) + self.text_matching(image, cond)

    def sampler(self, G):
        return TextToImage(self.encoder, G)

    @classmethod
    def load_sampler(cls, meta, tensors, ema=True):
        G1 = load_net(meta["model_spec"], tensors, pick_generator(tensors, ema))
        return TextToImage(cls.checkpoint_encoder(meta, tensors), G1, meta=meta)


@MODELS.register("stackgan2", "text to image, Stage-II: refines a Stage-I run's images to twice the size")
class StageII(Captioned):
    generator = StageIIGenerator
    upscale = 2
    match_default = MATCH_WEIGHT_STAGE2
    options = (
        Option("stage1", str | None, None, "stackgan2: the Stage-I run (or checkpoint) to refine; its data and text "
               "encoder are used"),
        Option("res_blocks", int, 2, "stackgan2: residual blocks of G2", bounded(1, 64)),
        Option("consistency", float, CONSISTENCY, "stackgan2: weight of the consistency term in G2's loss: G2's "
               "image, averaged down to the Stage-I size, against the Stage-I image (mean absolute difference), "
               "so that Stage-II refines what Stage-I drew instead of redrawing it; 0: off", non_negative, before=0.0),
    )

    @classmethod
    def resolve(cls, cfg):
        """Stage-II trains on its Stage-I run's data and text encoder, at twice the Stage-I size."""
        if not cfg.stage1:
            raise GanforgeError("--model stackgan2 needs --stage1 RUN_DIR, a run trained with --model stackgan1")
        meta, _ = load_checkpoint(cfg.stage1)
        spec = meta["model_spec"]
        if spec.get("model") != "stackgan1":
            raise GanforgeError(f"--stage1 {cfg.stage1}: a {spec.get('model')} run; Stage-II refines a stackgan1 run")
        size = 2 * spec["image_size"]
        if cfg.image_size not in (None, size):
            raise GanforgeError(f"image_size={cfg.image_size}: Stage-II draws twice its Stage-I's size, {size}")
        s1 = meta["config"]
        if cfg.data not in (type(cfg).data, s1["data"]):
            raise GanforgeError(f"--data {cfg.data}: Stage-II trains on its Stage-I run's data ({s1['data']}); "
                                "leave --data out")
        cfg = dataclasses.replace(cfg, data=s1["data"], data_dir=s1["data_dir"], download=s1["download"],
                                  channels=spec["channels"], image_size=size, text_encoder=s1["text_encoder"])
        return cls.with_match_weight(cfg, image_side=has_image_side(meta["text"])).validate()

    def __init__(self, cfg, data, device, group=SINGLE, resume=None):
        super().__init__(cfg, data, device, group, resume)
        meta, tensors = self.source
        stage1 = meta["model_spec"].get("stage1", meta["model_spec"])  # a Stage-I run's, or this run's own
        self.stage1_spec = stage1
        # the frozen Stage-I: its EMA from a Stage-I run, or the copy this run's checkpoint carries
        which = "G1" if "stage1" in meta["model_spec"] else pick_generator(tensors)
        self.G1 = load_net(stage1, tensors, which).to(device)

    def stage1_checkpoint(self):
        return load_checkpoint(self.cfg.stage1)

    def spec(self):
        return super().spec() | {"res_blocks": self.cfg.res_blocks, "upsample": "bilinear", "stage1": self.stage1_spec}

    @property
    def noise_dim(self):
        return self.G1.z_dim + self.cfg.c_dim  # Stage-I's noise, then Stage-II's eps

    def forge(self, G, z, cond):
        def sketch(z, cond):
            with torch.no_grad():
                return self.G1(z[:, :self.G1.z_dim], cond)

        def draw(z, cond):
            return G(sketch(z, cond), z[:, self.G1.z_dim:], cond)

        coarse = sketch(z, cond)
        image, kl = G(coarse, z[:, self.G1.z_dim:], cond, return_kl=True)
        report("g_loss/kl", kl)
        return image, (self.cfg.kl_weight * kl + self.seek_modes(draw, image, z, cond)
                       + self.text_matching(image, cond) + self.keep_sketch(image, coarse))

    def keep_sketch(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor | float:
        """The consistency term for G2's loss: the weight times the mean absolute difference between G2's image
        averaged down to the Stage-I size (2x2 means) and the Stage-I image. Nothing on D-only steps."""
        if not self.cfg.consistency or not torch.is_grad_enabled():
            return 0.0
        loss = (F.avg_pool2d(image.float(), 2) - coarse.float()).abs().mean()
        report("g_loss/consistency", loss)
        return self.cfg.consistency * loss

    def sampler(self, G):
        return TextToImage(self.encoder, self.G1, G)

    def extra_state(self):
        tensors, meta = super().extra_state()
        return tensors | pack_state("G1", self.G1.state_dict()), meta

    @classmethod
    def load_sampler(cls, meta, tensors, ema=True):
        spec = meta["model_spec"]
        if not isinstance(spec.get("stage1"), dict):
            raise GanforgeError("a stackgan2 checkpoint's model_spec names no stage1")
        family_of(spec["stage1"])
        G1 = load_net(spec["stage1"], tensors, "G1")
        G2 = load_net(spec, tensors, pick_generator(tensors, ema))
        return TextToImage(cls.checkpoint_encoder(meta, tensors), G1, G2, meta)
