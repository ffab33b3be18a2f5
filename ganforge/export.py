"""Exporting a trained generator: an ONNX graph that runs without torch, or a self-contained model folder.

`export_onnx(RUN, "g.onnx")`: the generator (its EMA by default) as one ONNX graph with a dynamic batch
dimension. Inputs "z" (N, z_dim) float32, and "label" (N,) int64 for a class-conditional model; for StackGAN
"noise" (N, noise_dim) float32 and "text" (N, text_dim) float32, a caption's embedding by ganforge's text
encoder (which stays outside the graph). Output "image" (N, C, H, W) float32 in [-1, 1] (and "stage1", Stage-I's
image, for a Stage-II model). What a user needs to draw from it is in the model's metadata_props. Before it is
written, onnxruntime runs it on batches of seeds of two sizes and must give torch's images within TOLERANCE;
an export that does not is refused, and nothing is written.

`export_folder(RUN, DIR)`: a model folder in the layout model hubs use: config.json (a checkpoint-like record,
"format": "ganforge-model", that `ganforge.load(DIR)` and every command read), model.safetensors (only what
drawing needs: the chosen generator, and StackGAN's text encoder and frozen Stage-I), README.md (a model card)
and samples.png. Nothing is uploaded anywhere. docs/export.md describes both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import shlex
import warnings
from pathlib import Path

import torch
from torch import nn

from ganforge.checkpoint import MODEL_FILE, MODEL_FORMAT, MODEL_FORMAT_VERSION, find_checkpoint, home, is_model_folder
from ganforge.errors import GanforgeError
from ganforge.families import MODELS
from ganforge.inference import load
from ganforge.io import pack_state, save_record, write_atomic
from ganforge.runfolder import RunFolder
from ganforge.sampling import Sampler, save_grid
from ganforge.t2i import panel_captions
from ganforge.version import __version__

FORMATS = ("onnx", "folder")
OPSET = 18  # the ONNX opset of the graph (onnxruntime runs it from 1.14 on)
TOLERANCE = 1e-4  # the largest difference (max abs) allowed between onnxruntime's images and torch's
CHECKS = ((8, 0), (3, 1))  # (batch size, seed) of the parity check: two sizes show that the batch is dynamic
TENSORS_FILE = "model.safetensors"
SAMPLES_FILE = "samples.png"
INSTALL = "pip install 'ganforge[export]'"


def export(path: str | Path, fmt: str, out: str | Path, ema: bool = True, measure_n: int | None = None) -> Path:
    """Export the checkpoint at `path` (anything `ganforge.load` takes) as `fmt`, "onnx" or "folder", to `out`;
    a folder's card can show a measurement of `measure_n` samples made now."""
    if fmt not in FORMATS:
        raise GanforgeError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        if measure_n:
            raise GanforgeError("--eval measures for a model folder's card; an ONNX export has none")
        return export_onnx(path, out, ema)
    return export_folder(path, out, ema, measure_n)


# --- ONNX
def onnx_metadata(sampler: Sampler) -> dict[str, str]:
    """The metadata_props of an export: what the model is, where it comes from, and how to feed it."""
    meta = sampler.meta
    last = (sampler.stage2 or sampler.stage1) if sampler.takes("captions") else sampler.net
    props = {"model": meta["model_spec"]["model"], "ganforge_version": __version__, "generator": meta["generator"],
             "checkpoint_sha256": meta["sha256"], "step": str(meta["step"]), "data": str(meta["config"].get("data")),
             "image_size": str(last.image_size), "channels": str(last.channels)}
    if meta.get("format") == MODEL_FORMAT:
        props["source_checkpoint_sha256"] = meta["source_sha256"]
    drawn = ("standard normal N(0, 1), float32, independent entries; ganforge draws row i of seed s as "
             "ganforge.sampling.noise(n, {0}, s)[i], so the same rows give the images ganforge draws")
    if sampler.takes("captions"):
        stages = "Stage-I's z, then the eps of each stage's Conditioning Augmentation"
        return props | {
            "noise_dim": str(sampler.noise_dim), "text_dim": str(sampler.stage1.text_dim), "classes": "[]",
            "text_encoder": sampler.encoder.name,
            "inputs": "noise: float32 (N, noise_dim); text: float32 (N, text_dim)",
            "outputs": "image: float32 (N, channels, image_size, image_size) in [-1, 1]"
                       + ("; stage1: Stage-I's image, float32 in [-1, 1]" if sampler.stage2 is not None else ""),
            "noise": f"{stages}: " + drawn.format("noise_dim"),
            "text": f"a caption's unit-length embedding by ganforge's text encoder ({sampler.encoder.name}), which "
                    "is not in this graph: ganforge.load(CHECKPOINT).encoder.encode([caption])"}
    classes = sampler.classes or []
    return props | {
        "z_dim": str(sampler.z_dim), "classes": json.dumps(classes),
        "inputs": "z: float32 (N, z_dim)" + ("; label: int64 (N,), an index into classes" if classes else ""),
        "outputs": "image: float32 (N, channels, image_size, image_size) in [-1, 1]",
        "noise": "z: " + drawn.format("z_dim")}


def _onnx_modules():
    """(onnx, onnxruntime), or a GanforgeError that says how to install them (and onnxscript, torch's exporter's)."""
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as e:
        raise GanforgeError(f"ONNX export needs onnx, onnxruntime and onnxscript ({e}); {INSTALL}") from None
    return onnx, onnxruntime


@contextlib.contextmanager
def _quiet():
    """The exporter's console chatter (prints, warnings, log lines) kept off the console."""
    chatter = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def to_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str]):
    """The ONNX ModelProto of `module` traced on `example`, the first dimension of every input and output dynamic."""
    batch = torch.export.Dim("batch", min=1)
    with _quiet():
        try:
            program = torch.onnx.export(module, example, dynamo=True, input_names=inputs, output_names=outputs,
                                        opset_version=OPSET, dynamic_shapes=tuple({0: batch} for _ in example),
                                        verbose=False)
        except Exception as e:  # noqa: BLE001 - the exporter raises many kinds
            raise GanforgeError(f"torch.onnx could not export this model ({type(e).__name__}: {e})"[:500]) from None
    return program.model_proto


def parity(blob: bytes, module: nn.Module, inputs, names: list[str], onnxruntime) -> float:
    """The largest difference (max abs) between onnxruntime's outputs of the graph `blob` and torch's, over the
    batches of CHECKS; NaN or inf when an output is not finite or its shape differs."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: a failure is reported by the GanforgeError below
    session = onnxruntime.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for n, seed in CHECKS:
        batch = inputs(n, seed)
        with torch.no_grad():
            expected = module(*batch)
        try:
            got = session.run(None, {name: x.numpy() for name, x in zip(names, batch)})
        except Exception as e:  # noqa: BLE001 - onnxruntime's own error types
            raise GanforgeError(f"onnxruntime could not run the export on a batch of {n} "
                                f"({type(e).__name__}: {e})"[:500]) from None
        for want, have in zip(expected if isinstance(expected, tuple) else (expected,), got):
            diff = float(abs(have - want.numpy()).max()) if have.shape == tuple(want.shape) else math.inf
            if math.isnan(diff) or diff > worst:
                worst = diff
    return worst


def export_onnx(path: str | Path, out: str | Path, ema: bool = True) -> Path:
    """Write the generator of the checkpoint at `path` as an ONNX graph to `out` (.onnx), once onnxruntime gives
    torch's images within TOLERANCE on two batch sizes. Returns `out`."""
    out = Path(out).expanduser()
    if out.suffix.lower() != ".onnx" or out.is_dir():
        raise GanforgeError(f"--out {out}: an ONNX export is a file ending in .onnx")
    onnx, onnxruntime = _onnx_modules()
    sampler = load(path, ema)
    module, inputs, outputs, batch = sampler.graph()
    proto = to_onnx(module, batch(*CHECKS[0]), inputs, outputs)
    props = onnx_metadata(sampler)
    onnx.helper.set_model_props(proto, props)
    worst = parity(proto.SerializeToString(), module, batch, inputs, onnxruntime)
    sizes = " and ".join(str(n) for n, _ in CHECKS)
    if not worst <= TOLERANCE:
        raise GanforgeError(f"the ONNX export differs from torch by {worst:.3g} (max abs, on batches of {sizes}; "
                            f"at most {TOLERANCE:g} is allowed), so it was not written")
    onnx.helper.set_model_props(proto, props | {"parity": f"onnxruntime gives torch's images within {worst:.3g} "
                                                           f"(max abs) on batches of {sizes} seeds"})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, proto.SerializeToString())
    return out


# --- the model folder
def drawing_tensors(sampler: Sampler) -> dict[str, torch.Tensor]:
    """What drawing needs, under the checkpoint's own names: the chosen generator (G_ema/ or G/), and for StackGAN
    its text encoder (with the image side of its pretraining, text_image/, which the JSON names) and, for
    Stage-II, its frozen Stage-I (G1/). No D, optimizer moments or RNG states."""
    which = sampler.meta["generator"]
    if not sampler.takes("captions"):
        return pack_state(which, sampler.net.state_dict())
    tensors = sampler.encoder.state()[0]
    if sampler.stage2 is None:
        return tensors | pack_state(which, sampler.stage1.state_dict())
    return tensors | pack_state("G1", sampler.stage1.state_dict()) | pack_state(which, sampler.stage2.state_dict())


def sample_grid(sampler: Sampler, name: str, captions: list[str]) -> tuple[torch.Tensor, int, str]:
    """(the card's sample grid, images per row, a sentence on what it shows and the command that draws it)."""
    if sampler.takes("captions"):
        coarse, fine = sampler(captions, 8, 0)
        quoted = " ".join(shlex.quote(c) for c in captions)
        return (coarse if fine is None else fine), 8, (
            f"A row per caption ({'; '.join(captions)}), 8 samples each from the noise of seed 0: "
            f"`ganforge t2i {name} {quoted} --n 8 --seed 0 --out figure.png`.")
    if sampler.conditional and len(sampler.classes) <= 16:
        return sampler.class_grid(8, 0), 8, (
            f"A row per class ({', '.join(sampler.classes)}), each column the same noise of seed 0: "
            f"`ganforge sample {name} --grid-by-class --n 8 --out samples.png`.")
    return sampler.sample(64, 0), 8, (f"64 samples from the noise of seed 0: "
                                      f"`ganforge sample {name} --n 64 --seed 0 --out samples.png`.")


def _text(value) -> str:
    """A config value as `--set` reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


BUDGET = ("steps", "epochs", "minutes")
SHOWN = ("model", "data", "seed")  # given as flags of their own; every other key that differs as --set key=value


def train_command(config: dict, step: int, from_data: list[str] = ()) -> tuple[str, list[str]]:
    """(the `ganforge train` command that trains `config` to `step`, the keys it cannot set to the config's values:
    none unless a value does not survive --set). It gives --model, --data, --seed, --steps (the step reached), and
    --set key=value for each key whose value differs from what the cpu preset and the others give; the keys
    `from_data` (what the data decided when the run started: config.settle) are left to the data again."""
    from ganforge.config import TrainConfig, make_config

    unset = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in from_data}
    goal = TrainConfig.from_saved(config | unset).to_dict() | {"steps": step, "epochs": None, "minutes": None}
    flags = {k: goal[k] for k in SHOWN} | {"steps": step}

    def built(keys: list[str]) -> dict:
        return make_config("cpu", flags, [f"{k}={_text(goal[k])}" for k in keys]).to_dict()

    keys = [k for k, v in built([]).items() if v != goal[k]]
    for key in reversed(list(keys)):  # leave out what the others imply (a loss's n_critic and d_norm, ...)
        rest = [k for k in keys if k != key]
        if built(rest) == goal:
            keys = rest
    result = built(keys)
    words = ["ganforge", "train", "--model", goal["model"], "--data", goal["data"], "--steps", str(step), "--seed",
             str(goal["seed"])] + [w for k in keys for w in ("--set", f"{k}={_text(goal[k])}")]
    return shlex.join(words), [k for k in goal if result[k] != goal[k]]


METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")


def metrics_table(evals: list[dict], name: str, text: bool = False) -> str:
    """The card's metrics: a table of the run's measurements (the last 10), or how to measure them."""
    if not evals and text:
        return ("None were measured during training; text-to-image models are measured by "
                "benchmarks/text_to_image.py in ganforge's repository (see docs/text-to-image.md).")
    if not evals:
        return ("None were measured during training (the run was trained without `--eval-every`); "
                f"`ganforge eval {name}` measures FID, KID, precision, recall, density and coverage, and "
                "`ganforge export --format folder --eval 10000` puts them on the card.")
    rows = ["| step | images seen | extractor | samples | " + " | ".join(METRICS) + " |",
            "|" + "---|" * (4 + len(METRICS))]
    for e in evals[-10:]:
        values = [f"{e[k]:.4f}" if isinstance(e.get(k), (int, float)) else "" for k in METRICS]
        rows.append(f"| {e.get('step', '')} | {e.get('images_seen', '')} | {e.get('extractor', '')} | "
                    f"{e.get('n_fake', '')} | " + " | ".join(values) + " |")
    more = f" (the last 10 of {len(evals)})" if len(evals) > 10 else ""
    how = "at export (`ganforge export --eval N`)" if evals[-1].get("at_export") else "during training with " \
          "`--eval-every`"
    return (f"Measured {how}{more}; `ganforge eval {name}` measures them again.\n\n"
            + "\n".join(rows))


CARD = """\
# {name}

A ganforge `{model}` generator, trained on `{data}`: {size} images drawn from {condition}. It draws with \
{generator}. The model: {description}.

![samples]({samples_file})

{samples_note}

## Training

- Steps reached: {steps}
- The config's budget: steps={budget[0]}, epochs={budget[1]}, minutes={budget[2]} (the first reached stops training)
- Seed {seed}, loss `{loss}`, batch size {batch_size}; every option is in config.json
- Checkpoint: step {step}, SHA-256 `{sha256}` (of its tensors file), trained with ganforge {trained_with}

This command trains it again, to the same weights on the same machine (ganforge's training is deterministic):

```bash
{command}
```
{command_note}
## Metrics

{metrics}

## Use

With ganforge installed, from the folder that holds this one:

```bash
{use_command}
```

```python
import ganforge

g = ganforge.load({name_json})
{use_python}
```

## Files

- `config.json`: what the model is: its networks' arguments, the training config, the step, checksums
- `{tensors_file}`: the weights that drawing needs: {weights}
- `{samples_file}`: the samples above

Exported by ganforge {version} (`ganforge export --format folder`); nothing was uploaded anywhere.
"""


def model_card(sampler: Sampler, name: str, samples_note: str, evals: list[dict]) -> str:
    """README.md of a model folder: the model and its data, its training and how to repeat it, its metrics, its
    samples, and how to draw from it."""
    meta = sampler.meta
    cfg, model, step = meta["config"], meta["model_spec"]["model"], meta["step"]
    text = sampler.takes("captions")
    last = (sampler.stage2 or sampler.stage1) if text else sampler.net
    command, inexact = train_command(cfg, step, meta.get("from_data", []))
    notes = [f"\n(It cannot give these keys this run's values: {', '.join(inexact)}.)\n"] if inexact else []
    if text and sampler.stage2 is not None:
        notes.append("\n`--stage1` names the Stage-I run it refines: train that first (its config is in config.json, "
                     "under model_spec.stage1).\n")
    seen = (f" ({meta['images_seen']:,} images seen, {meta['seconds']:.0f} s of training)"
            if all(k in meta for k in ("images_seen", "seconds")) else "")
    return CARD.format(
        name=name, name_json=json.dumps(name), model=model, description=MODELS.description(model), data=cfg["data"],
        size=f"{last.image_size}x{last.image_size} {'RGB' if last.channels == 3 else 'grayscale'}",
        condition=(f"captions (embedded by its {sampler.encoder.name} text encoder)" if text
                   else f"noise and one of {len(sampler.classes)} classes" if sampler.conditional else "noise alone"),
        generator={"G_ema": "the moving average of G's weights (G_ema)", "G": "G's own weights"}[meta["generator"]],
        samples_file=SAMPLES_FILE, tensors_file=TENSORS_FILE, samples_note=samples_note,
        steps=f"{step:,}{seen}", budget=[cfg.get(k) for k in BUDGET], seed=cfg["seed"], loss=cfg["loss"],
        batch_size=cfg["batch_size"], step=step, sha256=meta.get("source_sha256", meta["sha256"]),
        trained_with=meta.get("trained_with", meta.get("ganforge_version")), command=command,
        command_note="".join(notes), metrics=metrics_table(evals, name, text),
        use_command=(f'ganforge t2i {name} "a caption" --n 8 --out figure.png' if text
                     else f"ganforge sample {name} --n 64 --seed 0 --out s.png\nganforge eval {name}"),
        use_python=('coarse, fine = g(["a caption"], n=8, seed=0)  # Stage-I, Stage-II images in [-1, 1]' if text
                    else "images = g.sample(16, seed=0)  # float32 (16, C, H, W) in [-1, 1]"),
        weights=", ".join([meta["generator"]] + (["the text encoder"] if text else [])
                          + (["the frozen Stage-I (G1)"] if text and sampler.stage2 is not None else [])),
        version=__version__)


def export_folder(path: str | Path, out: str | Path, ema: bool = True, measure_n: int | None = None) -> Path:
    """Write the model folder `out` (config.json, model.safetensors, README.md, samples.png) of the checkpoint at
    `path`. `out` may be new, empty, or an earlier export (its files are replaced). With `measure_n`, the card
    also shows what `ganforge eval` measures of that many samples now. Returns `out`."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise GanforgeError(f"--out {out}: exists and is not a folder; a folder export needs a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not is_model_folder(out):
        raise GanforgeError(f"--out {out}: a folder that is not empty and not an earlier export; choose a new or "
                            "empty folder")
    source = find_checkpoint(path)
    sampler = load(path, ema)
    meta, name = sampler.meta, out.resolve().name
    run = RunFolder(home(source))
    evals = run.stats().evals if run.has_stats() else list(meta.get("evals", []))
    if measure_n and sampler.takes("captions"):
        raise GanforgeError("--eval measures image models; text-to-image models are measured by "
                            "benchmarks/text_to_image.py")
    if measure_n:
        from ganforge.metrics.evaluate import measure

        evals = evals + [{"step": meta["step"], "images_seen": meta.get("images_seen", ""), "at_export": True,
                          **measure(sampler, measure_n)}]
    captions = (panel_captions(sampler, run.path)[:8] or ["a picture"]) if sampler.takes("captions") else []
    images, nrow, note = sample_grid(sampler, name, captions)
    record = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "ganforge_version": __version__,
              "trained_with": meta.get("trained_with", meta.get("ganforge_version")), "step": meta["step"],
              "model_spec": meta["model_spec"], "config": meta["config"], "from_data": meta.get("from_data", []),
              "generator": meta["generator"],
              "source_sha256": meta.get("source_sha256", meta["sha256"]), "evals": evals}
    record |= {k: meta[k] for k in ("epoch", "images_seen", "seconds", "text") if k in meta}
    if captions:
        record["captions"] = captions
    out.mkdir(parents=True, exist_ok=True)
    save_grid(images, out / SAMPLES_FILE, nrow)
    write_atomic(out / "README.md", model_card(sampler, name, note, evals).encode())
    save_record(out / TENSORS_FILE, drawing_tensors(sampler), record, json_path=out / MODEL_FILE)  # the JSON last
    return out
