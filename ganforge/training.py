"""The training loop: D and G take turns, the run folder records the contest.

`train(cfg)` makes a run folder and trains until the budget is spent; `train(resume=RUN_DIR)`
continues a run exactly where its latest checkpoint left it. One step of the loop:
  1. a batch (phases.Batch) of real images x, their condition (a label, a caption; none for plain GANs) and
     noise z; forgeries G(z);
  2. the phases due at this step, in order, each one optimiser step of one network. The loss's: D's step (its
     D term on x and G(z), with its penalties), then every n_critic-th step G's (its G term on the updated D's
     scores of G(z), with D frozen), after which the EMA of G's weights moves towards G. A family may add more.
The loop knows no loss, model or phase by name: the loss (losses/) owns the terms, penalties and phases, the
model's family (families/) the condition, the forgeries and any phases of its own, the state (state.py) the networks and checkpoints,
the recorder (record.py) what the run folder holds. Statistics are reported by name (stats.py) and read
every `log_every` steps; the loop's host syncs are those reads, the check that the losses are finite
(every step on a CPU; on a GPU a flag kept on the device, read with the stats and before checkpoints),
and the agreement of several processes on the clock and Ctrl-C (every SYNC_EVERY steps).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ganforge.checkpoint import is_model_folder, load_checkpoint
from ganforge.config import TrainConfig
from ganforge.distributed import broadcast, broadcast_buffers, setup, teardown
from ganforge.errors import GanforgeError
from ganforge.families import MODELS
from ganforge.phases import NETS, Batch
from ganforge.record import Recorder, new_run_dir, write_config
from ganforge.runfolder import RunFolder
from ganforge.state import TrainState, epoch_order
from ganforge.stats import Collector, collecting

SYNC_EVERY = 10  # steps between the points where several processes agree on Ctrl-C and the clock
BUDGET_KEYS = ("steps", "epochs", "minutes")
RUNTIME_KEYS = ("device", "precision", "compile", "sync_bn")  # how to train, not what: a resume may change them
# what is measured and recorded, which changes neither the model nor the data order: a resume may change them too
RECORD_KEYS = ("eval_every", "eval_n", "eval_extractor", "log_every", "tensorboard")


def train_step(s: TrainState, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The phases due at this step, in order, on one batch -> (D's loss, G's loss; 0 where none ran), on the device."""
    due = [p for p in s.phases if p.due(s.step)]
    with torch.set_grad_enabled(any(p.net == "G" for p in due)), s.autocast():  # no graph through G without G's turn
        batch.fake, batch.g_extra = s.family.forge(s.G_train, s.noise(len(batch.real)), batch.cond)
    losses = {net: torch.zeros((), device=s.device) for net in NETS}
    for phase in due:
        if phase.net == "G":  # D is not updated in G's phases: its weights need no gradients there
            s.D.requires_grad_(False)
        with s.autocast():
            loss = phase.run(s, batch)
        s.update(phase.net, loss)
        s.D.requires_grad_(True)
        if phase.after is not None:
            phase.after(s)
        losses[phase.net] = losses[phase.net] + loss.detach()
    return losses["D"], losses["G"]


def fit(s: TrainState, rec: Recorder, progress: bool = True) -> bool:
    """Train until the budget is spent or Ctrl-C; returns True when stopped by Ctrl-C."""
    cfg, collector = s.cfg, Collector(s.device)
    if s.step == 0:
        s.save()  # a checkpoint to resume from, or to roll back to, from the first step on
    # in a log file rather than a terminal, a line every 30 s instead of a redraw 10 times a second
    bar = tqdm(total=s.stop_step(), initial=s.step, unit="step", disable=not progress or not s.group.main,
               mininterval=0.1 if sys.stderr.isatty() else 30, dynamic_ncols=True,
               desc=s.run_dir.name + (f" ({cfg.minutes:g} min)" if cfg.minutes else ""))
    logged = (s.seconds, s.images_seen)  # at the last stats line
    if cfg.lr_decay:
        s.schedule_lr()
    done = interrupted = False
    with StopFlag() as stop, collecting(collector):
        while not done:
            order = epoch_order(len(s.data), cfg.seed, s.epoch)
            started = time.perf_counter()
            while s.batch_in_epoch < s.steps_per_epoch:
                idx, real = s.batch(order)
                batch = Batch(real, s.family.condition(idx, s.step), idx, s.step)
                s.watch(*train_step(s, batch))  # are the losses finite?
                s.step, s.batch_in_epoch, s.images_seen = s.step + 1, s.batch_in_epoch + 1, s.images_seen + s.global_batch
                now = time.perf_counter()
                s.seconds, started = s.seconds + now - started, now
                bar.update()
                done, interrupted = s.stop_now(stop.set, sync=s.step % SYNC_EVERY == 0)
                if cfg.lr_decay and (not s.group.enabled or s.step % SYNC_EVERY == 0):
                    s.schedule_lr()
                saving = done or s.batch_in_epoch == s.steps_per_epoch or (
                    bool(cfg.checkpoint_every) and s.step % cfg.checkpoint_every == 0)
                if bad := s.diverged(read=saving or s.step % cfg.log_every == 0):  # back to the last good checkpoint
                    reason = f"non-finite {bad}"
                    rec.rolled_back(reason, s.step, *s.rollback(reason, s.step))
                    collector.clear()
                    logged, bar.n, done = (s.seconds, s.images_seen), s.step, False
                    bar.refresh()
                    break  # the epoch and its order may have changed
                if s.step % cfg.log_every == 0:
                    rate = (s.images_seen - logged[1]) / max(s.seconds - logged[0], 1e-9)
                    rec.log(collector.read(s.group), rate, bar)
                    logged = (s.seconds, s.images_seen)
                if done:
                    break
                if cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0:
                    s.save()
                    started = time.perf_counter()  # checkpoints are not counted as training time
            if s.batch_in_epoch == s.steps_per_epoch:  # a whole epoch is done
                s.epoch, s.batch_in_epoch = s.epoch + 1, 0
                rec.panel()
                s.save()  # before measuring: a measurement that fails loses no training
                if cfg.eval_every and s.epoch % cfg.eval_every == 0:
                    rec.measure()
                rec.figures()  # panels, checkpoints, measurements are not counted as training time
                if not done:
                    done, interrupted = s.stop_now(stop.set, sync=True)
    bar.close()
    broadcast_buffers(s.group, *(m for m in (s.G, s.D, s.G_ema) if m is not None))
    if s.batch_in_epoch:  # stopped inside an epoch: a panel of where it stands
        rec.panel(s.epoch + 1)
    s.save()
    rec.figures()
    return interrupted


class StopFlag:
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


# --- starting and resuming runs
def train(cfg: TrainConfig | dict | None = None, runs_dir: str | Path = "runs", resume: str | Path | None = None,
          budget: dict | None = None, progress: bool = True, runtime: dict | None = None,
          record: dict | None = None) -> Path:
    """Train a GAN and return its run folder.

    cfg: a new run's config (a TrainConfig, or a dict of its keys), budget included (ignored with
    `resume`). resume: a run folder to continue from its latest checkpoint; a `budget` ({"steps": ..,
    "epochs": .., "minutes": ..}) with any value set then replaces the run's budget, `runtime` (device,
    precision, compile, sync_bn) may change how it goes on, and `record` (eval_every, eval_n,
    eval_extractor, log_every, tensorboard) what it measures and logs; what a resume changed is logged
    in stats.jsonl as an event. Under torchrun, every process calls this; rank 0 writes.
    """
    return train_run(cfg, runs_dir, resume, budget, progress, runtime, record).run_dir


def train_run(cfg: TrainConfig | dict | None = None, runs_dir: str | Path = "runs", resume: str | Path | None = None,
              budget: dict | None = None, progress: bool = True, runtime: dict | None = None,
              record: dict | None = None) -> TrainState:
    """`train`, returning the TrainState (its networks as this process holds them) rather than the folder."""
    if resume is not None:
        run_dir = Path(resume).expanduser()
        cfg, checkpoint, resumed_with = _resumed_config(run_dir, budget, runtime, record)
    else:
        cfg = (TrainConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg or TrainConfig()).validate()
        checkpoint, resumed_with = None, {}
    group = setup(cfg.device)
    try:
        model = MODELS[cfg.model]
        cfg = model.resolve(cfg) if resume is None else cfg
        # rank 0 first: it prepares a folder (or LSUN) once while the others wait, then they all read it
        if group.enabled and not group.main:
            torch.distributed.barrier()
        data = model.load_data(cfg)
        if group.enabled and group.main:
            torch.distributed.barrier()
        extractor = _extractor(cfg, data) if cfg.eval_every and group.main else None
        if resume is None:  # rank 0 numbers the run folder; the others learn its name
            run_dir = broadcast(group, new_run_dir(Path(runs_dir), cfg) if group.main else None)
        state = TrainState(cfg, run_dir, data, group, checkpoint)
        if checkpoint is not None:
            state.restore(*checkpoint)
            if state.budget_spent():
                if group.main:
                    print(f"{run_dir}: already trained to step {state.step}, its budget; "
                          "pass --steps, --epochs or --minutes to go further", file=sys.stderr)
                teardown(group)
                return state
        rec = Recorder(state, extractor, active=group.main)
        if group.main:
            chosen = {"from_data": state.from_data} if state.from_data else {}
            if state.precision_reason:  # --precision auto: which, and why, in config.json and on the console
                chosen |= {"precision": state.precision, "why": state.precision_reason}
                print(f"precision auto: {state.precision} ({state.precision_reason})", file=sys.stderr)
            write_config(run_dir, state.cfg, state.spec, chosen)
        try:
            rec.open(resumed_with)
            interrupted = fit(state, rec, progress=progress)
        finally:
            rec.close()
        if interrupted and group.main:
            print(f"interrupted at step {state.step}; checkpoint saved. Resume with:\n"
                  f"  ganforge train --resume {run_dir}", file=sys.stderr)
    except BaseException:
        teardown(group, failed=True)
        raise
    teardown(group)
    return state


def _resumed_config(run_dir: Path, budget, runtime, record) -> tuple[TrainConfig, tuple | None, dict]:
    """(the run's config with the changes a resume may make, its checkpoint or None, what changed)."""
    if is_model_folder(run_dir):
        raise GanforgeError(f"{run_dir}: an exported model folder holds no optimizer or RNG state and cannot be "
                            "resumed; resume the training run it was exported from")
    folder = RunFolder(run_dir)
    if run_dir.is_dir() and not folder.checkpoint_files() and folder.config_path.is_file():
        # stopped before its first checkpoint: start it again, in the same folder
        print(f"{run_dir}: no checkpoint yet; starting the run again from step 0", file=sys.stderr)
        values = folder.config()
        values.pop("model_spec", None)
        values.pop("chosen", None)
        saved, checkpoint = TrainConfig.from_saved(values), None
    else:
        checkpoint = load_checkpoint(run_dir)
        saved = TrainConfig.from_saved(checkpoint[0]["config"])
    cfg = saved
    if budget and any(v is not None for v in budget.values()):
        cfg = dataclasses.replace(cfg, **{k: budget.get(k) for k in BUDGET_KEYS})
    refused = sorted(k for k, v in (record or {}).items() if v is not None and k not in RECORD_KEYS)
    if refused:
        raise GanforgeError(f"--resume cannot change {', '.join(refused)}: that would change the model or the "
                            f"data order; a resume may change {', '.join(RECORD_KEYS)}, the budget, "
                            f"{', '.join(RUNTIME_KEYS)}")
    cfg = dataclasses.replace(cfg, **{k: v for k, v in {**(runtime or {}), **(record or {})}.items()
                                      if k in RUNTIME_KEYS + RECORD_KEYS and v is not None}).validate()
    changed = {k: [getattr(saved, k), getattr(cfg, k)] for k in BUDGET_KEYS + RUNTIME_KEYS + RECORD_KEYS
               if getattr(saved, k) != getattr(cfg, k)}
    return cfg, checkpoint, changed


def _extractor(cfg: TrainConfig, data):
    """What --eval-every measures with (on rank 0): built before training, as it may train itself first,
    without touching the run's random state."""
    from ganforge.metrics.evaluate import default_extractor
    from ganforge.metrics.features import get_extractor

    with torch.random.fork_rng(devices=[]):
        return get_extractor(cfg.eval_extractor or default_extractor(data, cfg.data),
                             image_size=data.shape[-1], channels=data.shape[0])
