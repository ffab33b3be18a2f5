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

import contextlib
import copy
import dataclasses
import json
import math
import random
import re
import signal
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ganforge.augment import AUGMENTATIONS, parse_policy
from ganforge.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_module_state,
    optimizer_from_checkpoint,
    optimizer_to_checkpoint,
    pack_state,
    save_checkpoint,
    unpack_state,
    write_atomic,
)
from ganforge.config import TEXT_MODELS, TrainConfig
from ganforge.data import ImageData, load_data, to_float
from ganforge.distributed import (
    SINGLE,
    Group,
    any_rank,
    broadcast,
    broadcast_buffers,
    compiler_missing,
    mean_over_ranks,
    resolve_device,
    setup,
    teardown,
)
from ganforge.errors import GanforgeError
from ganforge.losses import PROBABILITY_LOSSES, d_loss, g_loss, gradient_penalty, r1_penalty
from ganforge.models import build_discriminator, build_generator, is_conditional, model_spec
from ganforge.plots import plot_curves, plot_progress, read_stats
from ganforge.sampling import class_grid, default_labels, sample, save_grid

BUDGET_KEYS = ("steps", "epochs", "minutes")
STAT_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")
D_WINS_LINES = 4  # consecutive stats lines with D near-perfect before the warning that G starves
COLLAPSE_RECALL = 0.05  # an --eval-every recall below this warns of mode collapse
SYNC_EVERY = 10  # steps between the points where several processes agree on Ctrl-C and the clock


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
    """runs/<NNNNN>-<model>-<data>/, numbered after the highest run already there, with its config.json."""
    kind, sep, path = cfg.data.partition(":")
    data = f"{kind}-{Path(path).name}" if sep else cfg.data  # folder:/a/b -> folder-b
    data = re.sub(r"[^A-Za-z0-9_.-]+", "_", data)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in runs_dir.iterdir() if (m := re.match(r"(\d{5})-", p.name))]
        run_dir = runs_dir / f"{max(numbers, default=-1) + 1:05d}-{cfg.model}-{data}"
        run_dir.mkdir()
        write_config(run_dir, cfg)  # at once: a run killed before its first checkpoint can still resume
    except OSError as e:
        raise GanforgeError(f"cannot create a run folder in {runs_dir}: {e.strerror or e}; "
                            "choose another place with --out") from None
    return run_dir


def write_config(run_dir: Path, cfg: TrainConfig, spec: dict | None = None) -> None:
    write_atomic(run_dir / "config.json",
                 (json.dumps({**cfg.to_dict(), **({"model_spec": spec} if spec else {})}, indent=1) + "\n").encode())


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
    """Ctrl-C (or SIGTERM, which torchrun sends its workers on Ctrl-C) sets a flag that the loop reads
    between steps; a second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.set = False

    def __enter__(self):
        self._previous = [signal.signal(s, self._handle) for s in self.SIGNALS]
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        tqdm.write("stopping after this step and saving a checkpoint (Ctrl-C again to abort without saving)",
                   file=sys.stderr)

    def __exit__(self, *exc):
        for s, previous in zip(self.SIGNALS, self._previous):
            signal.signal(s, previous)


class Trainer:
    """Everything a run holds: data, both networks, their optimizers, the RNGs and the counters."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, data: ImageData, group: Group = SINGLE):
        self.cfg, self.run_dir, self.data, self.group = cfg.validate(), run_dir, data, group
        self.device = resolve_device(cfg.device, group.local_rank)
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise GanforgeError("precision=fp16 needs a CUDA device; on a CPU train in fp32 (or bf16)")
        if cfg.sync_bn and group.enabled and self.device.type != "cuda":
            raise GanforgeError("sync_bn needs CUDA devices (NCCL); on CPUs each process normalises its own batch")
        self.extractor = None  # for --eval-every, on rank 0; built before seeding, as it may train itself
        if cfg.eval_every and group.main:
            from ganforge.metrics.evaluate import default_extractor
            from ganforge.metrics.features import get_extractor
            self.extractor = get_extractor(cfg.eval_extractor or default_extractor(data, cfg.data),
                                           image_size=data.shape[-1], channels=data.shape[0])
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        self.spec = self.make_spec()
        self.G, self.D = build_generator(self.spec), build_discriminator(self.spec)
        self.conditional = is_conditional(self.G)
        self.noise_dim = self.G.z_dim  # length of the noise drawn per forgery
        conv = cfg.model != "mlp"
        self.memory_format = torch.channels_last if cfg.channels_last and conv else torch.contiguous_format
        if cfg.sync_bn and group.enabled:  # batch statistics over every rank's batch
            self.G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            self.D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
        self.G.to(self.device, memory_format=self.memory_format)
        self.D.to(self.device, memory_format=self.memory_format)
        # the EMA of G: what samples, panels and measurements are drawn from
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if cfg.ema_decay is not None else None
        self.augmentations = [AUGMENTATIONS[name] for name in parse_policy(cfg.diffaugment)]  # parsed once
        betas = (cfg.beta1, cfg.beta2)
        # fused Adam: one kernel for all parameters (7x faster than the default loop on a CPU)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas, fused=True)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas, fused=True)
        # mixed precision: autocast to bf16 or fp16; fp16 losses are scaled so small gradients survive
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.G_train, self.D_train, self.D_frozen = self._wrap()
        if group.rank:  # other augmentation and penalty draws on each rank; the weights start equal
            torch.manual_seed(cfg.seed * 1_000_003 + 7919 * group.rank)
        self.noise_rng = torch.Generator().manual_seed(cfg.seed + 1)  # the training z's
        self.fixed_seed = cfg.seed + 2  # the panels' z's, the same every epoch
        # D's targets; one-sided smoothing moves only the real target towards the fake one
        self.real_target = cfg.real_label + cfg.label_smoothing * (cfg.fake_label - cfg.real_label)
        self.step = self.epoch = self.batch_in_epoch = self.images_seen = 0
        self.seconds = 0.0
        self.saved_step = None  # the step of the newest checkpoint on disk
        self.rollbacks = 0  # returns to the last good checkpoint after a non-finite loss
        self.resumed_with: dict = {}  # config keys a resume changed: {key: [old, new]}
        self.d_wins = 0  # consecutive stats lines in which D was right about nearly everything
        self.tensorboard = None  # a SummaryWriter with --tensorboard
        self.global_batch = cfg.batch_size * group.world  # each rank takes batch_size of it
        self.steps_per_epoch = len(data) // self.global_batch
        if self.steps_per_epoch == 0:
            raise GanforgeError(f"the data holds {len(data)} images, fewer than one batch of {self.global_batch} "
                                f"(batch_size={cfg.batch_size} x {group.world} processes); use --set batch_size=N")

    def _wrap(self) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
        """(G, D) as trained: in DistributedDataParallel across processes, compiled with --compile; and D
        for the G step, unwrapped (D is not updated there, so its gradients need no averaging)."""
        G, D, D_frozen = self.G, self.D, self.D
        if self.group.enabled:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            # gradients as views into the all-reduce buckets: no copy, and no layout mismatch with channels_last
            G, D = (DistributedDataParallel(net, device_ids=ids, gradient_as_bucket_view=True) for net in (G, D))
        if self.cfg.compile:
            why = compiler_missing(self.device)
            if why:
                tqdm.write(f"warning: --compile: {why}; training without it", file=sys.stderr)
            else:
                G = torch.compile(G)
                # penalties on D's input gradient need a double backward, which compiled graphs lack
                if self.cfg.loss != "wgan-gp" and not self.cfg.r1_gamma:
                    D, D_frozen = torch.compile(D), torch.compile(D_frozen)
        return G, D, D_frozen

    def _loss_scale(self) -> float:
        """fp16's current loss scale (a host sync, so asked for only by the penalties that need it), else 1."""
        return self.scaler_d.get_scale() if self.scaler_d.is_enabled() else 1.0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator that samples are drawn from: the EMA when there is one."""
        return self.G_ema if self.G_ema is not None else self.G

    # --- what a model family changes: its networks' arguments, its condition, its forgeries
    def make_spec(self) -> dict:
        return model_spec(self.cfg, self.data.shape, self.data.classes)

    def condition(self, idx: torch.Tensor) -> torch.Tensor | None:
        """What G and D are conditioned on for the images at idx: their labels for a cGAN, else nothing."""
        return self.data.labels[idx].to(self.device) if self.conditional else None

    def forge(self, z: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | float]:
        """-> (G's forgeries, a regulariser added to G's loss)."""
        return self.G_train(z, *(() if cond is None else (cond,))), 0.0

    def mismatch(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """Conditions that do not match the real images, shown to D as negatives; None: no such term."""
        return None

    # --- one step of the game
    def train_step(self, real: torch.Tensor, cond: torch.Tensor | None = None) -> list[torch.Tensor]:
        """One D step and, every n_critic-th step, one G step -> [d_loss, g_loss or 0, D(x), D(G(z)), 1 if G stepped]."""
        cfg = self.cfg

        def D(x: torch.Tensor, cond: torch.Tensor | None = cond, net: torch.nn.Module = self.D_train) -> torch.Tensor:
            for augment in self.augmentations:  # D's output on augmented images
                x = augment(x)
            return net(x, *(() if cond is None else (cond,)))

        g_turn = (self.step + 1) % cfg.n_critic == 0
        # every rank draws the whole batch's noise and takes its share: the same z's as one process
        B, rank = len(real), self.group.rank
        z = torch.randn(B * self.group.world, self.noise_dim, generator=self.noise_rng)[rank * B:(rank + 1) * B]
        with torch.set_grad_enabled(g_turn), self.autocast():  # no graph through G on D-only steps
            fake, g_extra = self.forge(z.to(self.device), cond)
        # D step: raise D's score on real images, lower it on forgeries (G is not updated)
        if cfg.r1_gamma:
            real = real.detach().requires_grad_(True)
        with self.autocast():
            real_out, fake_out = D(real), D(fake.detach())
            wrong = self.mismatch(cond)  # matching-aware D: real images with the wrong condition are negatives too
            negatives = fake_out if wrong is None else torch.cat([fake_out, D(real.detach(), wrong)])
            loss_d = d_loss(real_out.float(), negatives.float(), self.real_target, cfg.fake_label, cfg.loss)
            total_d = loss_d
            # the penalties differentiate D itself (not a DDP or compiled wrapper), scaled like the loss
            if cfg.loss == "wgan-gp":
                total_d = total_d + cfg.gp_weight * gradient_penalty(partial(D, net=self.D), real, fake,
                                                                     scale=self._loss_scale())
            if cfg.r1_gamma:
                out = real_out if self.D_train is self.D else D(real, net=self.D)
                total_d = total_d + cfg.r1_gamma / 2 * r1_penalty(out, real, self._loss_scale())
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(total_d).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        if cfg.loss == "wgan":  # keep the critic Lipschitz by clipping its weights
            with torch.no_grad():
                for p in self.D.parameters():
                    p.clamp_(-cfg.clip, cfg.clip)
        loss_g = torch.zeros((), device=self.device)
        if g_turn:
            # G step: make the updated D score forgeries as real; D's weights need no gradients here
            self.D.requires_grad_(False)
            with self.autocast():
                loss_g = g_loss(D(fake, net=self.D_frozen).float(), cfg.loss, cfg.real_label, cfg.fake_label) + g_extra
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(loss_g).backward()
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
            self.D.requires_grad_(True)
            if self.G_ema is not None:
                ema_update(self.G_ema, self.G, ema_decay_at(cfg.ema_decay, (self.step + 1) // cfg.n_critic))
        with torch.no_grad():  # D's outputs as probabilities where they are logits, else raw scores
            score = torch.sigmoid if cfg.loss in PROBABILITY_LOSSES else torch.as_tensor
            d_real, d_fake = score(real_out.detach().float()).mean(), score(fake_out.float()).mean()
        return [loss_d.detach(), loss_g.detach(), d_real, d_fake, torch.tensor(float(g_turn), device=self.device)]

    def stop_step(self) -> int | None:
        limits = [s for s in (self.cfg.steps, self.cfg.epochs and math.ceil(self.cfg.epochs * self.steps_per_epoch))
                  if s]
        return min(limits) if limits else None

    def budget_spent(self) -> bool:
        stop = self.stop_step()
        return bool((stop is not None and self.step >= stop)
                    or (self.cfg.minutes is not None and self.seconds >= 60 * self.cfg.minutes))

    def _stop_now(self, stop: _StopFlag, sync: bool) -> tuple[bool, bool]:
        """(stop after this step, because of Ctrl-C), the same on every rank: the step budget is, and
        the clock and Ctrl-C are agreed on at sync points (every step for a single process)."""
        limit = self.stop_step()
        if limit is not None and self.step >= limit:
            return True, False
        if self.group.enabled and not sync:
            return False, False
        minutes_up = self.cfg.minutes is not None and self.seconds >= 60 * self.cfg.minutes
        interrupted, minutes_up = any_rank(self.group, [stop.set, minutes_up], self.device)
        return interrupted or minutes_up, interrupted

    # --- the loop
    def fit(self, progress: bool = True) -> bool:
        """Train until the budget is spent or Ctrl-C; returns True when stopped by Ctrl-C."""
        cfg, data, main = self.cfg, self.data, self.group.main
        images = data.images
        stats_path = self.run_dir / "stats.jsonl"
        if main:
            self._truncate_stats(stats_path)
            if self.resumed_with:  # what this resume changed, old and new values
                with open(stats_path, "a") as f:
                    f.write(json.dumps({"step": self.step, "event": "resume", "changed": self.resumed_with}) + "\n")
            if self.step == 0:
                self.write_panel()
        if self.step == 0:
            self.save()  # a checkpoint to resume from, or to roll back to, from the first step on
        # in a log file rather than a terminal, a line every 30 s instead of a redraw 10 times a second
        bar = tqdm(total=self.stop_step(), initial=self.step, unit="step", disable=not progress or not main,
                   mininterval=0.1 if sys.stderr.isatty() else 30,
                   dynamic_ncols=True, desc=self.run_dir.name + (f" ({cfg.minutes:g} min)" if cfg.minutes else ""))
        # stats since the last line (and the G steps among them), kept on the device
        sums, summed = torch.zeros(len(STAT_KEYS) + 1, device=self.device), 0
        logged_seconds, logged_images = self.seconds, self.images_seen  # at the last stats line
        done = interrupted = False
        with _StopFlag() as stop, (open(stats_path, "a") if main else contextlib.nullcontext()) as stats_file:
            while not done:
                order = epoch_order(len(data), cfg.seed, self.epoch)
                started = time.perf_counter()
                while self.batch_in_epoch < self.steps_per_epoch:
                    # this rank's share of the step's batch: the same images as one process would take
                    first = self.batch_in_epoch * self.global_batch + self.group.rank * cfg.batch_size
                    idx = order[first:first + cfg.batch_size]
                    real = to_float(images[idx].to(self.device, non_blocking=True))
                    real = real.contiguous(memory_format=self.memory_format)
                    stats = torch.stack(self.train_step(real, self.condition(idx)))
                    if self._diverged(stats[:2]):  # a non-finite loss: back to the last good checkpoint
                        self.rollback(f"non-finite {'d_loss' if not torch.isfinite(stats[0]) else 'g_loss'}",
                                      stats_path if main else None)
                        sums.zero_()
                        summed = 0
                        logged_seconds, logged_images = self.seconds, self.images_seen
                        bar.n = self.step
                        bar.refresh()
                        break  # the epoch and its order may have changed
                    sums += stats
                    summed += 1
                    self.step += 1
                    self.batch_in_epoch += 1
                    self.images_seen += self.global_batch
                    now = time.perf_counter()
                    self.seconds += now - started
                    started = now
                    bar.update()
                    if self.step % cfg.log_every == 0:
                        rate = (self.images_seen - logged_images) / max(self.seconds - logged_seconds, 1e-9)
                        means = mean_over_ranks(self.group, sums)
                        if main:
                            self._log(stats_file, means, summed, bar, rate)
                        sums.zero_()
                        summed = 0
                        logged_seconds, logged_images = self.seconds, self.images_seen
                    done, interrupted = self._stop_now(stop, sync=self.step % SYNC_EVERY == 0)
                    if done:
                        break
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        self.save()
                        started = time.perf_counter()  # checkpoints are not counted as training time
                if self.batch_in_epoch == self.steps_per_epoch:  # a whole epoch is done
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if main:
                        self.write_panel()
                    self.save()  # before measuring: a measurement that fails loses no training
                    if main:
                        if cfg.eval_every and self.epoch % cfg.eval_every == 0:
                            self.measure(stats_file)
                        self.write_figures()  # panels, checkpoints, measurements are not counted as training time
                    if not done:
                        done, interrupted = self._stop_now(stop, sync=True)
        bar.close()
        broadcast_buffers(self.group, *(m for m in (self.G, self.D, self.G_ema) if m is not None))
        if main and self.batch_in_epoch:  # stopped inside an epoch: a panel of where it stands
            self.write_panel(self.epoch + 1)
        self.save()
        if main:
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
        if self.cfg.loss in PROBABILITY_LOSSES:  # D right about nearly every image, line after line: G starves
            self.d_wins = self.d_wins + 1 if values["d_real"] > 0.99 and values["d_fake"] < 0.01 else 0
            if self.d_wins == D_WINS_LINES:
                self._warn(stats_file, "d_wins", f"D has told real from fake almost perfectly for {D_WINS_LINES} "
                           f"stats lines (D(x) {values['d_real']:.3f}, D(G(z)) {values['d_fake']:.3f}): G gets "
                           "little gradient. Try --set label_smoothing=0.1, a lower lr_d, diffaugment, or --loss hinge")
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
        if result.get("recall", 1.0) < COLLAPSE_RECALL:
            self._warn(stats_file, "collapse", f"the samples cover little of the data (recall {result['recall']:.3f} "
                       f"in {result['extractor']}'s features, below {COLLAPSE_RECALL}): mode collapse? Try "
                       "--set diffaugment=color,translation, --loss hinge, or resume an earlier checkpoint")

    def _warn(self, stats_file, kind: str, message: str) -> None:
        """A warning, not a stop: on the terminal and as an event in stats.jsonl."""
        tqdm.write(f"warning: {message}", file=sys.stderr)
        stats_file.write(json.dumps({"step": self.step, "event": "warning", "kind": kind, "message": message}) + "\n")
        stats_file.flush()

    def _diverged(self, losses: torch.Tensor) -> bool:
        """Whether this step's losses are not finite (on any rank: the ranks agree, as their weights do)."""
        bad = not bool(torch.isfinite(losses).all())
        return any_rank(self.group, [bad], self.device)[0] if self.group.enabled else bad

    def rollback(self, reason: str, stats_path: Path | None) -> None:
        """Go back to the newest checkpoint with the learning rates times nan_lr_factor, and log it; after
        max_rollbacks, stop with what happened and what to try."""
        cfg, bad_step = self.cfg, self.step + 1
        self.rollbacks += 1
        if self.rollbacks > cfg.max_rollbacks:
            raise GanforgeError(
                f"training diverged: {reason} at step {bad_step}, again after {cfg.max_rollbacks} rollback(s) to the "
                f"last good checkpoint with the learning rates x{cfg.nan_lr_factor} each time. Try lower lr_g / lr_d, "
                "--set spectral_norm=true, --loss hinge, --set r1_gamma=1, or --precision fp32; "
                f"the last good checkpoint is in {self.run_dir / 'checkpoints'}")
        rollbacks = self.rollbacks
        self.restore(*load_checkpoint(self.run_dir))
        self.rollbacks = rollbacks
        factor = cfg.nan_lr_factor ** rollbacks
        for opt, lr in ((self.opt_g, cfg.lr_g), (self.opt_d, cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor
        message = (f"{reason} at step {bad_step}: rolled back to step {self.step} with learning rates "
                   f"x{factor:g} (rollback {rollbacks} of at most {cfg.max_rollbacks})")
        tqdm.write(f"warning: {message}", file=sys.stderr)
        if stats_path is not None:
            self._truncate_stats(stats_path, in_place=True)
            with open(stats_path, "a") as f:
                f.write(json.dumps({"step": self.step, "event": "rollback", "reason": reason, "at_step": bad_step,
                                    "lr_g": cfg.lr_g * factor, "lr_d": cfg.lr_d * factor, "message": message}) + "\n")

    def _truncate_stats(self, path: Path, in_place: bool = False) -> None:
        """On resume or rollback, drop stats logged after the checkpoint: they will be logged again.
        Atomically when the file is not open; in place (the same file) under the loop's open handle."""
        if path.is_file():
            text = "".join(json.dumps(s) + "\n" for s in read_stats(path) if s.get("step", 0) <= self.step)
            if in_place:
                with open(path, "w") as f:
                    f.write(text)
            else:
                write_atomic(path, text.encode())

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
        """Rank 0 writes the checkpoint (every rank holds the same weights); the others wait for it."""
        if self.saved_step == self.step:
            return
        self.saved_step = self.step
        if self.group.main:
            weights = [*self.G.parameters(), *self.D.parameters()]
            if not all(bool(torch.isfinite(w).all()) for w in weights):  # never keep a diverged state
                raise GanforgeError(f"step {self.step}: G or D holds non-finite weights; not saving them. The last "
                                    f"good checkpoint is in {self.run_dir / 'checkpoints'}")
            try:
                self._write_checkpoint()
            except OSError as e:
                for tmp in (self.run_dir / "checkpoints").glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
                good = list_checkpoints(self.run_dir / "checkpoints")
                raise GanforgeError(f"cannot write the checkpoint of step {self.step} in {self.run_dir / 'checkpoints'}: "
                                    f"{e.strerror or e}. The last good one, {good[-1].stem if good else 'none'}, is "
                                    "intact; free some space (or make the folder writable) and resume") from None
        if self.group.enabled:
            torch.distributed.barrier()

    def _write_checkpoint(self) -> None:
        tensors = {**pack_state("G", self.G.state_dict()), **pack_state("D", self.D.state_dict()),
                   "rng/torch": torch.get_rng_state(), "rng/noise": self.noise_rng.get_state()}
        if self.device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device)
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
            "rollbacks": self.rollbacks, "world_size": self.group.world, "scaler_d": self.scaler_d.state_dict(), "scaler_g": self.scaler_g.state_dict(),
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
        if self.device.type == "cuda" and "rng/cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)
        self.noise_rng.set_state(tensors["rng/noise"])
        for scaler, key in ((self.scaler_d, "scaler_d"), (self.scaler_g, "scaler_g")):
            if scaler.is_enabled() and meta.get(key):
                scaler.load_state_dict(meta[key])
        kind, keys, *rest = meta["rng"]["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
        version, internal, gauss = meta["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
        self.step, self.epoch = meta["step"], meta["epoch"]
        self.batch_in_epoch, self.images_seen, self.seconds = meta["batch_in_epoch"], meta["images_seen"], meta["seconds"]
        self.rollbacks = meta.get("rollbacks", 0)
        saved_world = meta.get("world_size", 1)
        if saved_world != self.group.world:  # the same place in the epoch, counted in the new global batches
            done = self.batch_in_epoch * self.cfg.batch_size * saved_world
            self.batch_in_epoch = min(done // self.global_batch, self.steps_per_epoch - 1)
            if self.group.main:
                tqdm.write(f"resuming a {saved_world}-process run with {self.group.world} process(es): the global "
                           f"batch is now {self.global_batch}; the epoch goes on from image {done:,}", file=sys.stderr)
        if self.group.rank:
            torch.manual_seed(self.cfg.seed * 1_000_003 + 7919 * self.group.rank + self.step)
        self.saved_step = self.step


RUNTIME_KEYS = ("device", "precision", "compile", "sync_bn")  # how to train, not what: a resume may change them
# what is measured and recorded, which changes neither the model nor the data order: a resume may change them too
RECORD_KEYS = ("eval_every", "eval_n", "eval_extractor", "log_every", "tensorboard")


def train(cfg: TrainConfig | None = None, runs_dir: str | Path = "runs", resume: str | Path | None = None,
          budget: dict | None = None, progress: bool = True, runtime: dict | None = None,
          record: dict | None = None) -> Path:
    """Train a GAN and return its run folder.

    cfg: a new run's config, budget included (ignored with `resume`). resume: a run folder to
    continue from its latest checkpoint; a `budget` ({"steps": .., "epochs": .., "minutes": ..})
    with any value set then replaces the run's budget, `runtime` (device, precision, compile,
    sync_bn) may change how it goes on, and `record` (eval_every, eval_n, eval_extractor, log_every,
    tensorboard) what it measures and logs; what a resume changed is logged in stats.jsonl as an event.
    Under torchrun, every process calls this; rank 0 writes.
    """
    return train_run(cfg, runs_dir, resume, budget, progress, runtime, record).run_dir


def train_run(cfg: TrainConfig | None = None, runs_dir: str | Path = "runs", resume: str | Path | None = None,
              budget: dict | None = None, progress: bool = True, runtime: dict | None = None,
              record: dict | None = None) -> Trainer:
    """`train`, returning the Trainer (its networks as this process holds them) rather than the folder."""
    meta = tensors = None
    if resume is not None:
        run_dir = Path(resume).expanduser()
        if run_dir.is_dir() and not list_checkpoints(run_dir / "checkpoints") and (run_dir / "config.json").is_file():
            # stopped before its first checkpoint: start it again, in the same folder
            print(f"{run_dir}: no checkpoint yet; starting the run again from step 0", file=sys.stderr)
            values = json.loads((run_dir / "config.json").read_text())
            values.pop("model_spec", None)
            cfg = TrainConfig.from_dict(values)
            meta = {"config": cfg.to_dict(), "fresh": True}
        else:
            meta, tensors = load_checkpoint(run_dir)
        cfg = saved = TrainConfig.from_dict(meta["config"])
        if budget and any(v is not None for v in budget.values()):
            cfg = dataclasses.replace(cfg, **{k: budget.get(k) for k in BUDGET_KEYS})
        refused = sorted(k for k, v in (record or {}).items() if v is not None and k not in RECORD_KEYS)
        if refused:
            raise GanforgeError(f"--resume cannot change {', '.join(refused)}: that would change the model or the "
                                f"data order; a resume may change {', '.join(RECORD_KEYS)}, the budget, "
                                f"{', '.join(RUNTIME_KEYS)}")
        cfg = dataclasses.replace(cfg, **{k: v for k, v in {**(runtime or {}), **(record or {})}.items()
                                          if k in RUNTIME_KEYS + RECORD_KEYS and v is not None}).validate()
        resumed_with = {k: [getattr(saved, k), getattr(cfg, k)] for k in BUDGET_KEYS + RUNTIME_KEYS + RECORD_KEYS
                        if getattr(saved, k) != getattr(cfg, k)}
    else:
        cfg = (cfg or TrainConfig()).validate()
        resumed_with = {}
    group = setup(cfg.device)
    try:
        if cfg.model in TEXT_MODELS:
            from ganforge.train_text import resolve_stage1
            cfg = resolve_stage1(cfg) if resume is None else cfg
        # rank 0 first: it prepares a folder (or LSUN) once while the others wait, then they all read it
        if group.enabled and not group.main:
            torch.distributed.barrier()
        data = load_training_data(cfg)
        if group.enabled and group.main:
            torch.distributed.barrier()
        if resume is None:  # rank 0 numbers the run folder; the others learn its name
            run_dir = broadcast(group, new_run_dir(Path(runs_dir), cfg) if group.main else None)
        if meta is not None and meta.get("fresh"):
            meta = None
        if cfg.model in TEXT_MODELS:
            from ganforge.train_text import TextTrainer
            trainer = TextTrainer(cfg, run_dir, data, None if meta is None else (meta, tensors), group=group)
        else:
            trainer = Trainer(cfg, run_dir, data, group)
        trainer.resumed_with = resumed_with
        if meta is not None:
            trainer.restore(meta, tensors)
            if trainer.budget_spent():
                if group.main:
                    print(f"{run_dir}: already trained to step {trainer.step}, its budget; "
                          "pass --steps, --epochs or --minutes to go further", file=sys.stderr)
                teardown(group)
                return trainer
        if group.main:
            write_config(run_dir, cfg, trainer.spec)
            if cfg.tensorboard:
                trainer.tensorboard = _tensorboard_writer(run_dir)
        try:
            interrupted = trainer.fit(progress=progress)
        finally:
            if trainer.tensorboard:
                trainer.tensorboard.close()
        if interrupted and group.main:
            print(f"interrupted at step {trainer.step}; checkpoint saved. Resume with:\n"
                  f"  ganforge train --resume {run_dir}", file=sys.stderr)
    except BaseException:
        teardown(group, failed=True)
        raise
    teardown(group)
    return trainer


def _tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GanforgeError("--tensorboard needs the tensorboard package: pip install 'ganforge[tensorboard]'") from None
    return SummaryWriter(str(run_dir / "tensorboard"))
