"""What a loss is: an object that owns D's and G's terms, their penalties, defaults and statistics.

A loss builds the phases of the game (`phases()`, see phases.py) that the training loop runs: each step
`loss.discriminator(D, real, fake, cond)` (D's loss, penalties included, to minimise), then
`loss.after_discriminator_step(D)`, and on G's turns (every n_critic-th step) `loss.generator(D, real, fake,
cond)`. `D` is a `Critic`: D with the augmentation pipeline in front and the condition attached; a loss tells
it D's scores of real images (`D.observe`), which adaptive augmentation steers by. A loss with state (a
running mean, a counter) keeps it in `state_dict()` / `load_state_dict()`, saved in every checkpoint. A loss reports its statistics by name (`report`), and declares what the loop and
the config need to know: its options, `n_critic` and `d_norm` defaults, whether D's outputs are logits,
and whether it differentiates D's input gradient (then D cannot be compiled).

Most losses are a pair of terms on D's outputs (`d_term`, `g_term`); the base class calls D, adds the
matching-aware negatives of conditional families, the R1 penalty any loss can take (`r1_gamma`), and
reports d_loss, g_loss, d_real and d_fake. A loss whose terms need more (R3GAN's pairs) overrides
`discriminator` and `generator`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ganforge.augment import Augment
from ganforge.errors import GanforgeError
from ganforge.losses.penalties import r1_penalty
from ganforge.phases import Batch, Phase
from ganforge.registry import Option, Registry, non_negative, within
from ganforge.stats import report

LOSSES: Registry[type[Loss]] = Registry("loss")


@dataclass
class Critic:
    """D as a loss calls it: `D(x, cond)` passes x through the augmentation pipeline, then D as trained (in
    DistributedDataParallel, compiled); `D(x, cond, plain=True)` through D itself, for penalties on its
    input gradient (a double backward, which those wrappers lack). `observe(real_out)`: D's scores of this
    step's real images, for the pipeline (adaptive augmentation)."""

    net: Callable[..., torch.Tensor]
    plain: nn.Module
    augment: Augment = field(default_factory=Augment)
    # real images with conditions that do not match them, shown to a matching-aware D as negatives
    mismatch: Callable[[torch.Tensor], torch.Tensor] | None = None
    loss_scale: Callable[[], float] = lambda: 1.0  # fp16's loss scale, for the penalties (a host sync)

    def __call__(self, x: torch.Tensor, cond: torch.Tensor | None = None, plain: bool = False) -> torch.Tensor:
        net = self.plain if plain else self.net
        x = self.augment(x)
        return net(x) if cond is None else net(x, cond)

    @property
    def wrapped(self) -> bool:
        return self.net is not self.plain

    def observe(self, real_out: torch.Tensor) -> None:
        self.augment.observe(real_out.detach())


class Loss:
    """The base of every loss (see the module's docstring). `cfg` is the run's TrainConfig."""

    name: str  # set by LOSSES.register
    options: tuple[Option, ...] = (
        Option("r1_gamma", float, 0.0, "R1 penalty (gamma / 2) E||grad D(x)||^2 on real images, with any loss; "
               "0: off", non_negative),
    )
    n_critic = 1  # D steps per G step, unless the config says otherwise
    d_norm = "batch"  # D's normalisation (conv nets), unless the config says otherwise (or spectral_norm)
    logits = False  # D's outputs are logits: d_real and d_fake are reported as probabilities, sigmoid(D)
    input_gradient = False  # differentiates D's input gradient (a penalty): D cannot be compiled

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def defaults(cls, cfg) -> dict:
        """The defaults that follow from other options, as this loss decides them (as Family.defaults)."""
        return {"n_critic": cls.n_critic, "d_norm": "none" if cfg.spectral_norm else cls.d_norm}

    @classmethod
    def check(cls, cfg) -> None:
        """Raise a GanforgeError for an option this loss cannot train with (cfg has its defaults filled in)."""
        if not issubclass(cls, TargetLoss) and (cfg.real_label, cfg.fake_label or 0.0, cfg.label_smoothing) != (1, 0, 0):
            raise GanforgeError(f"loss={cfg.loss!r}: has no targets: real_label, fake_label and label_smoothing "
                                f"apply to {', '.join(n for n in LOSSES if issubclass(LOSSES[n], TargetLoss))} only")

    # --- the phases of a step, and their state
    def phases(self) -> list[Phase]:
        """D's step every step, then G's every n_critic-th step on the updated D (D frozen), G's EMA after it."""
        return [Phase("D", "D", self._d_phase, after=lambda s: self.after_discriminator_step(s.D)),
                Phase("G", "G", self._g_phase, interval=self.cfg.n_critic, after=lambda s: s.update_ema())]

    def _d_phase(self, s, b: Batch) -> torch.Tensor:
        return self.discriminator(s.critic, b.real, b.fake.detach(), b.cond)

    def _g_phase(self, s, b: Batch) -> torch.Tensor:
        return self.generator(s.critic_frozen, b.real, b.fake, b.cond) + b.g_extra

    def state_dict(self) -> dict:
        """What this loss carries from step to step (tensors, numbers): none for a loss of D's outputs."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @property
    def compiles_d(self) -> bool:
        """Whether D may be compiled: not when a penalty differentiates its input gradient."""
        return not (self.input_gradient or self.cfg.r1_gamma)

    # --- the terms on D's outputs (float32), for the losses that are a pair of them
    def d_term(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_term(self, fake_out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- what the loop calls
    def discriminator(self, D: Critic, real: torch.Tensor, fake: torch.Tensor, cond=None) -> torch.Tensor:
        """D's loss on real images and forgeries (G not updated), penalties included."""
        if self.cfg.r1_gamma:
            real = real.detach().requires_grad_(True)
        real_out, fake_out = D(real, cond), D(fake, cond)
        D.observe(real_out)
        wrong = D.mismatch(cond) if D.mismatch is not None else None
        negatives = fake_out if wrong is None else torch.cat([fake_out, D(real.detach(), wrong)])
        loss = self.d_term(real_out.float(), negatives.float())
        report("d_loss", loss)
        self.report_scores(real_out, fake_out)
        return loss + self.penalties(D, real, fake, cond, real_out)

    def penalties(self, D: Critic, real: torch.Tensor, fake: torch.Tensor, cond, real_out: torch.Tensor):
        """What D's loss adds: here R1 with r1_gamma (from D's own outputs when D is not wrapped)."""
        if not self.cfg.r1_gamma:
            return 0.0
        out = D(real, cond, plain=True) if D.wrapped else real_out
        r1 = r1_penalty(out, real, D.loss_scale())
        report("d_loss/r1", r1)
        return self.cfg.r1_gamma / 2 * r1

    def generator(self, D: Critic, real: torch.Tensor, fake: torch.Tensor, cond=None) -> torch.Tensor:
        """G's loss on its forgeries, as the (just updated) D scores them."""
        loss = self.g_term(D(fake, cond).float())
        report("g_loss", loss)
        return loss

    def after_discriminator_step(self, D: nn.Module) -> None:
        """Anything done to D's weights after its optimiser step (WGAN's clipping)."""

    @torch.no_grad()
    def report_scores(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> None:
        """d_real and d_fake: mean D(x) and D(G(z)), as probabilities where D's outputs are logits."""
        score = torch.sigmoid if self.logits else torch.as_tensor
        report("d_real", score(real_out.detach().float()).mean())
        report("d_fake", score(fake_out.detach().float()).mean())


class TargetLoss(Loss):
    """A loss that pulls D's outputs towards targets: real_label for real images, fake_label for forgeries."""

    options = (
        Option("real_label", float, 1.0, "D's target for real images; 0 gives the convention \"D near 0 means "
               "real\"", within(0, 1)),
        Option("fake_label", float | None, None, "D's target for forgeries; none: 1 - real_label", within(0, 1)),
        Option("label_smoothing", float, 0.0, "one-sided: the real target moves this far towards the fake one",
               lambda v: None if 0 <= v < 0.5 else "must be in [0, 0.5)"),
    )

    def __init__(self, cfg):
        super().__init__(cfg)
        self.fake_target = cfg.fake_label
        self.real_target = cfg.real_label + cfg.label_smoothing * (cfg.fake_label - cfg.real_label)

    @classmethod
    def defaults(cls, cfg):
        return super().defaults(cfg) | {"fake_label": 1.0 - cfg.real_label}

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        if cfg.real_label == cfg.fake_label:
            raise GanforgeError(f"real_label={cfg.real_label!r}: must differ from fake_label")

