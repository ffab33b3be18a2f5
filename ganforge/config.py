"""Training configuration: one typed dataclass, presets, and `--set key=value` overrides.

TrainConfig holds the options of every run (CoreConfig, below) and the options that each registered
plug-in declares beside it (PLUGIN_OPTIONS: a loss's, a model's, a text encoder's). Every option can be
set with `--set key=value`; `validate()` checks them all and fills in the defaults that depend on others (each
plug-in's `defaults`); `settle()` fills in those that depend on the data, once, and freezes the result: the config
a run trains with. `key_help` is every key's help, with what each plug-in decides for it: `train --help` lists it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, fields

from ganforge.augment import ADA_POLICY, ADA_TARGET, parse_policy
from ganforge.data.sources import source_problem
from ganforge.errors import GanforgeError
from ganforge.families import MODELS
from ganforge.losses import LOSSES
from ganforge.metrics.features import EXTRACTORS
from ganforge.models.text import TEXT_ENCODERS
from ganforge.registry import NEW, Option


def opt(default, help: str):
    """A CoreConfig field: its default, and its help (`{decided}` in it: what each plug-in decides; key_help)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class CoreConfig:
    """The options of every run, with their help. TrainConfig adds those each plug-in declares beside it (a loss's
    in losses/, a model's in families/, a text encoder's in models/text.py); `ganforge train --help` lists all."""

    # --- what to train
    model: str = opt("dcgan", "the networks and their family: one of MODELS (families/)")
    data: str = opt("digits", "where the images come from: one of SOURCES (data/sources.py): digits, faces, "
                    "folder:PATH, prepared:DIR, ...")
    data_dir: str | None = opt(None, "where the IDX files of mnist / fashion-mnist lie")
    download: bool = opt(False, "let torchvision download mnist / fashion-mnist (needs the network)")
    image_size: int | None = opt(None, "one of the model's sizes; none: the data's own (28 for the digits, 64 for "
                                 "folders), at most 32 for stackgan1, twice Stage-I's for stackgan2; settled into "
                                 "the config when the run starts")
    channels: int | None = opt(None, "1 or 3; none: the data's own (folders: 3), settled as image_size is")
    folder_labels: bool = opt(False, "folder:PATH only: one class per subfolder")

    # --- networks
    z_dim: int = opt(100, "length of the noise vector z ~ N(0, I)")
    d_norm: str | None = opt(None, "conv D's normalisation: batch, layer or none; none (unset): none "
                             "with spectral_norm, else the loss's ({decided})")
    spectral_norm: bool = opt(False, "spectral normalisation of every D weight (Miyato et al. 2018)")

    # --- the game
    loss: str = opt("non-saturating", "the game: one of LOSSES (losses/)")
    n_critic: int | None = opt(None, "D steps per G step; none: the loss's ({decided})")
    diffaugment: str = opt("", "DiffAugment policy for small data, e.g. color,translation,cutout; empty: off")
    ada: bool | None = opt(None, "adaptive augmentation (ADA): each image takes each of diffaugment's transforms "
                           "with a probability p that D's overfitting signal E[sign D(x)] steers towards ada_target "
                           f"(with ada and no policy: {ADA_POLICY}); none: the model's default for the data's size, "
                           "settled when the run starts")
    ada_target: float = opt(ADA_TARGET, "ada: the E[sign D(x)] that p is steered towards")
    ema_decay: float | None = opt(0.999, "EMA of G's weights, used for samples and evaluation; none: no EMA")

    # --- optimisation (Adam with the DCGAN paper's settings)
    batch_size: int = opt(32, "images per step (small batches: more updates per minute, which a CPU budget lacks)")
    lr_g: float | None = opt(None, "G's learning rate; none: the model's ({decided})")
    lr_d: float | None = opt(None, "D's learning rate; none: the model's ({decided})")
    beta1: float = opt(0.5, "Adam's beta1 (the DCGAN paper's)")
    beta2: float = opt(0.999, "Adam's beta2")
    lr_decay: float = opt(0.0, "share of the budget, at its end, over which both learning rates fall linearly to 0")

    # --- budget: the first one reached stops training; all count from the start of the run
    steps: int | None = opt(None, "iterations: one batch each, a D step and (every n_critic) a G step")
    epochs: float | None = opt(None, "passes over the data")
    minutes: float | None = opt(None, "training wall-clock time")

    # --- bookkeeping
    seed: int = opt(0, "random seed")
    log_every: int = opt(25, "steps between stats.jsonl lines")
    checkpoint_every: int = opt(0, "steps between checkpoints besides each epoch end; 0: epoch ends only")
    keep_checkpoints: int = opt(2, "newest checkpoints kept on disk")
    n_samples: int = opt(64, "size of the fixed-noise panel drawn every epoch")
    eval_every: int = opt(0, "epochs between quality measurements appended to stats.jsonl; 0: none")
    eval_n: int = opt(2000, "samples (and real images) per measurement")
    eval_extractor: str | None = opt(None, "features for eval_every; none: classifier:<data> for labelled data, "
                                     "else ssl:<data>")
    tensorboard: bool = opt(False, "also write TensorBoard event files (needs the tensorboard extra)")
    channels_last: bool = opt(True, "NHWC memory layout for conv nets (measured faster on CPU)")
    nan_lr_factor: float = opt(0.5, "a non-finite loss rolls back to the last checkpoint with the learning rates "
                               "times this")
    max_rollbacks: int = opt(3, "rollbacks before training stops with an explanation")

    # --- where and how (a resume may change these)
    device: str = opt("auto", "auto (CUDA when present, else the CPU), cpu, cuda or cuda:N")
    precision: str = opt("auto", "autocast for the forward passes: auto (bf16 where the device multiplies it fast: "
                         "AMX, AVX-512 BF16, CUDA; else fp32; hardware.choose_precision), fp32, bf16, or fp16 "
                         "(CUDA only, loss-scaled)")
    compile: bool = opt(False, "torch.compile G and D (falls back with a warning where no compiler is found)")
    sync_bn: bool = opt(False, "several CUDA processes: batch norm statistics over all of them (SyncBatchNorm)")

    def validate(self) -> TrainConfig:
        """The config checked (a GanforgeError names the first wrong value), with the defaults that follow from
        other options filled in where it leaves them unset: the model's and the loss's (their `defaults`). A copy;
        the config itself when it has nothing to fill."""
        for key, registry in (("model", MODELS), ("loss", LOSSES)):
            if getattr(self, key) not in registry:
                raise GanforgeError(f"{key}={getattr(self, key)!r}: unknown {registry.kind}; choose one of "
                                    f"{', '.join(registry)}")
        model, loss = MODELS[self.model], LOSSES[self.loss]
        decided = {k: v for k, v in (model.defaults(self) | loss.defaults(self)).items() if getattr(self, k) is None}
        cfg = dataclasses.replace(self, **decided) if decided else self
        cfg._check()
        model.check(cfg)
        loss.check(cfg)
        return cfg

    def _check(self) -> None:
        """validate()'s checks of each value, on the config with its defaults filled in."""
        def bad(key: str, why: str) -> GanforgeError:
            return GanforgeError(f"{key}={getattr(self, key)!r}: {why}")

        if self.precision not in PRECISIONS:
            raise bad("precision", f"choose one of {', '.join(PRECISIONS)}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise bad("device", "choose auto, cpu, cuda or cuda:N")
        if not 0 < self.nan_lr_factor <= 1:
            raise bad("nan_lr_factor", "must be in (0, 1]")
        if self.max_rollbacks < 0:
            raise bad("max_rollbacks", "must be 0 or more")
        if why := source_problem(self.data):
            raise bad("data", why)
        sizes = MODELS[self.model].sizes
        if self.image_size is not None and self.image_size not in sizes:
            raise bad("image_size", f"--model {self.model} draws {', '.join(map(str, sizes))} pixel images")
        if self.channels is not None and self.channels not in (1, 3):
            raise bad("channels", "must be 1 or 3")
        for key in ("z_dim", "batch_size", "log_every", "keep_checkpoints", "n_samples"):
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        for key, top in (("z_dim", 4096), ("batch_size", 65536)):
            if getattr(self, key) > top:
                raise bad(key, f"must be at most {top}")
        for key in ("beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise bad(key, "must be in [0, 1)")
        if not 0 <= self.seed < 2**40:
            raise bad("seed", "must be in [0, 2**40)")
        for key in ("lr_g", "lr_d"):
            if not getattr(self, key) > 0:
                raise bad(key, "must be positive")
        for option in PLUGIN_OPTIONS.values():
            value = getattr(self, option.name)
            why = option.check(value) if option.check is not None and value is not None else None
            if why:
                raise bad(option.name, why)
        if self.d_norm not in D_NORMS:
            raise bad("d_norm", f"choose one of {', '.join(D_NORMS)}")
        if self.n_critic < 1:
            raise bad("n_critic", "must be at least 1")
        if not 0 <= self.lr_decay <= 1:
            raise bad("lr_decay", "must be in [0, 1]: the share of the budget over which the rates fall to 0")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise bad("ema_decay", "must be in [0, 1), or none for no EMA")
        if not 0 < self.ada_target < 1:
            raise bad("ada_target", "must be in (0, 1): the share of real images D may score as real, minus those it may not")
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
        if self.eval_extractor is not None and self.eval_extractor.partition(":")[0] not in EXTRACTORS:
            raise bad("eval_extractor", f"unknown feature extractor; choose one of {EXTRACTORS.help()}")
        if self.checkpoint_every < 0:
            raise bad("checkpoint_every", "must be 0 or more")

    def __setattr__(self, key: str, value) -> None:
        """A settled config (config.settle: what a run trains with and records) is frozen: a change raises, and
        dataclasses.replace makes a changed copy. Setting a value it already holds is no change."""
        if getattr(self, "_settled", False) and getattr(self, key) != value:
            raise AttributeError(f"{key}: a run's settled config does not change; dataclasses.replace makes a copy")
        object.__setattr__(self, key, value)

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

    @classmethod
    def from_saved(cls, values: dict) -> TrainConfig:
        """A saved run's config (config.json, a checkpoint's JSON): as from_dict, with each option it predates
        set to what it trained with then (an Option's `before`), not to today's default."""
        if isinstance(values, dict):
            values = {o.name: o.before for o in PLUGIN_OPTIONS.values() if o.before is not NEW} | values
        return cls.from_dict(values)


def _plugin_options() -> dict[str, Option]:
    """Every option the registered plug-ins declare, by name; two declarations of one name are a bug."""
    found: dict[str, Option] = {}
    core = {f.name for f in fields(CoreConfig)}
    for registry in (MODELS, LOSSES, TEXT_ENCODERS):
        for option in registry.options():
            if option.name in core or found.get(option.name, option) is not option:
                raise ValueError(f"config option {option.name!r} is declared twice")
            found[option.name] = option
    return found


PLUGIN_OPTIONS = _plugin_options()
TrainConfig = dataclasses.make_dataclass(
    "TrainConfig", [(o.name, o.type, dataclasses.field(default=o.default)) for o in PLUGIN_OPTIONS.values()],
    bases=(CoreConfig,), namespace={"__module__": __name__, "__doc__": "A run's configuration: CoreConfig's "
                                    "options and those the registered plug-ins declare (PLUGIN_OPTIONS)."})



def key_help(key: str) -> str:
    """The help of config key `key` (a CoreConfig field's or a plug-in's Option's), with `{decided}` in it
    written out as what each model and loss decides for it (decided_by)."""
    meta = {f.name: f.metadata for f in fields(TrainConfig)}[key]
    text = meta["help"] if "help" in meta else PLUGIN_OPTIONS[key].help
    return text.replace("{decided}", decided_by(key)) if "{decided}" in text else text


class _Sized:
    """A stand-in for a data set of one image size, to ask a model what it settles for that size."""

    def __init__(self, size: int):
        self.shape = (3, size, size)

    def __len__(self) -> int:
        return 10**9


def decided_by(key: str) -> str:
    """What each model and loss decides for `key` when the config leaves it unset, read from their `defaults`
    (or, for a default that follows the image size, `settle` at each of the model's sizes): e.g. "mlp, cgan,
    light, stackgan1, stackgan2: 0.0002; dcgan: 0.0004", "dcgan: 1 at 28 px, else 0; cgan: 0"."""
    def text(value) -> str:
        return f"{value:g}" if isinstance(value, float) else str(value)

    said: dict[str, list[str]] = {}
    for registry, field in ((MODELS, "model"), (LOSSES, "loss")):
        for name in registry:
            plugin, cfg = registry[name], TrainConfig(**{field: name})
            if key in (values := plugin.defaults(cfg)):
                said.setdefault(text(values[key]), []).append(name)
            elif registry is MODELS and key in (by_size := {s: plugin.settle(cfg, _Sized(s)) for s in plugin.sizes})[plugin.sizes[0]]:
                values = {s: text(v[key]) for s, v in by_size.items()}
                common = max(set(values.values()), key=list(values.values()).count)
                odd = [f"{v} at {s} px" for s, v in values.items() if v != common]
                said.setdefault(", ".join(odd + [f"else {common}" if odd else common]), []).append(name)
    return "; ".join(f"{', '.join(names)}: {value}" for value, names in said.items())


PRECISIONS = ("fp32", "bf16", "fp16", "auto")
D_NORMS = ("batch", "layer", "none")


def settle(cfg: TrainConfig, data) -> tuple[TrainConfig, list[str]]:
    """(the config with every option whose default depends on the data set as its model decides it for `data`
    (Family.settle), the options so set). Values already set stay, so settling a settled config changes nothing:
    config.json and each checkpoint hold the settled config, and a resume reads it as it is."""
    decided = {k: v for k, v in MODELS[cfg.model].settle(cfg, data).items() if getattr(cfg, k) is None}
    if (decided.get("ada", cfg.ada)) and not cfg.diffaugment:  # adaptive with no policy of its own: ADA's
        decided["diffaugment"] = ADA_POLICY
    settled = dataclasses.replace(cfg, **decided).validate()
    object.__setattr__(settled, "_settled", True)  # frozen from here on (CoreConfig.__setattr__)
    return settled, sorted(decided)


def image_sizes() -> list[int]:
    """Every image size some registered model is built at (the command line's choices)."""
    return sorted({size for name in MODELS for size in MODELS[name].sizes})

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
