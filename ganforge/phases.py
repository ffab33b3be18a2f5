"""The parts of one training step: a batch, and the phases the loop runs on it.

A step takes one `Batch` (real images, their condition, the forgeries of this step's noise) and runs every
phase that is due on it, in order. A `Phase` names the network whose optimiser it steps ("G" or "D"), how often
it runs (every `interval`-th step) and the function that returns the loss to minimise. The loss builds the
phases of the game (D's step, then G's every n_critic-th), and the family may add its own (a regulariser every
few steps), in the spirit of stylegan2-ada's `accumulate_gradients(phase)`: the loop knows no phase by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

NETS = ("D", "G")  # the networks a phase may step, each with its own optimiser


@dataclass
class Batch:
    """What a step's phases share: rank-local real images, their condition and indices, the step (from 0), and
    the forgeries of this step's noise with G's regulariser (`forge`), drawn once before the phases run."""

    real: torch.Tensor
    cond: torch.Tensor | None
    idx: torch.Tensor
    step: int
    fake: torch.Tensor | None = None
    g_extra: torch.Tensor | float = 0.0


@dataclass(frozen=True)
class Phase:
    """One optimiser step of one network: `run(state, batch)` -> the loss to minimise, every `interval`-th step
    (counted from 1), then `after(state)` (WGAN's clipping, G's EMA). A G phase sees D frozen."""

    name: str
    net: str
    run: Callable[[Any, Batch], torch.Tensor]
    interval: int = 1
    after: Callable[[Any], None] | None = None

    def __post_init__(self):
        if self.net not in NETS:
            raise ValueError(f"phase {self.name!r}: net must be one of {NETS}, not {self.net!r}")
        if self.interval < 1:
            raise ValueError(f"phase {self.name!r}: interval must be at least 1")

    def due(self, step: int) -> bool:
        return (step + 1) % self.interval == 0
