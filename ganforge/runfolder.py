"""A training run's folder: every path in it, and the readers of its files, in one place.

    runs/00000-dcgan-digits/
      config.json          the run's options, its networks' spec and what "auto" chose (record.write_config)
      stats.jsonl          one line per log interval, evaluation and event (stats.py has the schema)
      samples/             epoch_NNNN.png: a panel per epoch from the same noise; captions.txt for text models
      curves.png           the contest over training; progress.png: the panels side by side
      checkpoints/         step-NNNNNNNN.json + .safetensors (checkpoint.py)
      tensorboard/         with --tensorboard

The trainer (record.py, state.py), the CLI, export and the studio all ask a RunFolder for these, so that a name
lives in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ganforge.checkpoint import is_model_folder, list_checkpoints
from ganforge.stats import RunStats, read_stats


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path).expanduser())

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def stats_path(self) -> Path:
        return self.path / "stats.jsonl"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def curves_path(self) -> Path:
        return self.path / "curves.png"

    @property
    def progress_path(self) -> Path:
        return self.path / "progress.png"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def panel_path(self, epoch: int) -> Path:
        return self.samples / f"epoch_{epoch:04d}.png"

    def panels(self) -> list[Path]:
        """The epoch panels, oldest first."""
        return sorted(self.samples.glob("epoch_*.png"))

    def checkpoint_files(self) -> list[Path]:
        """Its checkpoints' JSON files, oldest first ([] before the first)."""
        return list_checkpoints(self.checkpoints)

    def has_stats(self) -> bool:
        return self.stats_path.is_file()

    def stats(self) -> RunStats:
        """stats.jsonl as written so far (none where there is no file yet)."""
        return read_stats(self.stats_path)

    def config(self) -> dict:
        """config.json as a dict; {} where it is missing or not a JSON object."""
        try:
            values = json.loads(self.config_path.read_text())
        except (OSError, ValueError):
            return {}
        return values if isinstance(values, dict) else {}

    def is_run(self) -> bool:
        """Whether it is a training run's folder (an exported model folder's config.json is no run's)."""
        return self.path.is_dir() and (self.config_path.is_file() and not is_model_folder(self.path)
                                       or self.stats_path.is_file())
