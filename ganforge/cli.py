"""The `ganforge` command: parses options and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from ganforge.config import PRECISIONS, TrainConfig, image_sizes, key_help
from ganforge.data.sources import sources_help, spellings
from ganforge.directions import METHODS
from ganforge.errors import GanforgeError
from ganforge.families import MODELS
from ganforge.losses import LOSSES
from ganforge.metrics.features import EXTRACTORS
from ganforge.models.text import TEXT_ENCODERS
from ganforge.version import __version__

DEFAULT_MINUTES = 3.0  # the budget when none of --steps, --epochs, --minutes is given
# train's flags that set config fields (default None: not given); a resumed run keeps its own
RUN_FLAGS = ("model", "loss", "data", "image_size", "channels", "data_dir", "download", "folder_labels", "seed",
             "eval_every", "tensorboard", "stage1", "text_encoder")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _set_keys_help() -> str:
    """The epilog of `train --help`: every key --set takes, with its default and what it means (config.key_help)."""
    import textwrap

    head = textwrap.fill("--set KEY=VALUE takes any config key: those of every run, then those the models, losses "
                         "and text encoders declare (ganforge/config.py, and each plug-in beside its code):", 100)
    return "\n".join([head] + [textwrap.fill(f"{f.name} (default {f.default!r}): {key_help(f.name)}", 100,
                                             initial_indent="  ", subsequent_indent="      ")
                                for f in dataclasses.fields(TrainConfig)])


def _key_help(key: str) -> str:
    """A flag's help: its config key's (config.key_help), and its default where it has one to say."""
    default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == key)
    return key_help(key) + (f" (default: {default})" if default is not None and default is not False else "")


def _direction_flags(parser) -> None:
    parser.add_argument("--direction", type=int, metavar="I", help="move every z along latent direction I (0 is "
                        "the strongest; see `ganforge directions`)")
    parser.add_argument("--amount", type=float, default=1.0, help="how far along --direction (default: 1; the "
                        "directions figure spans -3 to +3)")
    parser.add_argument("--method", choices=list(METHODS), default="sefa", help="whose --direction: sefa (default) "
                        "or pca")


def _shift(args, sampler, captions: list[str] = ()):
    """The step added to every noise for --direction/--amount, or None."""
    if args.direction is None:
        return None
    z_dim = sampler.latent().dims
    if not 0 <= args.direction < z_dim:
        raise GanforgeError(f"--direction {args.direction}: this model's directions are numbered 0 to {z_dim - 1} "
                            "(as many as z has numbers), the strongest first")
    found = _directions(args, sampler, min(z_dim, max(10, args.direction + 1)), captions)
    return args.amount * found.vector(args.direction)


def _directions(args, sampler, k: int, captions: list[str]):
    """The --method directions of the checkpoint: kept beside it, else found now and kept. A text-to-image model's
    pca draws its run's panel captions, else `captions`."""
    from ganforge.checkpoint import find_checkpoint, home
    from ganforge.directions import for_checkpoint
    from ganforge.t2i import panel_captions

    ckpt = find_checkpoint(args.checkpoint)
    options = {"samples": getattr(args, "pca_samples", 4096)} if args.method == "pca" else {}
    if options and sampler.takes("captions"):
        options["captions"] = panel_captions(sampler, home(ckpt)) or list(captions)
    return for_checkpoint(ckpt, sampler, args.method, k, **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganforge", description="Train generative adversarial networks, "
                                     "watch the contest, draw samples.")
    parser.add_argument("--version", action="version", version=f"ganforge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = commands.add_parser("train", help="train a GAN; prints its run folder",
                            description="Train a GAN. The run folder (config.json, stats.jsonl, samples/, "
                            "progress.png, curves.png, checkpoints/) is printed at the end. Ctrl-C saves a "
                            "checkpoint; --resume RUN_DIR continues exactly.",
                            epilog=_set_keys_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", choices=MODELS.names(), help=f"the networks and their family: {MODELS.help()}")
    t.add_argument("--loss", choices=LOSSES.names(), help=f"the game: {LOSSES.help()}; their penalties and "
                   "n_critic, spectral_norm, diffaugment, ema_decay: see --set")
    t.add_argument("--data", metavar="SOURCE",
                   help=f"where the images come from: {sources_help()}")
    t.add_argument("--image-size", type=int, choices=image_sizes(),
                   help=_key_help("image_size"))
    t.add_argument("--channels", type=int, choices=[1, 3], help=_key_help("channels"))
    t.add_argument("--data-dir", metavar="DIR", help=_key_help("data_dir"))
    t.add_argument("--download", action="store_true", default=None,
                   help=_key_help("download"))
    t.add_argument("--folder-labels", action="store_true", default=None,
                   help=_key_help("folder_labels"))
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive_int, help="train up to this many steps, counted from the run's start")
    budget.add_argument("--epochs", type=_positive_float, help="train up to this many passes over the data")
    budget.add_argument("--minutes", type=_positive_float, help=f"train this long (default: {DEFAULT_MINUTES:g})")
    t.add_argument("--stage1", metavar="RUN_DIR", help=_key_help("stage1"))
    t.add_argument("--text-encoder", choices=TEXT_ENCODERS.names(), help=f"stackgan1: {TEXT_ENCODERS.help()}")
    t.add_argument("--seed", type=int, help=_key_help("seed"))
    t.add_argument("--preset", default="cpu", help="cpu (default: sized for a laptop CPU) or gpu (the paper's widths)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, e.g. --set batch_size=128 --set loss=minimax (repeatable)")
    t.add_argument("--out", default="runs", metavar="RUNS_DIR", help="where run folders go (default: runs)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its latest checkpoint")
    t.add_argument("--eval-every", type=_positive_int, metavar="K",
                   help="every K epochs, measure FID etc. of 2000 samples into stats.jsonl and curves.png")
    t.add_argument("--tensorboard", action="store_true", default=None, help=_key_help("tensorboard"))
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--device", help=_key_help("device"))
    t.add_argument("--precision", choices=PRECISIONS, help=_key_help("precision"))
    t.add_argument("--compile", action="store_true", default=None, help=_key_help("compile"))
    t.add_argument("--nproc", type=_positive_int, metavar="N", help="train in N processes on this machine "
                   "(DistributedDataParallel, as torchrun would; --set batch_size is per process)")

    p = commands.add_parser("prepare", help="decode a data source once into memory-mapped shards for training",
                            description="Decode any source (folder:PATH, celeba:PATH, lsun:PATH, captions:PATH, or a "
                            "built-in one; `ganforge train --help` lists them) into a prepared data set: uint8 shards read by memory map, and a "
                            "manifest.json. Uses every core; Ctrl-C or a crash keeps the finished shards, and the "
                            "same command continues. Train from it with --data prepared:DIR. Prints the folder.")
    p.add_argument("source", metavar="SOURCE", help=spellings())
    p.add_argument("--image-size", type=int, choices=image_sizes(), help="default: 64 (built-in sets: their own)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="default: 3 (built-in sets: their own)")
    p.add_argument("--out", metavar="DIR", help="the prepared folder (default: ganforge's cache, where training "
                   "from the source would prepare it)")
    p.add_argument("--folder-labels", action="store_true", help="folder:PATH: class labels from subfolder names")
    p.add_argument("--split", choices=["train", "test"], default="train", help="which split (default: train)")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding the IDX files of mnist / fashion-mnist")
    p.add_argument("--workers", type=_positive_int, help="decoding processes (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    s = commands.add_parser("sample", help="draw samples from a checkpoint or run folder",
                            description="Draw samples from a trained generator.")
    s.add_argument("checkpoint", metavar="CKPT_OR_RUN_DIR", help="a run folder (its latest checkpoint) or a checkpoint")
    s.add_argument("--n", type=_positive_int, help="how many images (default: 64; with --grid-by-class, 8 per row)")
    s.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    s.add_argument("--out", required=True, metavar="FILE", help="FILE.png (a grid) or FILE.npy (uint8 array)")
    s.add_argument("--label", metavar="CLASS", help="class-conditional models: draw this class (index or name)")
    s.add_argument("--grid-by-class", action="store_true",
                   help="class-conditional models: one row per class, --n images per row sharing their noise")
    s.add_argument("--no-ema", action="store_true", help="the raw generator instead of its moving average")
    _direction_flags(s)
    e = commands.add_parser("eval", help="measure samples against a data set (FID, KID, precision/recall, ...)",
                            description="Measure a generator's samples, or samples from a file, against a data "
                            "set, offline: features come from ganforge's own extractors.")
    e.add_argument("checkpoint", nargs="?", metavar="CKPT_OR_RUN_DIR", help="draw the samples from this generator")
    e.add_argument("--samples", metavar="FILE.npy|FOLDER", help="evaluate these samples instead of a generator's")
    e.add_argument("--data", help="the real data (default: the checkpoint's training data)")
    e.add_argument("--data-dir", metavar="DIR", help="folder holding the IDX files of mnist / fashion-mnist")
    e.add_argument("--n", type=_positive_int, default=10_000, help="samples to compare (default: 10000)")
    e.add_argument("--seed", type=int, default=0, help="noise seed for a generator's samples (default: 0)")
    e.add_argument("--no-ema", action="store_true", help="the raw generator instead of its moving average")
    e.add_argument("--extractor", help=f"the features measured in: {EXTRACTORS.help()}")
    e.add_argument("--inception-weights", metavar="FILE.pth",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth for --extractor inception "
                   "(default: $GANFORGE_INCEPTION_WEIGHTS, else <cache-dir>/inception/)")
    e.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    e.add_argument("--cache-dir", metavar="DIR", help="classifiers and real-set features (default: ~/.cache/ganforge)")

    m = commands.add_parser("compare", help="a table of runs' final metrics and compare.png of FID over training",
                            description="Compare runs trained with --eval-every: their last measurements as a "
                            "table, and FID against images seen and training seconds in a figure.")
    m.add_argument("runs", nargs="+", metavar="RUN_DIR")
    m.add_argument("--out", default="compare.png", metavar="FILE.png", help="the figure (default: compare.png)")

    i = commands.add_parser("interpolate", help="a walk in z space from one seed's z to another's",
                            description="Images along the line (or great circle, --slerp) between two z vectors.")
    i.add_argument("checkpoint", metavar="CKPT_OR_RUN_DIR")
    i.add_argument("--from", dest="from_seed", type=int, required=True, metavar="SEED", help="the start's noise seed")
    i.add_argument("--to", dest="to_seed", type=int, required=True, metavar="SEED", help="the end's noise seed")
    i.add_argument("--steps", type=_positive_int, default=10, help="images, both ends included (default: 10)")
    i.add_argument("--slerp", action="store_true", help="spherical interpolation instead of a straight line")
    i.add_argument("--label", metavar="CLASS", help="class-conditional models: the class to draw (default: the first)")
    i.add_argument("--out", required=True, metavar="FILE", help="strip.png (a row) or anim.gif (there and back)")
    i.add_argument("--no-ema", action="store_true", help="the raw generator instead of its moving average")

    a = commands.add_parser("arithmetic", help="vector arithmetic on concepts: 'A - B + C'",
                            description="Average each concept's z vectors, combine them as the expression "
                            "says, and draw the result, laid out as in the DCGAN paper. A concept is a list of "
                            "seeds (3,17,42), an attribute query answered by sampling G and keeping what the "
                            "attribute classifier scores highest (smiling&long_hair&!beard), or images to invert "
                            "(images:a.png,b.png,c.png).")
    a.add_argument("checkpoint", metavar="CKPT_OR_RUN_DIR")
    a.add_argument("expression", help="concept names joined by + and -, e.g. 'A - B + C'")
    a.add_argument("--concept", action="append", default=[], metavar="NAME=SEEDS|QUERY|images:FILES",
                   help="what a name in the expression stands for (repeatable)")
    a.add_argument("--k", type=_positive_int, default=3, help="exemplars per query concept (default: 3, at least 3)")
    a.add_argument("--pool", type=_positive_int, default=2000, help="samples a query picks from (default: 2000)")
    a.add_argument("--noise", type=float, default=0.25, help="scale of the noise around the result (default: 0.25)")
    a.add_argument("--seed", type=int, default=0, help="first seed of the query pool and of the noise (default: 0)")
    a.add_argument("--out", required=True, metavar="FILE.png", help="the figure")
    a.add_argument("--json", metavar="FILE", help="also write the concepts' seeds and scores as JSON")
    a.add_argument("--attributes-of", metavar="DATA", help="whose attribute classifier answers queries "
                   "(default: the checkpoint's training data)")
    a.add_argument("--cache-dir", metavar="DIR", help="where classifiers are kept (default: ~/.cache/ganforge)")
    a.add_argument("--no-ema", action="store_true", help="the raw generator instead of its moving average")

    v = commands.add_parser("invert", help="find the z whose image matches a given image",
                            description="Optimise z so that G(z) matches the image: pixel error plus the "
                            "error of a ganforge classifier's features when one is cached for the data, with a "
                            "Gaussian prior on z, from several random starts. Writes the image and its "
                            "reconstruction side by side, and z as .npy.")
    v.add_argument("checkpoint", metavar="CKPT_OR_RUN_DIR")
    v.add_argument("image", help="an image file (resized and centre-cropped to G's size)")
    v.add_argument("--steps", type=_positive_int, default=300, help="optimisation steps (default: 300)")
    v.add_argument("--restarts", type=_positive_int, default=4, help="random starts (default: 4)")
    v.add_argument("--out", required=True, metavar="FILE.png", help="image | reconstruction; z goes to FILE.npy")
    v.add_argument("--cache-dir", metavar="DIR", help="where classifiers are kept (default: ~/.cache/ganforge)")
    v.add_argument("--no-ema", action="store_true", help="the raw generator instead of its moving average")

    x = commands.add_parser("t2i", help="draw images from captions with a text-to-image (StackGAN) checkpoint",
                            description="Draw --n images per caption, the same noises for every caption. A PNG "
                            "shows one row per caption, Stage-I and Stage-II side by side (Stage-I alone for a "
                            "Stage-I checkpoint); .npy holds the final stage's images as uint8.")
    x.add_argument("checkpoint", metavar="CKPT_OR_RUN_DIR")
    x.add_argument("captions", nargs="*", metavar="CAPTION", help="one or more captions, each in quotes")
    x.add_argument("--captions-file", metavar="FILE", help="more captions, one per line (UTF-8)")
    x.add_argument("--n", type=_positive_int, default=8, help="images per caption (default: 8)")
    x.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    x.add_argument("--out", required=True, metavar="FILE", help="FILE.png (the figure) or FILE.npy (uint8 array)")
    x.add_argument("--no-ema", action="store_true", help="the raw generators instead of their moving averages")
    _direction_flags(x)

    d = commands.add_parser("directions", help="find directions in z that change one thing, without labels",
                            description="Latent directions from the generator alone: sefa (the top eigenvectors of "
                            "the first layer's weight on z; instant) or pca (GANSpace: principal components of an "
                            "early layer's activations, regressed onto z). Kept in the run folder "
                            "(directions/METHOD.safetensors + .json) for `sample --direction` and the studio; "
                            "draws a figure: one row per direction, the same samples moved from -3 to +3.")
    d.add_argument("checkpoint", metavar="CKPT_OR_RUN_DIR")
    d.add_argument("--method", choices=list(METHODS), default="sefa", help="sefa (default) or pca")
    d.add_argument("--k", type=_positive_int, default=10, help="how many directions, strongest first (default: 10)")
    d.add_argument("--out", metavar="FILE.png", help="the figure (default: directions/METHOD.png in the run folder)")
    d.add_argument("--json", metavar="FILE", help="also write the directions and their shares as JSON")
    d.add_argument("--samples", type=_positive_int, default=4, help="samples moved in the figure (default: 4)")
    d.add_argument("--steps", type=_positive_int, default=7, help="images from -3 to +3 per sample (default: 7)")
    d.add_argument("--seed", type=int, default=0, help="noise seed of the figure's samples (default: 0)")
    d.add_argument("--pca-samples", type=_positive_int, default=4096, help="pca: samples whose activations it "
                   "reads (default: 4096)")
    d.add_argument("--caption", help="text-to-image models: the caption drawn (default: the run's first panel "
                   "caption)")
    d.add_argument("--no-ema", action="store_true", help="the raw generator instead of its moving average")

    st = commands.add_parser("studio", help="explore generators in the browser: samples, walks, arithmetic, "
                             "text to image, live training curves",
                             description="Serve a local web app (FastAPI) for the run folders and checkpoints "
                             "named, and for the run folders inside a folder named. Only they can be loaded or "
                             "watched. Needs: pip install 'ganforge[studio]'.")
    st.add_argument("paths", nargs="+", metavar="RUN_OR_CKPT_DIR", help="run folders, checkpoints, or a runs folder")
    st.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    st.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    st.add_argument("--threads", type=_positive_int, help="torch threads for generation (default: half the cores, "
                    "at most 4)")

    c = commands.add_parser("classifier", help="train ganforge's domain classifier for a data set")
    c.add_argument("action", choices=["train"])
    c.add_argument("--attributes", action="store_true",
                   help="a multi-label classifier of the data's attributes (faces, celeba:PATH) instead of classes")
    c.add_argument("--data", required=True, help="digits, mnist, fashion-mnist, folder:PATH (with class subfolders); "
                   "with --attributes: faces or celeba:PATH")
    c.add_argument("--data-dir", metavar="DIR", help="folder holding the IDX files of mnist / fashion-mnist")
    c.add_argument("--epochs", type=_positive_int, help="passes over the data (default: 6; 10 with --attributes)")
    c.add_argument("--cache-dir", metavar="DIR", help="where classifiers are kept (default: ~/.cache/ganforge)")

    ex = commands.add_parser("export", help="export a generator: an ONNX graph, or a self-contained model folder",
                             description="--format onnx: the generator as one ONNX graph with a dynamic batch, "
                             "checked against torch with onnxruntime before it is written (needs: pip install "
                             "'ganforge[export]'). --format folder: config.json, model.safetensors, a model card "
                             "(README.md) and samples.png, which `ganforge.load` and every command read. Prints "
                             "the path written. See docs/export.md.")
    ex.add_argument("checkpoint", metavar="CKPT_OR_RUN_DIR", help="a run folder (its latest checkpoint), a "
                    "checkpoint or a model folder")
    ex.add_argument("--format", dest="fmt", choices=["onnx", "folder"], required=True, help="onnx or folder")
    ex.add_argument("--out", required=True, metavar="FILE.onnx|DIR", help="the .onnx file, or the model folder "
                    "(new, empty, or an earlier export)")
    ex.add_argument("--no-ema", action="store_true", help="the raw generator instead of its moving average")
    ex.add_argument("--eval", dest="measure_n", type=_positive_int, metavar="N", help="folder: also measure N "
                    "samples as `ganforge eval` does (its default extractor) and show them on the card")
    return parser


def cmd_train(args) -> int:
    from ganforge.config import make_config
    from ganforge.distributed import launch
    from ganforge.training import train

    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # become torchrun's N workers
        return launch(args.nproc, _without_nproc(args.argv))
    budget = {"steps": args.steps, "epochs": args.epochs, "minutes": args.minutes}
    flags = {k: getattr(args, k) for k in RUN_FLAGS}
    runtime = {"device": args.device, "precision": args.precision, "compile": args.compile}
    if args.resume:
        from ganforge.config import parse_overrides
        from ganforge.training import RECORD_KEYS

        record = {k: flags.pop(k) for k in ("eval_every", "tensorboard")}
        record |= parse_overrides(args.overrides)
        changed = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
        changed += [f"--set {k}" for k in record if k not in RECORD_KEYS]
        if changed:
            raise GanforgeError(f"--resume continues a run with its own model and data; with it, only the budget "
                                f"(--steps, --epochs, --minutes), --device, --precision, --compile, --nproc, "
                                f"--eval-every, --tensorboard and --set {'/'.join(RECORD_KEYS)} may be given "
                                f"(got {', '.join(changed)})")
        run_dir = train(resume=args.resume, budget=budget, progress=not args.quiet, runtime=runtime, record=record)
    else:
        if not any(v is not None for v in budget.values()):
            budget["minutes"] = DEFAULT_MINUTES
        cfg = make_config(args.preset, {**flags, **budget, **runtime}, args.overrides)
        run_dir = train(cfg, runs_dir=args.out, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":
        print(run_dir)
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def cmd_prepare(args) -> int:
    from ganforge.data import prepare_source
    from ganforge.data.prepared import load_prepared

    out = prepare_source(args.source, args.out, args.image_size, args.channels, args.workers,
                         progress=not args.quiet, folder_labels=args.folder_labels, split=args.split,
                         data_dir=args.data_dir)
    data = load_prepared(out)
    c, h, w = data.shape
    print(f"{args.source}: {len(data):,} images of {c}x{h}x{w} ({len(data.skipped)} skipped); train with "
          f"--data prepared:{out}", file=sys.stderr)
    print(out)
    return 0


def cmd_sample(args) -> int:
    from ganforge.inference import load
    from ganforge.sampling import write_samples

    G = load(args.checkpoint, ema=not args.no_ema, kind="image")
    _check_label(G, args.label)
    if args.grid_by_class:
        if args.label is not None:
            raise GanforgeError("--grid-by-class draws every class; leave out --label")
        per_class = args.n or 8
        if args.direction is not None:
            raise GanforgeError("--grid-by-class draws the classes as trained; leave out --direction")
        print(write_samples(G.class_grid(per_class, args.seed), args.out, nrow=per_class))
    else:
        print(write_samples(G.sample(args.n or 64, args.seed, args.label, shift=_shift(args, G)), args.out))
    return 0


def _check_label(G, label: str | None) -> None:
    if label is not None and not G.conditional:
        raise GanforgeError("--label needs a class-conditional model (--model cgan); this one draws no classes")


def cmd_eval(args) -> int:
    import json

    from ganforge.data import load_data
    from ganforge.metrics.evaluate import default_extractor, evaluate, format_table, load_samples, measure
    from ganforge.metrics.features import get_extractor

    if (args.checkpoint is None) == (args.samples is None):
        raise GanforgeError("give either a checkpoint / run folder or --samples FILE.npy|FOLDER")
    if args.samples and not args.data:
        raise GanforgeError("--samples needs --data: the real data to compare with")
    root = Path(args.cache_dir) if args.cache_dir else None
    if args.inception_weights and args.extractor != "inception":
        raise GanforgeError("--inception-weights goes with --extractor inception")
    extractor = get_extractor(args.extractor, root, args.inception_weights) if args.extractor else None
    if args.checkpoint:
        from ganforge.inference import load

        G = load(args.checkpoint, ema=not args.no_ema, kind="image")
        result = measure(G, args.n, args.seed, args.data, extractor, args.data_dir, root)
    else:
        images = load_samples(args.samples, *_native_shape(args.data))
        if extractor is None:  # ganforge's classifier of labelled data, else the self-supervised extractor
            real = load_data(args.data, images.shape[-1], images.shape[1], data_dir=args.data_dir)
            extractor = get_extractor(default_extractor(real, args.data), root, image_size=real.shape[-1],
                                      channels=real.shape[0])
        result = evaluate(images, args.data, extractor, args.n, args.data_dir, root)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _native_shape(data: str) -> tuple[int, int]:
    """(size, channels) that samples given as a folder are brought to: the data's own."""
    from ganforge.data import find_source

    source, path = find_source(data)
    return source.native_shape(path)


def cmd_compare(args) -> int:
    from ganforge.plots import plot_compare
    from ganforge.runfolder import RunFolder

    runs = {}
    for run in args.runs:
        folder = RunFolder(run)
        if not folder.has_stats():
            raise GanforgeError(f"{run}: no stats.jsonl; is it a run folder?")
        measured = folder.stats().evals
        if not measured:
            raise GanforgeError(f"{run}: no quality measurements; train with --eval-every K")
        runs[Path(run).name] = measured
    if len({m[-1]["extractor"] for m in runs.values()}) > 1:
        raise GanforgeError("the runs were measured with different extractors; their numbers are not comparable")
    keys = ["fid", "kid", "precision", "recall", "density", "coverage"]
    print(f"{'run':<32}{'steps':>8}{'images':>10}{'seconds':>9}" + "".join(f"{k:>11}" for k in keys))
    for name, measured in runs.items():
        last = measured[-1]
        print(f"{name:<32}{last['step']:>8}{last['images_seen']:>10}{last['seconds']:>9.0f}"
              + "".join(f"{last[k]:>11.4f}" for k in keys))
    extractor = next(iter(runs.values()))[-1]
    print(f"(last measurement of each run: {extractor['extractor']}, {extractor['n_fake']} samples)")
    plot_compare(runs, Path(args.out))
    print(args.out)
    return 0


def cmd_classifier(args) -> int:
    from ganforge.metrics.classifier import load_classifier, train_classifier

    root = Path(args.cache_dir) if args.cache_dir else None
    path = train_classifier(args.data, root, epochs=args.epochs, data_dir=args.data_dir, attributes=args.attributes)
    meta = load_classifier(args.data, root, args.attributes)[1]
    for name, acc in meta.get("attribute_accuracy", {}).items():
        print(f"  {name:<14}{acc:.4f}", file=sys.stderr)
    what = "worst attribute's held-out accuracy" if args.attributes else "held-out accuracy"
    print(f"classifier:{args.data}: {what} {meta['test_accuracy']:.4f} ({meta['split']}), "
          f"{meta['seconds']:.0f} s", file=sys.stderr)
    print(path)
    return 0


def cmd_interpolate(args) -> int:
    from ganforge.inference import load
    from ganforge.latent import path, seed_noise
    from ganforge.sampling import save_gif, save_grid

    G = load(args.checkpoint, ema=not args.no_ema, kind="image")
    _check_label(G, args.label)
    label = 0 if args.label is None and G.conditional else args.label  # a conditional G: the first class
    ends = seed_noise([args.from_seed, args.to_seed], G.z_dim)
    images = G(path(ends[0], ends[1], args.steps, args.slerp), G.labels(args.steps, label))
    out = Path(args.out)
    if out.suffix.lower() == ".gif":
        save_gif(images, out)
    elif out.suffix.lower() == ".png":
        save_grid(images, out, nrow=args.steps)
    else:
        raise GanforgeError(f"{out}: the output must end in .png (a strip) or .gif (an animation)")
    print(out)
    return 0


def cmd_arithmetic(args) -> int:
    import json

    from ganforge.inference import load
    from ganforge.latent import around, combine, concept_from, parse_expression
    from ganforge.metrics.classifier import attribute_scorer
    from ganforge.plots import plot_arithmetic

    G = load(args.checkpoint, ema=not args.no_ema, kind="image")
    if G.conditional:
        raise GanforgeError("arithmetic works on unconditional generators (dcgan, mlp)")
    terms = parse_expression(args.expression)
    root = Path(args.cache_dir) if args.cache_dir else None
    classifier = None

    def scorer():  # the attribute classifier, loaded (or trained) for the first query only
        nonlocal classifier
        classifier = classifier or attribute_scorer(args.attributes_of or G.meta["config"]["data"], root)
        return classifier

    concepts = {}
    for given in args.concept:
        concept = concept_from(G, given, scorer, args.k, args.pool, args.seed, progress=True)
        concepts[concept.name] = concept
    result = combine(terms, concepts)
    results = G.draw_latent(around(G, result, 9, args.noise, args.seed))
    columns = [(f"{'+' if sign > 0 else '−'} {name}: {concepts[name].source}", concepts[name].images,
                G.draw_latent(concepts[name].mean.unsqueeze(0))) for sign, name in terms]
    plot_arithmetic(columns, results, Path(args.out), title=args.expression)
    if args.json:
        record = {"expression": args.expression, "noise": args.noise,
                  "concepts": {n: {"source": c.source, "seeds": c.seeds, "scores": c.scores} for n, c in concepts.items()},
                  "space": G.latent_space, "result_latent": result.tolist()}
        if classifier:
            logits = classifier[0](results)
            record["result_attributes"] = [[a for a, on in zip(classifier[1], row) if on] for row in (logits > 0).tolist()]
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(args.out)
    return 0


def cmd_invert(args) -> int:
    import numpy as np
    import torch

    from ganforge.inference import load
    from ganforge.latent import inversion_features, invert, read_image
    from ganforge.sampling import save_grid

    G = load(args.checkpoint, ema=not args.no_ema, kind="image")
    if G.conditional:
        raise GanforgeError("invert works on unconditional generators (dcgan, mlp)")
    target = read_image(args.image, G.image_size, G.channels)
    data = G.meta["config"]["data"]
    features = inversion_features(data, G.channels, Path(args.cache_dir) if args.cache_dir else None)
    if features is None:
        print(f"no classifier of {data} cached: pixel loss only (train one with `ganforge classifier train`)",
              file=sys.stderr)
    latent, mse = invert(G, target, args.steps, args.restarts, features=features, progress=True)
    out = Path(args.out)
    save_grid(torch.stack([target, G.draw_latent(latent.unsqueeze(0))[0]]), out, nrow=2)
    np.save(out.with_suffix(".npy"), latent.numpy())
    print(f"pixel MSE {mse:.4f} (images in [-1, 1]); {G.latent_space} in {out.with_suffix('.npy')}", file=sys.stderr)
    print(out)
    return 0


def cmd_t2i(args) -> int:
    from ganforge.inference import load
    from ganforge.sampling import write_samples
    from ganforge.t2i import check_captions, t2i_figure

    captions = list(args.captions)
    if args.captions_file:
        try:
            text = Path(args.captions_file).read_bytes().decode("utf-8")
        except OSError as e:
            raise GanforgeError(f"--captions-file {args.captions_file}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise GanforgeError(f"--captions-file {args.captions_file}: not UTF-8 text ({e.reason} at byte "
                                f"{e.start})") from None
        captions += [line for line in text.splitlines() if line.strip()]
    captions = check_captions(captions)
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npy"):
        raise GanforgeError(f"{out}: the output must end in .png (the figure) or .npy (an array)")
    pipe = load(args.checkpoint, ema=not args.no_ema, kind="text")
    pipe.warn_unknown(captions)
    coarse, fine = pipe(captions, args.n, args.seed, shift=_shift(args, pipe, captions))
    if out.suffix.lower() == ".png":
        t2i_figure(captions, coarse, fine, out)
    else:
        write_samples(coarse if fine is None else fine, out)
    print(out)
    return 0


def cmd_directions(args) -> int:
    import json

    import torch

    from ganforge.checkpoint import find_checkpoint, home
    from ganforge.directions import walk
    from ganforge.inference import load
    from ganforge.plots import plot_directions
    from ganforge.sampling import noise
    from ganforge.t2i import check_captions, panel_captions

    if args.out and Path(args.out).suffix.lower() != ".png":
        raise GanforgeError(f"{args.out}: the figure must end in .png")
    sampler = load(args.checkpoint, ema=not args.no_ema)
    ckpt = find_checkpoint(args.checkpoint)
    text = sampler.takes("captions")
    if args.caption is not None and not text:
        raise GanforgeError("--caption is for text-to-image models; this one draws from noise alone")
    captions = (check_captions([args.caption]) if args.caption is not None
                else panel_captions(sampler, home(ckpt))[:1] if text else [])
    if text and not captions:
        raise GanforgeError(f"{args.checkpoint}: give --caption: the run folder lists no panel captions to draw")
    found = _directions(args, sampler, args.k, captions)
    amounts = torch.linspace(-3, 3, args.steps)
    z = noise(args.samples, found.vectors.shape[1], args.seed)
    labels = sampler.labels(args.samples) if not text else None
    images = walk(sampler, found, z, amounts, labels, captions * args.samples if text else None)
    out = Path(args.out) if args.out else home(ckpt) / "directions" / f"{args.method}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    about = f" for {captions[0]!r}" if text else ""
    plot_directions(images, found.strength, args.method, amounts, out,
                    f"{args.method} directions of {Path(args.checkpoint).name}{about}: the same samples moved "
                    f"along each, -3 to +3")
    if args.json:
        Path(args.json).write_text(json.dumps({"method": args.method, "checkpoint": str(ckpt),
                                               "checkpoint_sha256": found.checkpoint_sha256,
                                               "strength": [round(float(v), 6) for v in found.strength],
                                               "vectors": [[round(float(x), 6) for x in v] for v in found.vectors]},
                                              indent=1) + "\n")
    print(out)
    return 0


def cmd_export(args) -> int:
    from ganforge.export import export

    print(export(args.checkpoint, args.fmt, args.out, ema=not args.no_ema, measure_n=args.measure_n))
    return 0


def cmd_studio(args) -> int:
    try:
        from ganforge.studio.app import serve
    except ImportError as e:
        raise GanforgeError(f"the studio needs FastAPI and uvicorn ({e}); pip install 'ganforge[studio]'") from None
    if not 0 < args.port < 65536:
        raise GanforgeError(f"--port {args.port}: expected a port between 1 and 65535")
    serve(args.paths, args.host, args.port, args.threads)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return {"train": cmd_train, "prepare": cmd_prepare, "sample": cmd_sample, "eval": cmd_eval,
                "compare": cmd_compare, "interpolate": cmd_interpolate, "arithmetic": cmd_arithmetic,
                "invert": cmd_invert, "classifier": cmd_classifier, "t2i": cmd_t2i, "directions": cmd_directions,
                "studio": cmd_studio, "export": cmd_export}[args.command](args)
    except GanforgeError as e:
        print(f"ganforge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
