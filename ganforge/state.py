"""A run's training state: its networks, optimizers, RNGs and counters, and their checkpoints.

`TrainState(cfg, run_dir, data, group, resume)` seeds the RNGs, lets the model's family prepare
(a text encoder, a frozen Stage-I), builds G, D and G's EMA from the family's spec, wraps them for
several processes and torch.compile, and makes their optimizers and the loss. `save()` writes a
checkpoint that `restore()` continues from exactly: weights, optimizer moments, every RNG, the place
in the epoch; `rollback()` goes back to the newest one after a non-finite loss.
"""

from __future__ import annotations

import copy
import math
import random
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ganforge.augment import make_augment
from ganforge.checkpoint import (
    load_checkpoint,
    optimizer_from_checkpoint,
    optimizer_to_checkpoint,
    save_checkpoint,
)
from ganforge.config import TrainConfig, settle
from ganforge.data import ImageData, to_float
from ganforge.distributed import SINGLE, Group, any_rank, broadcast, compiler_missing, resolve_device, sum_over_ranks
from ganforge.errors import GanforgeError
from ganforge.families import MODELS, build_discriminator, build_generator
from ganforge.hardware import choose_precision
from ganforge.io import load_module_state, pack_state, unpack_state
from ganforge.losses import LOSSES, Critic
from ganforge.phases import NETS
from ganforge.runfolder import RunFolder


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for the weights; buffers (batch-norm statistics) copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for e, m in zip(ema.buffers(), model.buffers()):
        e.copy_(m)


def ema_decay_at(decay: float, g_steps: int) -> float:
    """The decay after g_steps G updates, warmed up so that early samples do not show the initial weights."""
    return min(decay, (1 + g_steps) / (10 + g_steps))


def pack_parts(parts: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Each part's state_dict() for a checkpoint: (its tensors under "part/NAME/KEY", the rest as JSON by name)."""
    tensors, meta = {}, {}
    for name, part in parts.items():
        for key, value in part.state_dict().items():
            if isinstance(value, torch.Tensor):
                tensors[f"part/{name}/{key}"] = value.detach().cpu()
            else:
                meta.setdefault(name, {})[key] = value
    return tensors, meta


def unpack_parts(parts: dict, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Each part's state back from a checkpoint; a part the checkpoint holds nothing of (saved before it had
    state) keeps the state it starts with."""
    for name, part in parts.items():
        prefix = f"part/{name}/"
        state = meta.get("parts", {}).get(name, {}) | {k[len(prefix):]: v for k, v in tensors.items()
                                                       if k.startswith(prefix)}
        if state:
            part.load_state_dict(state)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: a permutation fixed by (seed, epoch), so resuming needs no state."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class TrainState:
    """Everything a run holds: data, family, loss, both networks and their optimizers, the RNGs, the counters."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, data: ImageData, group: Group = SINGLE,
                 resume: tuple[dict, dict] | None = None):
        # the data's defaults written into the config once (the image size, the depths, ADA...); the options so set
        # are recorded in config.json and each checkpoint ("from_data"), so that an exported card leaves them out
        cfg, from_data = settle(cfg.validate(), data)
        self.from_data = sorted(set(from_data) | set(resume[0].get("from_data", []) if resume else ()))
        self.cfg, self.run_dir, self.data, self.group = cfg, run_dir, data, group
        self.folder = RunFolder(run_dir)
        self.device = resolve_device(cfg.device, group.local_rank)
        self.precision, self.precision_reason = cfg.precision, None
        if cfg.precision == "auto":  # the same choice on every run of a machine (the probe is cached)
            self.precision, self.precision_reason = choose_precision(self.device)
        if self.precision == "fp16" and self.device.type != "cuda":
            raise GanforgeError("precision=fp16 needs a CUDA device; on a CPU train in fp32 (or bf16)")
        if cfg.sync_bn and group.enabled and self.device.type != "cuda":
            raise GanforgeError("sync_bn needs CUDA devices (NCCL); on CPUs each process normalises its own batch")
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        self.family = MODELS[cfg.model](cfg, data, self.device, group, resume)
        self.loss = LOSSES[cfg.loss](cfg)
        self.spec = self.family.spec()
        self.G, self.D = build_generator(self.spec), build_discriminator(self.spec)
        conv = self.family.conv
        self.memory_format = torch.channels_last if cfg.channels_last and conv else torch.contiguous_format
        if cfg.sync_bn and group.enabled:  # batch statistics over every rank's batch
            self.G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            self.D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
        self.G.to(self.device, memory_format=self.memory_format)
        self.D.to(self.device, memory_format=self.memory_format)
        # the EMA of G: what samples, panels and measurements are drawn from
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if cfg.ema_decay is not None else None
        # each network's optimiser, as the family declares it; fp16 losses are scaled so small gradients survive
        self.optimizers = {"G": self.family.optimizer("G", self.G.parameters(), cfg.lr_g),
                           "D": self.family.optimizer("D", self.D.parameters(), cfg.lr_d)}
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        self.scalers = {net: torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16") for net in NETS}
        self.phases = self.family.phases(self.loss.phases())  # what a step runs, in order
        self.G_train, D_train, D_frozen = self._wrap()
        # D as the loss calls it: in D's step as trained, in G's step unwrapped (D is not updated there)
        self.augment = make_augment(cfg.diffaugment, adaptive=cfg.ada, target=cfg.ada_target,
                                    total=partial(sum_over_ranks, group))
        self.critic = Critic(D_train, self.D, self.augment, self.family.mismatch, self._loss_scale)
        self.critic_frozen = Critic(D_frozen, self.D, self.augment, self.family.mismatch, self._loss_scale)
        if group.rank:  # other augmentation and penalty draws on each rank; the weights start equal
            torch.manual_seed(cfg.seed * 1_000_003 + 7919 * group.rank)
        self.noise_rng = torch.Generator().manual_seed(cfg.seed + 1)  # the training z's
        self.fixed_seed = cfg.seed + 2  # the panels' z's, the same every epoch
        self.step = self.epoch = self.batch_in_epoch = self.images_seen = 0
        self.seconds = 0.0
        self.saved_step = None  # the step of the newest checkpoint on disk
        self.rollbacks = 0  # returns to the last good checkpoint after a non-finite loss
        self.nonfinite: torch.Tensor | None = None  # (d_loss, g_loss) not finite since the last read: watch()
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
                if self.loss.compiles_d:  # a penalty on D's input gradient needs a double backward
                    D, D_frozen = torch.compile(D), torch.compile(D_frozen)
        return G, D, D_frozen

    def _loss_scale(self) -> float:
        """fp16's current loss scale (a host sync, so asked for only by the penalties that need it), else 1."""
        scaler = self.scalers["D"]
        return scaler.get_scale() if scaler.is_enabled() else 1.0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    @property
    def sampler(self):
        """The family's sampler of the generator that samples are drawn from: the EMA when there is one."""
        return self.family.sampler(self.G_ema if self.G_ema is not None else self.G)

    # --- what one step takes
    def batch(self, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, real images) of this rank's share of the step's batch: the images one process would take."""
        first = self.batch_in_epoch * self.global_batch + self.group.rank * self.cfg.batch_size
        idx = order[first:first + self.cfg.batch_size]
        real = to_float(self.data.images[idx].to(self.device, non_blocking=True))
        return idx, real.contiguous(memory_format=self.memory_format)

    def noise(self, n: int) -> torch.Tensor:
        """This rank's n training z's: every rank draws the whole batch's noise and takes its share."""
        z = torch.randn(n * self.group.world, self.family.noise_dim, generator=self.noise_rng)
        return z[self.group.rank * n:(self.group.rank + 1) * n].to(self.device)

    def update(self, net: str, loss: torch.Tensor) -> None:
        """One step of network `net`'s optimiser on the loss (scaled under fp16)."""
        opt, scaler = self.optimizers[net], self.scalers[net]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def update_ema(self) -> None:
        if self.G_ema is not None:
            ema_update(self.G_ema, self.G, ema_decay_at(self.cfg.ema_decay, (self.step + 1) // self.cfg.n_critic))

    def schedule_lr(self) -> None:
        """Both learning rates for where the run stands: x nan_lr_factor per rollback, and with lr_decay falling
        linearly to 0 over the budget's last share. Called where the ranks agree on the budget spent."""
        factor = self.cfg.nan_lr_factor ** self.rollbacks
        if self.cfg.lr_decay:
            factor *= min(1.0, (1.0 - broadcast(self.group, self.progress())) / self.cfg.lr_decay)
        for opt, lr in ((self.optimizers["G"], self.cfg.lr_g), (self.optimizers["D"], self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    # --- the budget
    def progress(self) -> float:
        """The share of the budget spent, 0 to 1: of the steps, the epochs or the minutes, whichever ends first."""
        stop = self.stop_step()
        shares = [self.step / stop if stop else 0.0, self.seconds / (60 * self.cfg.minutes) if self.cfg.minutes else 0.0]
        return min(1.0, max(shares))

    def stop_step(self) -> int | None:
        limits = [s for s in (self.cfg.steps, self.cfg.epochs and math.ceil(self.cfg.epochs * self.steps_per_epoch))
                  if s]
        return min(limits) if limits else None

    def minutes_up(self) -> bool:
        return self.cfg.minutes is not None and self.seconds >= 60 * self.cfg.minutes

    def budget_spent(self) -> bool:
        stop = self.stop_step()
        return bool((stop is not None and self.step >= stop) or self.minutes_up())

    def stop_now(self, stop_requested: bool, sync: bool) -> tuple[bool, bool]:
        """(stop after this step, because of Ctrl-C), the same on every rank: the step budget is, and
        the clock and Ctrl-C are agreed on at sync points (every step for a single process)."""
        limit = self.stop_step()
        if limit is not None and self.step >= limit:
            return True, False
        if self.group.enabled and not sync:
            return False, False
        interrupted, minutes_up = any_rank(self.group, [stop_requested, self.minutes_up()], self.device)
        return interrupted or minutes_up, interrupted

    def watch(self, *losses: torch.Tensor) -> None:
        """Note whether this step's losses (d_loss, g_loss) are finite, on the device: nothing waits for it."""
        flags = torch.stack([~torch.isfinite(loss).all() for loss in losses])
        self.nonfinite = flags if self.nonfinite is None else self.nonfinite | flags

    def diverged(self, read: bool) -> str | None:
        """Which loss (d_loss, g_loss) was not finite since the last read, on any rank (the ranks agree, as their
        weights do); None when none was. On a CPU every step is read, so a rollback comes at the step that
        diverged. On a GPU a read waits for the device, so the flags gather there and are read only when `read`
        (with a stats line, before a checkpoint, at the stop); the rollback goes to the last checkpoint either way,
        which no non-finite step precedes."""
        if self.nonfinite is None or (self.device.type == "cuda" and not read):
            return None
        bad, self.nonfinite = [bool(b) for b in self.nonfinite.tolist()], None
        bad = any_rank(self.group, bad, self.device) if self.group.enabled else bad
        return next((name for name, b in zip(("d_loss", "g_loss"), bad) if b), None)

    # --- checkpoints
    def rank_rngs(self) -> dict[str, torch.Tensor]:
        """The RNG states of the ranks above 0 (their augmentation, penalty and dropout draws differ from rank
        0's), gathered on every rank: rank 0 saves them, so that each rank resumes its own draws."""
        if not self.group.enabled:
            return {}
        own = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            own["cuda"] = torch.cuda.get_rng_state(self.device)
        every = [None] * self.group.world
        torch.distributed.all_gather_object(every, own)
        return {f"rng/{name}/rank{r}": state for r, states in enumerate(every) if r for name, state in states.items()}

    def save(self) -> None:
        """Rank 0 writes the checkpoint (every rank holds the same weights); the others wait for it."""
        if self.saved_step == self.step:
            return
        self.saved_step = self.step
        rank_rngs = self.rank_rngs()
        if self.group.main:
            weights = [*self.G.parameters(), *self.D.parameters()]
            if not all(bool(torch.isfinite(w).all()) for w in weights):  # never keep a diverged state
                raise GanforgeError(f"step {self.step}: G or D holds non-finite weights; not saving them. The last "
                                    f"good checkpoint is in {self.folder.checkpoints}")
            try:
                self._write_checkpoint(rank_rngs)
            except OSError as e:
                for tmp in self.folder.checkpoints.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
                good = self.folder.checkpoint_files()
                raise GanforgeError(f"cannot write the checkpoint of step {self.step} in {self.folder.checkpoints}: "
                                    f"{e.strerror or e}. The last good one, {good[-1].stem if good else 'none'}, is "
                                    "intact; free some space (or make the folder writable) and resume") from None
        if self.group.enabled:
            torch.distributed.barrier()

    def _write_checkpoint(self, rank_rngs: dict[str, torch.Tensor]) -> None:
        tensors = {**pack_state("G", self.G.state_dict()), **pack_state("D", self.D.state_dict()),
                   "rng/torch": torch.get_rng_state(), "rng/noise": self.noise_rng.get_state(), **rank_rngs}
        if self.device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        if self.G_ema is not None:
            tensors |= pack_state("G_ema", self.G_ema.state_dict())
        extra_tensors, meta = self.family.extra_state()
        tensors |= extra_tensors
        for net, opt in self.optimizers.items():
            opt_tensors, meta[f"opt_{net.lower()}"] = optimizer_to_checkpoint(f"opt_{net.lower()}", opt)
            tensors |= opt_tensors
            meta[f"scaler_{net.lower()}"] = self.scalers[net].state_dict()
        parts_tensors, meta["parts"] = pack_parts(self.parts())
        np_state, py_state = np.random.get_state(), random.getstate()
        meta |= {
            "model_spec": self.spec, "config": self.cfg.to_dict(), "from_data": self.from_data,
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "images_seen": self.images_seen,
            "seconds": self.seconds, "rollbacks": self.rollbacks, "world_size": self.group.world,
            "rng": {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                    "python": [py_state[0], list(py_state[1]), py_state[2]]},
        }
        save_checkpoint(self.folder.checkpoints, self.step, tensors | parts_tensors, meta,
                        keep=self.cfg.keep_checkpoints)

    def parts(self) -> dict:
        """The parts with state of their own besides the networks and optimisers, by name in the checkpoint."""
        return {"loss": self.loss, "family": self.family, "augment": self.augment}

    def restore(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        if meta["model_spec"] != self.spec:
            raise GanforgeError(f"checkpoint model {meta['model_spec']} does not match the config's {self.spec}")
        load_module_state(self.G, unpack_state("G", tensors), "G")
        load_module_state(self.D, unpack_state("D", tensors), "D")
        if self.G_ema is not None:
            load_module_state(self.G_ema, unpack_state("G_ema", tensors), "G_ema")
        for net, opt in self.optimizers.items():
            optimizer_from_checkpoint(f"opt_{net.lower()}", opt, tensors, meta[f"opt_{net.lower()}"])
        unpack_parts(self.parts(), meta, tensors)
        # each rank its own draws, saved by rank 0 for every rank (rank 0's under the plain names)
        own = f"/rank{self.group.rank}" if self.group.rank else ""
        saved_world = meta.get("world_size", 1)
        exact = saved_world == self.group.world and f"rng/torch{own}" in tensors
        if exact:
            torch.set_rng_state(tensors[f"rng/torch{own}"])
            if self.device.type == "cuda" and f"rng/cuda{own}" in tensors:
                torch.cuda.set_rng_state(tensors[f"rng/cuda{own}"], self.device)
        self.noise_rng.set_state(tensors["rng/noise"])
        for net, scaler in self.scalers.items():
            if scaler.is_enabled() and meta.get(f"scaler_{net.lower()}"):
                scaler.load_state_dict(meta[f"scaler_{net.lower()}"])
        kind, keys, *rest = meta["rng"]["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
        version, internal, gauss = meta["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
        self.step, self.epoch = meta["step"], meta["epoch"]
        self.batch_in_epoch, self.images_seen, self.seconds = meta["batch_in_epoch"], meta["images_seen"], meta["seconds"]
        self.rollbacks = meta.get("rollbacks", 0)
        if saved_world != self.group.world:  # the same place in the epoch, counted in the new global batches
            done = self.batch_in_epoch * self.cfg.batch_size * saved_world
            self.batch_in_epoch = min(done // self.global_batch, self.steps_per_epoch - 1)
            if self.group.main:
                tqdm.write(f"resuming a {saved_world}-process run with {self.group.world} process(es): the global "
                           f"batch is now {self.global_batch}; the epoch goes on from image {done:,}", file=sys.stderr)
        if not exact:  # another number of processes: rank 0's draws, other ones on each other rank
            torch.set_rng_state(tensors["rng/torch"])
            if self.device.type == "cuda" and "rng/cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)
            if self.group.rank:
                torch.manual_seed(self.cfg.seed * 1_000_003 + 7919 * self.group.rank + self.step)
        self.saved_step = self.step

    def rollback(self, reason: str, bad_step: int) -> tuple[str, float]:
        """Go back to the newest checkpoint with the learning rates times nan_lr_factor -> (what happened, the
        factor); after max_rollbacks, stop with what happened and what to try."""
        cfg = self.cfg
        self.rollbacks += 1
        if self.rollbacks > cfg.max_rollbacks:
            raise GanforgeError(
                f"training diverged: {reason} at step {bad_step}, again after {cfg.max_rollbacks} rollback(s) to the "
                f"last good checkpoint with the learning rates x{cfg.nan_lr_factor} each time. Try lower lr_g / lr_d, "
                "--set spectral_norm=true, --loss hinge, --set r1_gamma=1, or --precision fp32; "
                f"the last good checkpoint is in {self.folder.checkpoints}")
        rollbacks = self.rollbacks
        self.restore(*load_checkpoint(self.run_dir))
        self.rollbacks = rollbacks
        factor = cfg.nan_lr_factor ** rollbacks
        self.schedule_lr()
        message = (f"{reason} at step {bad_step}: rolled back to step {self.step} with learning rates "
                   f"x{factor:g} (rollback {rollbacks} of at most {cfg.max_rollbacks})")
        tqdm.write(f"warning: {message}", file=sys.stderr)
        return message, factor
