"""The training loop: D and G take turns, the run folder records the contest.

train(cfg) makes a run folder and trains until the budget is spent; train(resume=RUN_DIR)
continues a run exactly where its latest checkpoint left it. One loop iteration (a "step"):
  1. a batch of real images x (and their labels y for a conditional GAN) and of noise z; forgeries G(z);
  2. D step: D's loss on x (real) and on G(z) (fake), plus any penalty, one Adam step on D;
  3. every n_critic-th step, G step: G's loss on D(G(z)) with D frozen, one Adam step on G, and
     the EMA of G's weights moves towards G.
Images pass through DiffAugment on their way into D when a policy is set. Stats stay on the device
and are read every `log_every` steps, the loop's only sync points.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ganforge.augment import AUGMENTATIONS, parse_policy
from ganforge.checkpoint import (
    load_checkpoint,
    load_module_state,
    optimizer_from_checkpoint,
    optimizer_to_checkpoint,
    pack_state,
    save_checkpoint,
    unpack_state,
)
from ganforge.config import TEXT_MODELS, TrainConfig
from ganforge.data import ImageData, load_data, to_float
from ganforge.errors import GanforgeError
from ganforge.losses import PROBABILITY_LOSSES, d_loss, g_loss, gradient_penalty, r1_penalty
from ganforge.models import build_discriminator, build_generator, is_conditional, model_spec
from ganforge.plots import plot_curves, plot_progress, read_stats
from ganforge.sampling import class_grid, default_labels, sample, save_grid

BUDGET_KEYS = ("steps", "epochs", "minutes")
STAT_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for the weights; buffers (batch-norm statistics) copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for e, m in zip(ema.buffers(), model.buffers()):
        e.copy_(m)


def ema_decay_at(decay: float, g_steps: int) -> float:
    """The decay after g_steps G updates, warmed up so that early samples do not show the initial weights."""
    return min(decay, (1 + g_steps) / (10 + g_steps))


def new_run_dir(runs_dir: Path, cfg: TrainConfig) -> Path:
    """runs/<NNNNN>-<model>-<data>/, numbered after the highest run already there."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in runs_dir.iterdir() if (m := re.match(r"(\d{5})-", p.name))]
    kind, sep, path = cfg.data.partition(":")
    data = f"{kind}-{Path(path).name}" if sep else cfg.data  # folder:/a/b -> folder-b
    data = re.sub(r"[^A-Za-z0-9_.-]+", "_", data)
    run_dir = runs_dir / f"{max(numbers, default=-1) + 1:05d}-{cfg.model}-{data}"
    run_dir.mkdir()
    return run_dir


def load_training_data(cfg: TrainConfig) -> ImageData:
    if cfg.model in TEXT_MODELS:
        from ganforge.train_text import load_captioned_data
        return load_captioned_data(cfg)
    return load_data(cfg.data, cfg.image_size, cfg.channels, data_dir=cfg.data_dir, download=cfg.download,
                     folder_labels=cfg.folder_labels)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: a permutation fixed by (seed, epoch), so resuming needs no state."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class _StopFlag:
    """Ctrl-C sets a flag that the loop reads between steps; a second Ctrl-C stops at once."""

    def __init__(self):
        self.set = False

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        tqdm.write("stopping after this step and saving a checkpoint (Ctrl-C again to abort without saving)",
                   file=sys.stderr)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)


class Trainer:
    """Everything a run holds: data, both networks, their optimizers, the RNGs and the counters."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, data: ImageData):
        self.cfg, self.run_dir, self.data = cfg.validate(), run_dir, data
        self.extractor = None  # for --eval-every; built before seeding, as it may train a classifier
        if cfg.eval_every:
            from ganforge.metrics.features import get_extractor
            default = f"classifier:{cfg.data}" if data.labels is not None else "pixels"
            self.extractor = get_extractor(cfg.eval_extractor or default)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        self.spec = self.make_spec()
        self.G, self.D = build_generator(self.spec), build_discriminator(self.spec)
        self.conditional = is_conditional(self.G)
        self.noise_dim = self.G.z_dim  # length of the noise drawn per forgery
        conv = cfg.model != "mlp"
        self.memory_format = torch.channels_last if cfg.channels_last and conv else torch.contiguous_format
        self.G.to(memory_format=self.memory_format)
        self.D.to(memory_format=self.memory_format)
        # the EMA of G: what samples, panels and measurements are drawn from
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if cfg.ema_decay is not None else None
        self.augmentations = [AUGMENTATIONS[name] for name in parse_policy(cfg.diffaugment)]  # parsed once
        betas = (cfg.beta1, cfg.beta2)
        # fused Adam: one kernel for all parameters (7x faster than the default loop on a CPU)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas, fused=True)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas, fused=True)
        self.noise_rng = torch.Generator().manual_seed(cfg.seed + 1)  # the training z's
        self.fixed_seed = cfg.seed + 2  # the panels' z's, the same every epoch
        # D's targets; one-sided smoothing moves only the real target towards the fake one
        self.real_target = cfg.real_label + cfg.label_smoothing * (cfg.fake_label - cfg.real_label)
        self.step = self.epoch = self.batch_in_epoch = self.images_seen = 0
        self.seconds = 0.0
        self.saved_step = None  # the step of the newest checkpoint on disk
        self.tensorboard = None  # a SummaryWriter with --tensorboard
        self.steps_per_epoch = len(data) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise GanforgeError(f"the data holds {len(data)} images, fewer than one batch "
                                f"(batch_size={cfg.batch_size}); use --set batch_size=N with N <= {len(data)}")

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator that samples are drawn from: the EMA when there is one."""
        return self.G_ema if self.G_ema is not None else self.G

    # --- what a model family changes: its networks' arguments, its condition, its forgeries
    def make_spec(self) -> dict:
        return model_spec(self.cfg, self.data.shape, self.data.classes)

    def condition(self, idx: torch.Tensor) -> torch.Tensor | None:
        """What G and D are conditioned on for the images at idx: their labels for a cGAN, else nothing."""
        return self.data.labels[idx] if self.conditional else None

    def forge(self, z: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | float]:
        """-> (G's forgeries, a regulariser added to G's loss)."""
        return self.G(z, *(() if cond is None else (cond,))), 0.0

    def mismatch(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """Conditions that do not match the real images, shown to D as negatives; None: no such term."""
        return None

    # --- one step of the game
    def train_step(self, real: torch.Tensor, cond: torch.Tensor | None = None) -> list[torch.Tensor]:
        """One D step and, every n_critic-th step, one G step -> [d_loss, g_loss or 0, D(x), D(G(z)), 1 if G stepped]."""
        cfg = self.cfg

        def D(x: torch.Tensor, cond: torch.Tensor | None = cond) -> torch.Tensor:  # D's output on augmented images
            for augment in self.augmentations:
                x = augment(x)
            return self.D(x, *(() if cond is None else (cond,)))

        g_turn = (self.step + 1) % cfg.n_critic == 0
        z = torch.randn(len(real), self.noise_dim, generator=self.noise_rng)
        with torch.set_grad_enabled(g_turn):  # no graph through G on D-only steps
            fake, g_extra = self.forge(z, cond)
        # D step: raise D's score on real images, lower it on forgeries (G is not updated)
        if cfg.r1_gamma:
            real = real.detach().requires_grad_(True)
        real_out, fake_out = D(real), D(fake.detach())
        wrong = self.mismatch(cond)  # matching-aware D: real images with the wrong condition are negatives too
        negatives = fake_out if wrong is None else torch.cat([fake_out, D(real.detach(), wrong)])
        loss_d = d_loss(real_out, negatives, self.real_target, cfg.fake_label, cfg.loss)
        total_d = loss_d
        if cfg.loss == "wgan-gp":
            total_d = total_d + cfg.gp_weight * gradient_penalty(D, real, fake)
        if cfg.r1_gamma:
            total_d = total_d + cfg.r1_gamma / 2 * r1_penalty(real_out, real)
        self.opt_d.zero_grad(set_to_none=True)
        total_d.backward()
        self.opt_d.step()
        if cfg.loss == "wgan":  # keep the critic Lipschitz by clipping its weights
            with torch.no_grad():
                for p in self.D.parameters():
                    p.clamp_(-cfg.clip, cfg.clip)
        loss_g = torch.zeros(())
        if g_turn:
            # G step: make the updated D score forgeries as real; D's weights need no gradients here
            self.D.requires_grad_(False)
            loss_g = g_loss(D(fake), cfg.loss, cfg.real_label, cfg.fake_label) + g_extra
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            self.D.requires_grad_(True)
            if self.G_ema is not None:
                ema_update(self.G_ema, self.G, ema_decay_at(cfg.ema_decay, (self.step + 1) // cfg.n_critic))
        with torch.no_grad():  # D's outputs as probabilities where they are logits, else raw scores
            score = torch.sigmoid if cfg.loss in PROBABILITY_LOSSES else torch.as_tensor
            d_real, d_fake = score(real_out.detach()).mean(), score(fake_out).mean()
        return [loss_d.detach(), loss_g.detach(), d_real, d_fake, torch.tensor(float(g_turn))]

    def stop_step(self) -> int | None:
        limits = [s for s in (self.cfg.steps, self.cfg.epochs and math.ceil(self.cfg.epochs * self.steps_per_epoch))
                  if s]
        return min(limits) if limits else None

    def budget_spent(self) -> bool:
        stop = self.stop_step()
        return bool((stop is not None and self.step >= stop)
                    or (self.cfg.minutes is not None and self.seconds >= 60 * self.cfg.minutes))

    # --- the loop
    def fit(self, progress: bool = True) -> bool:
        """Train until the budget is spent or Ctrl-C; returns True when stopped by Ctrl-C."""
        cfg, data = self.cfg, self.data
        images = data.images
        stats_path = self.run_dir / "stats.jsonl"
        self._truncate_stats(stats_path)
        if self.step == 0:
            self.write_panel()
        # in a log file rather than a terminal, a line every 30 s instead of a redraw 10 times a second
        bar = tqdm(total=self.stop_step(), initial=self.step, unit="step", disable=not progress,
                   mininterval=0.1 if sys.stderr.isatty() else 30,
                   dynamic_ncols=True, desc=self.run_dir.name + (f" ({cfg.minutes:g} min)" if cfg.minutes else ""))
        sums, summed = torch.zeros(len(STAT_KEYS) + 1), 0  # stats since the last line (and G steps), on the device
        logged_seconds, logged_images = self.seconds, self.images_seen  # at the last stats line
        interrupted = False
        with _StopFlag() as stop, open(stats_path, "a") as stats_file:
            while not self.budget_spent() and not interrupted:
                order = epoch_order(len(data), cfg.seed, self.epoch)
                started = time.perf_counter()
                while self.batch_in_epoch < self.steps_per_epoch:
                    idx = order[self.batch_in_epoch * cfg.batch_size:(self.batch_in_epoch + 1) * cfg.batch_size]
                    real = to_float(images[idx]).contiguous(memory_format=self.memory_format)
                    sums += torch.stack(self.train_step(real, self.condition(idx)))
                    summed += 1
                    self.step += 1
                    self.batch_in_epoch += 1
                    self.images_seen += len(idx)
                    now = time.perf_counter()
                    self.seconds += now - started
                    started = now
                    bar.update()
                    if self.step % cfg.log_every == 0:
                        rate = (self.images_seen - logged_images) / max(self.seconds - logged_seconds, 1e-9)
                        self._log(stats_file, sums, summed, bar, rate)
                        sums.zero_()
                        summed = 0
                        logged_seconds, logged_images = self.seconds, self.images_seen
                    if stop.set or self.budget_spent():
                        interrupted = stop.set
                        break
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        self.save()
                if self.batch_in_epoch == self.steps_per_epoch:  # a whole epoch is done
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self.write_panel()
                    if cfg.eval_every and self.epoch % cfg.eval_every == 0:
                        self.measure(stats_file)
                    self.save()
                    self.write_figures()  # panels and checkpoints are not counted as training time
        bar.close()
        if self.batch_in_epoch:  # stopped inside an epoch: a panel of where it stands
            self.write_panel(self.epoch + 1)
        self.save()
        self.write_figures()
        return interrupted

    def _log(self, stats_file, sums: torch.Tensor, summed: int, bar, rate: float) -> None:
        *totals, g_steps = sums.tolist()
        means = [t / max(g_steps if key == "g_loss" else summed, 1) for key, t in zip(STAT_KEYS, totals)]
        values = dict(zip(STAT_KEYS, (round(v, 5) for v in means)))
        record = {"step": self.step, "epoch": round(self.images_seen / len(self.data), 4),
                  "images_seen": self.images_seen, **values, "seconds": round(self.seconds, 2),
                  "images_per_s": round(rate, 1)}
        stats_file.write(json.dumps(record) + "\n")
        stats_file.flush()
        bar.set_postfix(d_loss=f"{values['d_loss']:.3f}", g_loss=f"{values['g_loss']:.3f}",
                        **{"D(x)": f"{values['d_real']:.2f}", "D(G(z))": f"{values['d_fake']:.2f}"},
                        img_s=f"{rate:.0f}", refresh=False)
        if self.tensorboard:
            for key, value in record.items():
                if key != "step":
                    self.tensorboard.add_scalar(key, value, self.step)

    def measure(self, stats_file) -> None:
        """Append a quality measurement of G's samples (FID and friends) to stats.jsonl."""
        from ganforge.data import to_uint8
        from ganforge.metrics.evaluate import evaluate

        n = min(self.cfg.eval_n, len(self.data))
        labels = default_labels(self.G, n)
        result = evaluate(to_uint8(sample(self.sampler, n, self.fixed_seed + 1, labels)), self.cfg.data,
                          self.extractor, n, self.cfg.data_dir, requested_labels=labels)
        record = {"step": self.step, "epoch": round(self.images_seen / len(self.data), 4),
                  "images_seen": self.images_seen, "seconds": round(self.seconds, 2), **result}
        stats_file.write(json.dumps(record) + "\n")
        stats_file.flush()
        tqdm.write(f"epoch {self.epoch}: FID {result['fid']:.3f} ({result['extractor']}, n={n})", file=sys.stderr)

    def _truncate_stats(self, path: Path) -> None:
        """On resume, drop stats logged after the checkpoint: they will be logged again."""
        if path.is_file():
            kept = [s for s in read_stats(path) if s["step"] <= self.step]
            path.write_text("".join(json.dumps(s) + "\n" for s in kept))

    # --- outputs
    def write_panel(self, epoch: int | None = None) -> Path:
        epoch = self.epoch if epoch is None else epoch
        path = self.run_dir / "samples" / f"epoch_{epoch:04d}.png"
        path.parent.mkdir(exist_ok=True)
        if self.conditional:  # a row per class, the same noise down each column
            per_class = max(self.cfg.n_samples // self.G.n_classes, 1)
            images = class_grid(self.sampler, per_class, self.fixed_seed)
            save_grid(images, path, nrow=per_class)
        else:
            images = sample(self.sampler, self.cfg.n_samples, self.fixed_seed)
            save_grid(images, path)
        if self.tensorboard:
            self.tensorboard.add_images("samples", images.add(1).div(2), self.step)
        return path

    def write_figures(self) -> None:
        plot_curves(read_stats(self.run_dir / "stats.jsonl"), self.run_dir / "curves.png",
                    title=f"{self.run_dir.name}: the contest ({self.cfg.loss})",
                    probabilities=self.cfg.loss in PROBABILITY_LOSSES)
        plot_progress(sorted((self.run_dir / "samples").glob("epoch_*.png")), self.run_dir / "progress.png")

    # --- checkpoints
    def save(self) -> None:
        if self.saved_step == self.step:
            return
        self.saved_step = self.step
        tensors = {**pack_state("G", self.G.state_dict()), **pack_state("D", self.D.state_dict()),
                   "rng/torch": torch.get_rng_state(), "rng/noise": self.noise_rng.get_state()}
        if self.G_ema is not None:
            tensors |= pack_state("G_ema", self.G_ema.state_dict())
        extra_tensors, extra_meta = self.extra_state()
        opt_g_tensors, opt_g_meta = optimizer_to_checkpoint("opt_g", self.opt_g)
        opt_d_tensors, opt_d_meta = optimizer_to_checkpoint("opt_d", self.opt_d)
        np_state = np.random.get_state()
        meta = {
            "model_spec": self.spec, "config": self.cfg.to_dict(),
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "images_seen": self.images_seen,
            "seconds": self.seconds, "opt_g": opt_g_meta, "opt_d": opt_d_meta, **extra_meta,
            "rng": {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                    "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]},
        }
        save_checkpoint(self.run_dir / "checkpoints", self.step,
                        {**tensors, **extra_tensors, **opt_g_tensors, **opt_d_tensors}, meta,
                        keep=self.cfg.keep_checkpoints)

    def extra_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """What a model family adds to its checkpoints besides the networks, optimizers and RNGs."""
        return {}, {}

    def restore(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        if meta["model_spec"] != self.spec:
            raise GanforgeError(f"checkpoint model {meta['model_spec']} does not match the config's {self.spec}")
        load_module_state(self.G, unpack_state("G", tensors), "G")
        load_module_state(self.D, unpack_state("D", tensors), "D")
        if self.G_ema is not None:
            load_module_state(self.G_ema, unpack_state("G_ema", tensors), "G_ema")
        optimizer_from_checkpoint("opt_g", self.opt_g, tensors, meta["opt_g"])
        optimizer_from_checkpoint("opt_d", self.opt_d, tensors, meta["opt_d"])
        torch.set_rng_state(tensors["rng/torch"])
        self.noise_rng.set_state(tensors["rng/noise"])
        kind, keys, *rest = meta["rng"]["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
        version, internal, gauss = meta["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
        self.step, self.epoch = meta["step"], meta["epoch"]
        self.batch_in_epoch, self.images_seen, self.seconds = meta["batch_in_epoch"], meta["images_seen"], meta["seconds"]
        self.saved_step = self.step


def train(cfg: TrainConfig | None = None, runs_dir: str | Path = "runs", resume: str | Path | None = None,
          budget: dict | None = None, progress: bool = True) -> Path:
    """Train a GAN and return its run folder.

    cfg: a new run's config, budget included (ignored with `resume`). resume: a run folder to
    continue from its latest checkpoint; a `budget` ({"steps": .., "epochs": .., "minutes": ..})
    with any value set then replaces the run's budget.
    """
    meta = tensors = None
    if resume is not None:
        run_dir = Path(resume).expanduser()
        meta, tensors = load_checkpoint(run_dir)
        cfg = TrainConfig.from_dict(meta["config"])
        if budget and any(v is not None for v in budget.values()):
            cfg = dataclasses.replace(cfg, **{k: budget.get(k) for k in BUDGET_KEYS}).validate()
    else:
        cfg = (cfg or TrainConfig()).validate()
    if cfg.model in TEXT_MODELS:
        from ganforge.train_text import TextTrainer, resolve_stage1
        if resume is None:
            cfg = resolve_stage1(cfg)
        data = load_training_data(cfg)
        run_dir = run_dir if resume is not None else new_run_dir(Path(runs_dir), cfg)
        trainer = TextTrainer(cfg, run_dir, data, None if meta is None else (meta, tensors))
    else:
        data = load_training_data(cfg)
        run_dir = run_dir if resume is not None else new_run_dir(Path(runs_dir), cfg)
        trainer = Trainer(cfg, run_dir, data)
    if meta is not None:
        trainer.restore(meta, tensors)
        if trainer.budget_spent():
            print(f"{run_dir}: already trained to step {trainer.step}, its budget; "
                  "pass --steps, --epochs or --minutes to go further", file=sys.stderr)
            return run_dir
    (run_dir / "config.json").write_text(json.dumps({**cfg.to_dict(), "model_spec": trainer.spec}, indent=1) + "\n")
    if cfg.tensorboard:
        trainer.tensorboard = _tensorboard_writer(run_dir)
    try:
        interrupted = trainer.fit(progress=progress)
    finally:
        if trainer.tensorboard:
            trainer.tensorboard.close()
    if interrupted:
        print(f"interrupted at step {trainer.step}; checkpoint saved. Resume with:\n"
              f"  ganforge train --resume {run_dir}", file=sys.stderr)
    return run_dir


def _tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GanforgeError("--tensorboard needs the tensorboard package: pip install 'ganforge[tensorboard]'") from None
    return SummaryWriter(str(run_dir / "tensorboard"))
