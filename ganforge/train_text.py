"""Training the text-to-image models: the Trainer with a caption as each image's condition.

Stage-I (`--model stackgan1`): the text encoder is pretrained on the captions (or minilm is
loaded), every caption is embedded once, and each step pairs every image with one of its captions
(drawn by a generator seeded by the step, so a resume needs no state). D is matching-aware: the
batch's captions rolled by one give it (real image, wrong caption) negatives. G's loss adds the
Conditioning Augmentation's KL term times kl_weight.
Stage-II (`--model stackgan2 --stage1 RUN`): the Stage-I run's text encoder and generator are
taken over and frozen; G2 refines G1(z, text) to twice its size. Its checkpoints carry both, so
`ganforge t2i` needs nothing but the Stage-II checkpoint.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ganforge.checkpoint import load_checkpoint, pack_state
from ganforge.config import TrainConfig
from ganforge.data import ImageData, fit, load_data
from ganforge.distributed import SINGLE, Group
from ganforge.errors import GanforgeError
from ganforge.models.text import TextEncoder, pretrain_builtin
from ganforge.sampling import save_grid
from ganforge.t2i import TextToImage, stage1_generator
from ganforge.train import Trainer

STAGE1_MAX = 32  # Stage-I's default size: the data's own, at most this (64-pixel faces are sketched at 32)
PANEL_CAPTIONS = 8


def resolve_stage1(cfg: TrainConfig) -> TrainConfig:
    """Stage-II trains on its Stage-I run's data and text encoder, at twice the Stage-I size."""
    if cfg.model != "stackgan2":
        return cfg
    if not cfg.stage1:
        raise GanforgeError("--model stackgan2 needs --stage1 RUN_DIR, a run trained with --model stackgan1")
    meta, _ = load_checkpoint(cfg.stage1)
    spec = meta.get("model_spec", {})
    if spec.get("model") != "stackgan1":
        raise GanforgeError(f"--stage1 {cfg.stage1}: a {spec.get('model')} run; Stage-II refines a stackgan1 run")
    size = 2 * spec["image_size"]
    if cfg.image_size not in (None, size):
        raise GanforgeError(f"image_size={cfg.image_size}: Stage-II draws twice its Stage-I's size, {size}")
    s1 = meta["config"]
    if cfg.data not in (TrainConfig.data, s1["data"]):
        raise GanforgeError(f"--data {cfg.data}: Stage-II trains on its Stage-I run's data ({s1['data']}); "
                            "leave --data out")
    return dataclasses.replace(cfg, data=s1["data"], data_dir=s1["data_dir"], download=s1["download"],
                               channels=spec["channels"], image_size=size,
                               text_encoder=s1["text_encoder"]).validate()


def load_captioned_data(cfg: TrainConfig) -> ImageData:
    data = load_data(cfg.data, cfg.image_size, cfg.channels, data_dir=cfg.data_dir, download=cfg.download)
    if data.captions is None:
        raise GanforgeError(f"--model {cfg.model} needs captioned data: captions:PATH, faces-captions or "
                            f"fashion-mnist-captions; {cfg.data} has no captions")
    if cfg.model == "stackgan1" and cfg.image_size is None and data.shape[-1] > STAGE1_MAX:
        data.images = fit(data.images, STAGE1_MAX, data.shape[0])
    return data


class TextTrainer(Trainer):
    def __init__(self, cfg: TrainConfig, run_dir: Path, data: ImageData,
                 carried: tuple[dict, dict] | None = None, group: Group = SINGLE):
        # carried: (meta, tensors) of the checkpoint the text encoder (and Stage-I) come from, when resuming
        self.carried = carried
        super().__init__(cfg, run_dir, data, group)
        if self.G1 is not None:
            self.noise_dim = self.G1.z_dim + self.G.z_dim
        # every image's captions as ids into one table of distinct captions, embedded once
        table = list(dict.fromkeys(c for cs in data.captions for c in cs))
        where = {c: i for i, c in enumerate(table)}
        width = max(map(len, data.captions))
        self.caption_ids = torch.tensor([[where[cs[j % len(cs)]] for j in range(width)] for cs in data.captions])
        self.caption_counts = torch.tensor([len(cs) for cs in data.captions])
        self.embeddings = self.encoder.encode(table, progress=group.main).to(self.device)
        # the panels' captions: the first caption of images spread over the data, the same every epoch
        picks = torch.linspace(0, len(data) - 1, PANEL_CAPTIONS).long().tolist()
        self.panel_captions = list(dict.fromkeys(data.captions[i][0] for i in picks))
        if group.main:
            (run_dir / "samples").mkdir(exist_ok=True)
            (run_dir / "samples" / "captions.txt").write_text("".join(c + "\n" for c in self.panel_captions))

    def make_spec(self) -> dict:
        cfg, data = self.cfg, self.data
        if self.carried is None and cfg.model == "stackgan2":
            self.carried = load_checkpoint(cfg.stage1)
        if self.carried is not None:
            meta, tensors = self.carried
            self.encoder = TextEncoder.from_state(meta["text"], tensors)
        elif cfg.text_encoder == "builtin":
            self.encoder, loss = pretrain_builtin(data.images, data.captions, cfg.text_dim, cfg.text_pretrain_steps,
                                                  seed=cfg.seed)
            tqdm.write(f"text encoder: {len(self.encoder.vocab) - 2} words, matching loss on held-out pairs "
                       f"{loss:.2f}", file=sys.stderr)
        else:
            self.encoder = TextEncoder(cfg.text_encoder)
        self.G1 = stage1_generator(*self.carried).to(self.device) if cfg.model == "stackgan2" else None
        spec = {"model": cfg.model, "image_size": data.shape[-1], "channels": data.shape[0],
                "text_dim": self.encoder.dim, "c_dim": cfg.c_dim, "g_width": cfg.g_width, "d_width": cfg.d_width,
                "d_norm": cfg.d_norm, "spectral_norm": cfg.spectral_norm}
        if cfg.model == "stackgan1":
            return spec | {"z_dim": cfg.z_dim}
        carried_spec = self.carried[0]["model_spec"]  # a Stage-I run's, or (resuming) this Stage-II run's own
        return spec | {"res_blocks": cfg.res_blocks, "stage1": carried_spec.get("stage1", carried_spec)}

    def condition(self, idx: torch.Tensor) -> torch.Tensor:
        """The embedding of one caption per image, drawn by a generator fixed by (seed, step)."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        share = torch.rand(len(idx) * self.group.world, generator=gen)[self.group.rank * len(idx):][:len(idx)]
        pick = (share * self.caption_counts[idx]).long()
        return self.embeddings[self.caption_ids[idx, pick].to(self.device)]

    def mismatch(self, cond: torch.Tensor) -> torch.Tensor:
        return cond.roll(1, dims=0)  # each image with its neighbour's caption

    def forge(self, z: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.G1 is None:
            image, kl = self.G_train(z, cond, return_kl=True)
        else:
            with torch.no_grad():
                coarse = self.G1(z[:, :self.G1.z_dim], cond)
            image, kl = self.G_train(coarse, z[:, self.G1.z_dim:], cond, return_kl=True)
        return image, self.cfg.kl_weight * kl

    @property
    def pipeline(self) -> TextToImage:
        return TextToImage(self.encoder, self.G1 or self.sampler, self.sampler if self.G1 is not None else None)

    def write_panel(self, epoch: int | None = None) -> Path:
        """A row per panel caption (samples/captions.txt), the same noise down each column."""
        epoch = self.epoch if epoch is None else epoch
        path = self.run_dir / "samples" / f"epoch_{epoch:04d}.png"
        per_caption = max(self.cfg.n_samples // len(self.panel_captions), 1)
        coarse, fine = self.pipeline(self.panel_captions, per_caption, self.fixed_seed)
        images = coarse if fine is None else fine
        save_grid(images, path, nrow=per_caption)
        if self.tensorboard:
            self.tensorboard.add_images("samples", images.add(1).div(2), self.step)
        return path

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = self.encoder.state()
        if self.G1 is not None:
            tensors |= pack_state("G1", self.G1.state_dict())
        return tensors, {"text": meta}
