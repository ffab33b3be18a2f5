"""What a run leaves behind besides its checkpoints, written by rank 0's `Recorder`.

The run folder `runs/<NNNNN>-<model>-<data>/` holds config.json, stats.jsonl (its schema: stats.py),
samples/epoch_XXXX.png (the panels, from fixed noise), progress.png (the panels side by side),
curves.png (the contest), tensorboard/ (with --tensorboard) and checkpoints/. The recorder also
watches for trouble and warns, on the terminal and as events in stats.jsonl: D winning every time
(G starves), and with --eval-every a recall so low that G has collapsed onto few modes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from tqdm import tqdm

from ganforge.config import TrainConfig
from ganforge.errors import GanforgeError
from ganforge.io import write_atomic
from ganforge.plots import plot_curves, plot_progress
from ganforge.runfolder import RunFolder
from ganforge.sampling import save_grid

D_WINS_LINES = 4  # consecutive stats lines with D near-perfect before the warning that G starves
COLLAPSE_RECALL = 0.05  # an --eval-every recall below this warns of mode collapse
FIRST_KEYS = ("d_loss", "g_loss", "d_real", "d_fake")  # the contest, first in each stats line


def new_run_dir(runs_dir: Path, cfg: TrainConfig) -> Path:
    """runs/<NNNNN>-<model>-<data>/, numbered after the highest run already there, with its config.json."""
    source, sep, path = cfg.data.partition(":")
    data = f"{source}-{Path(path).name}" if sep else cfg.data  # folder:/a/b -> folder-b
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


def write_config(run_dir: Path, cfg: TrainConfig, spec: dict | None = None, chosen: dict | None = None) -> None:
    """config.json: the config, the networks' spec, and what was `chosen`: for an "auto" setting, which and why;
    "from_data", the options whose values the data decided (config.settle)."""
    extra = ({"model_spec": spec} if spec else {}) | ({"chosen": chosen} if chosen else {})
    write_atomic(RunFolder(run_dir).config_path, (json.dumps({**cfg.to_dict(), **extra}, indent=1) + "\n").encode())


class Recorder:
    """Writes a run's stats, panels, figures and TensorBoard events; `active=False` (the ranks other than
    0) makes every method do nothing. `extractor`: for --eval-every, what measurements use."""

    def __init__(self, state, extractor=None, active: bool = True):
        self.state, self.extractor, self.active = state, extractor, active
        self.folder, self.cfg = state.folder, state.cfg
        self.file = None
        self.tensorboard = None
        self.d_wins = 0  # consecutive stats lines in which D was right about nearly everything

    # --- stats.jsonl
    def open(self, resumed_with: dict) -> None:
        """Start (or continue) stats.jsonl: drop what was logged after the checkpoint, which will be logged again,
        and note what a resume changed; the first panel of a new run; TensorBoard when asked for."""
        if not self.active:
            return
        self.truncate()
        self.file = open(self.folder.stats_path, "a")  # noqa: SIM115 - open while the run trains; close() closes it
        if resumed_with:
            self.write({"step": self.state.step, "event": "resume", "changed": resumed_with})
        for name, text in self.state.family.panel_files().items():
            self.folder.samples.mkdir(exist_ok=True)
            write_atomic(self.folder.samples / name, text.encode())
        if self.cfg.tensorboard:
            self.tensorboard = _tensorboard_writer(self.folder.tensorboard)
        if self.state.step == 0:
            self.panel()

    def close(self) -> None:
        for handle in (self.file, self.tensorboard):
            if handle is not None:
                handle.close()
        self.file = self.tensorboard = None

    def write(self, line: dict) -> None:
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()

    def truncate(self) -> None:
        """Drop the stats lines logged after the state's step (on resume, and on rollback under the open file)."""
        if not self.active or not self.folder.stats_path.is_file():
            return
        text = "".join(json.dumps(s) + "\n" for s in self.folder.stats().lines if s["step"] <= self.state.step)
        if self.file is None:
            write_atomic(self.folder.stats_path, text.encode())
        else:  # the same file, which the open handle appends to
            with open(self.folder.stats_path, "w") as f:
                f.write(text)

    def _progress(self) -> dict:
        s = self.state
        return {"step": s.step, "epoch": round(s.images_seen / len(s.data), 4), "images_seen": s.images_seen}

    def log(self, values: dict[str, float], rate: float, bar=None) -> None:
        """A training line: the reported statistics' means since the last one, and the speed."""
        if not self.active:
            return
        order = {k: i for i, k in enumerate(FIRST_KEYS)}
        values = {k: round(values[k], 5) for k in sorted(values, key=lambda k: (order.get(k, len(order)), k))}
        self.write({**self._progress(), **values, "seconds": round(self.state.seconds, 2),
                    "images_per_s": round(rate, 1)})
        if self.state.loss.logits and "d_real" in values:  # D right about nearly every image, line after line
            self.d_wins = self.d_wins + 1 if values["d_real"] > 0.99 and values["d_fake"] < 0.01 else 0
            if self.d_wins == D_WINS_LINES:
                self.warn("d_wins", f"D has told real from fake almost perfectly for {D_WINS_LINES} stats lines "
                          f"(D(x) {values['d_real']:.3f}, D(G(z)) {values['d_fake']:.3f}): G gets little gradient. "
                          "Try --set label_smoothing=0.1, a lower lr_d, diffaugment, or --loss hinge")
        if bar is not None:
            shown = {"D(x)": "d_real", "D(G(z))": "d_fake"}
            bar.set_postfix(**{k: f"{values[k]:.3f}" for k in ("d_loss", "g_loss") if k in values},
                            **{k: f"{values[v]:.2f}" for k, v in shown.items() if v in values},
                            img_s=f"{rate:.0f}", refresh=False)
        if self.tensorboard:
            for key, value in {**values, "images_per_s": rate}.items():
                self.tensorboard.add_scalar(key, value, self.state.step)

    def event(self, event: str, **fields) -> None:
        if self.active:
            self.write({"step": self.state.step, "event": event, **fields})

    def warn(self, kind: str, message: str) -> None:
        """A warning, not a stop: on the terminal and as an event in stats.jsonl."""
        if self.active:
            tqdm.write(f"warning: {message}", file=sys.stderr)
            self.event("warning", kind=kind, message=message)

    def rolled_back(self, reason: str, at_step: int, message: str, factor: float) -> None:
        """After a rollback: the lines logged since the checkpoint are dropped, and the rollback noted."""
        if self.active:
            self.truncate()
            self.event("rollback", reason=reason, at_step=at_step, lr_g=self.cfg.lr_g * factor,
                       lr_d=self.cfg.lr_d * factor, message=message)

    # --- panels, figures, measurements
    def panel(self, epoch: int | None = None) -> Path | None:
        """samples/epoch_XXXX.png: the family's panel of the sampler, from the run's fixed noise."""
        if not self.active:
            return None
        epoch = self.state.epoch if epoch is None else epoch
        path = self.folder.panel_path(epoch)
        path.parent.mkdir(exist_ok=True)
        images, nrow = self.state.family.panel(self.state.sampler, self.cfg.n_samples, self.state.fixed_seed)
        save_grid(images, path, nrow=nrow)
        if self.tensorboard:
            self.tensorboard.add_images("samples", images.add(1).div(2), self.state.step)
        return path

    def figures(self) -> None:
        """curves.png (the contest) and progress.png (the panels side by side)."""
        if not self.active:
            return
        plot_curves(self.folder.stats(), self.folder.curves_path,
                    title=f"{self.folder.name}: the contest ({self.cfg.loss})", probabilities=self.state.loss.logits,
                    ada_target=self.cfg.ada_target if self.cfg.ada else None)
        plot_progress(self.folder.panels(), self.folder.progress_path)

    def measure(self) -> None:
        """An eval line: the quality of the sampler's samples (FID and friends), with --eval-every."""
        if not self.active:
            return
        from ganforge.metrics.evaluate import evaluate

        n = min(self.cfg.eval_n, len(self.state.data))
        sampler = self.state.sampler
        labels = sampler.labels(n)
        result = evaluate(sampler.sample(n, self.state.fixed_seed + 1, labels, output="uint8"), self.cfg.data,
                          self.extractor, n, self.cfg.data_dir, requested_labels=labels)
        self.write({**self._progress(), "seconds": round(self.state.seconds, 2), **result})
        tqdm.write(f"epoch {self.state.epoch}: FID {result['fid']:.3f} ({result['extractor']}, n={n})", file=sys.stderr)
        if result.get("recall", 1.0) < COLLAPSE_RECALL:
            self.warn("collapse", f"the samples cover little of the data (recall {result['recall']:.3f} in "
                      f"{result['extractor']}'s features, below {COLLAPSE_RECALL}): mode collapse? Try "
                      "--set diffaugment=color,translation, --loss hinge, or resume an earlier checkpoint")


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GanforgeError("--tensorboard needs the tensorboard package: pip install 'ganforge[tensorboard]'") from None
    return SummaryWriter(str(folder))
