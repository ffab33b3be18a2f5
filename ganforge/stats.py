"""Training statistics: reported by name from anywhere, collected on the device, written to stats.jsonl.

Any code (a loss, a model family, the loop) calls `report("d_loss/r1", value)`. While a run trains, one
`Collector` keeps a running sum and count per name on the training device, so reporting never waits
for the device; the loop reads the means at its log points (one host sync per stats line, and one
all-reduce across processes). Outside training, `report` does nothing.

## stats.jsonl, the one schema
A run's stats.jsonl holds one JSON object per line, each with "step" (the steps done when it was
written), of one of three kinds (`kind(line)` tells them apart):
- **train**, every `log_every` steps: "epoch" (passes over the data, fractional), "images_seen",
  "seconds" (training time so far), "images_per_s" (since the previous line), and the mean, since the
  previous line, of every statistic reported: "d_loss" and "g_loss" (the game's terms, without
  penalties or regularisers), "d_real" and "d_fake" (mean D(x) and D(G(z)): probabilities for losses
  whose D gives logits, raw scores for the others), then each loss's and family's own, named
  "<term>/<part>": "d_loss/r1", "d_loss/gp", "d_loss/r2", "g_loss/kl";
- **eval**, with --eval-every: "epoch", "images_seen", "seconds", and what `metrics.evaluate.evaluate`
  returns: "extractor", "data", "n_fake", "n_real", "fid", "kid", "kid_std", "precision", "recall",
  "density", "coverage", and for classifiers the class scores;
- **event**: "event" is "resume" ("changed": {key: [old, new]}), "rollback" ("reason", "at_step", "lr_g",
  "lr_d", "message") or "warning" ("kind": "d_wins" or "collapse", "message").
`read_stats` is the one reader: the figures, `ganforge compare` and the tests use it; the studio follows a
growing file with `StatsTail`, which parses its lines the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ganforge.distributed import Group

_active: list[Collector] = []


class Collector:
    """Sums and counts of reported values by name, on one device, until read."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, name: str, value: torch.Tensor | float) -> None:
        value = (value.detach().float().to(self.device) if isinstance(value, torch.Tensor)
                 else torch.tensor(float(value), device=self.device))
        self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._counts[name] = self._counts.get(name, 0) + 1

    def clear(self) -> None:
        self._sums.clear()
        self._counts.clear()

    def read(self, group: Group | None = None) -> dict[str, float]:
        """The mean of each name since the last read (over every process of the group), then a fresh start.
        Every process must call it at the same point, having reported the same names."""
        names = list(self._sums)
        if not names:
            return {}
        totals = torch.cat([torch.stack([self._sums[n] for n in names]),
                            torch.tensor([float(self._counts[n]) for n in names], device=self.device)])
        if group is not None and group.enabled:
            torch.distributed.all_reduce(totals)
        sums, counts = totals.tolist()[:len(names)], totals.tolist()[len(names):]
        self.clear()
        return {n: s / max(c, 1) for n, s, c in zip(names, sums, counts)}


@contextlib.contextmanager
def collecting(collector: Collector):
    """Within the block, `report` adds to `collector`."""
    _active.append(collector)
    try:
        yield collector
    finally:
        _active.remove(collector)


def report(name: str, value: torch.Tensor | float) -> None:
    """Add a value of the statistic `name` to the active collector (a no-op when none is)."""
    if _active:
        _active[-1].add(name, value)


# --- reading stats.jsonl
def kind(line: dict) -> str:
    """"event", "eval" or "train": which of the schema's three kinds a stats.jsonl line is."""
    if "event" in line:
        return "event"
    return "eval" if "fid" in line else "train"


@dataclass
class RunStats:
    """A run's stats.jsonl, in the order written."""

    lines: list[dict]

    def of(self, which: str) -> list[dict]:
        return [line for line in self.lines if kind(line) == which]

    @property
    def train(self) -> list[dict]:
        return self.of("train")

    @property
    def evals(self) -> list[dict]:
        return self.of("eval")

    @property
    def events(self) -> list[dict]:
        return self.of("event")


def _parse(texts: list[str]) -> list[dict]:
    """The schema's lines among `texts`; a line that is not one (cut by a crash, damaged) is skipped."""
    lines = []
    for text in texts:
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and isinstance(line.get("step"), int):
            lines.append(line)
    return lines


def _stats_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "stats.jsonl" if path.is_dir() else path


def read_stats(path: str | Path) -> RunStats:
    """A run folder's (or a stats.jsonl file's) lines; a missing file reads as none, and a line still being
    written (or cut by a crash) is skipped."""
    path = _stats_file(path)
    if not path.is_file():
        return RunStats([])
    return RunStats(_parse(path.read_text(errors="replace").splitlines()))


class StatsTail:
    """A stats.jsonl followed as it grows (the studio's monitor): each `read()` parses only the whole lines
    appended since the last one. A file that was replaced, shrank, or was rewritten in place (a resume drops
    the lines logged after its checkpoint) is read again from its start: the bytes that ended the last read
    must still be where they were. Safe to call from several threads."""

    MARK = 256  # bytes before the offset that must be unchanged

    def __init__(self, path: str | Path):
        self.path = _stats_file(path)
        self._lines: list[dict] = []
        self._offset, self._file_id, self._mark = 0, None, b""
        self._lock = threading.Lock()

    def read(self) -> RunStats:
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    st = os.fstat(f.fileno())
                    if (st.st_dev, st.st_ino) != self._file_id or st.st_size < self._offset or not self._unchanged(f):
                        self._lines, self._offset, self._mark = [], 0, b""
                        self._file_id = (st.st_dev, st.st_ino)
                    f.seek(self._offset)
                    chunk = f.read()
            except FileNotFoundError:
                self._lines, self._offset, self._file_id, self._mark = [], 0, None, b""
                return RunStats([])
            whole = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
            self._offset += len(whole)
            self._mark = (self._mark + whole)[-self.MARK:]
            self._lines += _parse(whole.decode(errors="replace").splitlines())
            return RunStats(list(self._lines))

    def _unchanged(self, f) -> bool:
        f.seek(self._offset - len(self._mark))
        return f.read(len(self._mark)) == self._mark
