"""Image models side by side: each trained for the same wall-clock minutes at the same time, then measured alike.

    python benchmarks/families.py [--data faces] [--image-size 64] [--minutes 10] [--models dcgan light]
                                  [--variant NAME MODEL [KEY=VALUE ...]] [--set KEY=VALUE ...] [--train-images N]
                                  [--n 5000] [--extractors classifier:faces ssl:faces]
                                  [--figure docs/gallery/families-64.png] [--signal-figure PNG] [--name NAME] [--smoke]

1. Every run trains at once, each in its own `ganforge train` process with the cores shared out (2 cores, 2 runs:
   one thread each), for --minutes: whatever else runs on the machine slows them alike. --one-by-one trains them
   in turn with every core instead. A run is a model of --models, or a --variant: a name for a model with its own
   settings (`--variant adaptive light ada=true`). --set applies to every run (with `NAME.KEY=VALUE` to one).
   --train-images N: the runs train on a folder of the data's first N images written as PNG files (a user's small
   folder), and are measured against the whole data. The runs go to --work/NAME/.
2. Each run's EMA generator draws --n samples from the same seeds, measured against as many real images in each
   extractor of --extractors (FID, KID, precision, recall, density, coverage). Where the data has attributes (the
   faces), its attribute classifier labels the samples and as many real images: per attribute the share of each
   that carries it, and how many attributes the samples carry in the real share (within ATTRIBUTE_TOLERANCE).
   Where a run adapted its augmentation, D's overfitting signal r_t and the probability p over its second half.
3. --figure: the first 36 samples of each run side by side, titled with its steps and FIDs. --signal-figure: r_t
   and p over training of each run that adapted its augmentation.

Writes benchmarks/results/families-DATA-SIZE[-nN].json (or --name) after each run, with the command, commit,
date, processor and each run's full config. --smoke: 8 steps of tiny models on the digits at 32 px, pixels as
features, no results file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import run_record, write_results

from ganforge import load
from ganforge.checkpoint import load_checkpoint
from ganforge.data import load_data, to_float, to_uint8
from ganforge.metrics.evaluate import evaluate, format_table
from ganforge.plots import plot_adaptive, plot_side_by_side, save_figure
from ganforge.stats import read_stats

ATTRIBUTE_TOLERANCE = 0.05  # an attribute is carried in the real share when its shares differ by at most this
SMOKE = ["--steps", "8", "--set", "g_width=4", "--set", "d_width=4", "--set", "z_dim=8", "--set", "n_samples=4",
         "--set", "batch_size=16"]


def train_all(runs: dict[str, tuple[str, list[str]]], args, data: str, work: Path) -> dict[str, Path]:
    """Start every run's training (at once unless --one-by-one) and wait: -> name -> its run folder.
    runs: name -> (model, its own KEY=VALUE settings)."""
    cores = os.cpu_count() or 1
    threads = cores if args.one_by_one else max(1, cores // len(runs))
    procs = {}
    for name, (model, settings) in runs.items():
        own = [p.split(".", 1)[1] for p in args.pairs if p.startswith(f"{name}.")]
        common = [p for p in args.pairs if "." not in p.split("=", 1)[0]]
        sets = [x for p in common + settings + own for x in ("--set", p)]
        budget = SMOKE if args.smoke else ["--minutes", str(args.minutes)]
        argv = [sys.executable, "-m", "ganforge", "train", "--model", model, "--data", data, "--image-size",
                str(args.image_size), "--seed", str(args.seed), "--out", str(work / name), "--quiet", *budget, *sets]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        procs[name] = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if args.one_by_one:
            procs[name].wait()
    folders = {}
    for name, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{name}: ganforge train failed\n{err[-3000:]}")
        folders[name] = Path(out.strip().splitlines()[-1])
    return folders


def write_folder(data: str, size: int, n: int, folder: Path) -> str:
    """The data's first n images as PNG files in folder (once): -> the folder: source that reads them."""
    from PIL import Image

    if not (folder / "done").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        images = load_data(data, size).images[:n].permute(0, 2, 3, 1)
        for i, image in enumerate(images.squeeze(-1).numpy()):
            Image.fromarray(image).save(folder / f"{i:05d}.png")
        (folder / "done").touch()
    return f"folder:{folder}"


def adaptive_summary(lines: list[dict]) -> dict | None:
    """r_t and p over the second half of a run's train lines; None where it did not adapt its augmentation."""
    lines = [s for s in lines if "aug_rt" in s]
    if not lines:
        return None
    half = lines[len(lines) // 2:]
    return {"rt_mean_second_half": sum(s["aug_rt"] for s in half) / len(half),
            "p_mean_second_half": sum(s["aug_p"] for s in half) / len(half), "p_final": lines[-1]["aug_p"],
            "lines": len(lines)}


def attribute_shares(data: str, fakes: torch.Tensor, n: int) -> dict | None:
    """Per attribute, the share of samples and of n real images the data's attribute classifier says carry it."""
    real = load_data(data, fakes.shape[-1], fakes.shape[1])
    if real.attributes is None:
        return None
    from ganforge.metrics.classifier import attribute_scorer

    classify, names = attribute_scorer(data)
    picks = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:n]
    fake_share = (classify(to_float(fakes)) > 0).double().mean(0)
    real_share = (classify(to_float(real.images[picks])) > 0).double().mean(0)
    carried = (fake_share - real_share).abs() <= ATTRIBUTE_TOLERANCE
    return {"fake": dict(zip(names, fake_share.tolist())), "real": dict(zip(names, real_share.tolist())),
            "carried_in_real_share": int(carried.sum()), "attributes": len(names), "tolerance": ATTRIBUTE_TOLERANCE}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="faces")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--models", nargs="+", default=None, help="models as they are (default: dcgan light, "
                        "unless there are variants)")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME MODEL [KEY=VALUE]",
                        help="a run named NAME of MODEL with its own settings (repeat for more)")
    parser.add_argument("--train-images", type=int, help="train on a folder of the data's first N images")
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="[MODEL.]KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=5000, help="samples (and real images) per measurement")
    parser.add_argument("--extractors", nargs="+", default=None, help="default: classifier:DATA ssl:DATA")
    parser.add_argument("--one-by-one", action="store_true", help="train the models in turn, each with every core")
    parser.add_argument("--work", type=Path, help="where the runs go (default: a new temporary folder)")
    parser.add_argument("--figure", type=Path, help="the side-by-side samples figure (PNG)")
    parser.add_argument("--signal-figure", type=Path, help="adaptive augmentation's r_t and p over training (PNG)")
    parser.add_argument("--name", help="results file name (default: families-DATA-SIZE)")
    parser.add_argument("--smoke", action="store_true", help="8 steps of tiny models on the digits: does it run?")
    args = parser.parse_args(argv)
    if any(len(v) < 2 for v in args.variant):
        parser.error("--variant needs a name and a model: --variant NAME MODEL [KEY=VALUE ...]")
    if args.smoke:
        args.data, args.image_size, args.n, args.extractors = "digits", 32, 100, ["pixels"]
    runs = {m: (m, []) for m in args.models or ([] if args.variant else ["dcgan", "light"])}
    runs |= {name: (model, settings) for name, model, *settings in args.variant}
    extractors = args.extractors or [f"classifier:{args.data}", f"ssl:{args.data}"]
    work = args.work or Path(tempfile.mkdtemp(prefix="ganforge-families-"))
    record = run_record("families") | {"data": args.data, "image_size": args.image_size, "minutes": args.minutes,
                                       "set": args.pairs, "train_images": args.train_images, "seed": args.seed,
                                       "n": args.n, "together": not args.one_by_one, "models": {}}
    name = args.name or f"families-{args.data}-{args.image_size}" + (f"-n{args.train_images}" if args.train_images else "")
    data = args.data
    if args.train_images:
        data = write_folder(args.data, args.image_size, args.train_images, work / f"{args.data}-{args.train_images}")
    folders = train_all(runs, args, data, work)
    panels, signals = {}, {}
    for model, run in folders.items():
        meta, _ = load_checkpoint(run)
        G = load(run)
        images = G.sample(args.n, seed=0)
        fakes = to_uint8(images)
        metrics = {e: evaluate(fakes, args.data, e, args.n) for e in extractors}
        for result in metrics.values():
            print(f"{model}: {meta['step']} steps\n{format_table(result)}")
        shares = None if args.smoke else attribute_shares(args.data, fakes, args.n)
        lines = read_stats(run).train
        adaptive = adaptive_summary(lines)
        if adaptive:
            signals[model] = lines
        record["models"][model] = {"run": str(run), "steps": meta["step"], "images_seen": meta["images_seen"],
                                   "seconds": meta["seconds"], "config": meta["config"], "metrics": metrics,
                                   "attributes": shares, "adaptive": adaptive}
        fids = ", ".join(f"FID {m['fid']:.1f} ({e})" for e, m in metrics.items())
        panels[f"{model}: {meta['step']:,} steps; {fids}"] = images[:36]
        if not args.smoke:
            print(f"results: {write_results(name, record)}")
    if args.signal_figure and signals:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.5))
        targets = {record["models"][m]["config"]["ada_target"] for m in signals}
        plot_adaptive(ax, signals, targets.pop() if len(targets) == 1 else None)
        ax.set_xlabel("step")
        ax.set_title(f"adaptive augmentation, {args.train_images or 'all'} images of {args.data}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, args.signal_figure)
        print(f"signal figure: {args.signal_figure}")
    if args.figure:
        plot_side_by_side(panels, args.figure)
        print(f"figure: {args.figure}")
    return record


if __name__ == "__main__":
    main()
