"""Image models side by side: each trained for the same wall-clock minutes at the same time, then measured alike.

    python benchmarks/families.py [--data faces] [--image-size 64] [--minutes 10] [--models dcgan light]
                                  [--set KEY=VALUE ...] [--n 5000] [--extractors classifier:faces ssl:faces]
                                  [--figure docs/gallery/families-64.png] [--name NAME] [--smoke]

1. Every model of --models trains at once, each in its own `ganforge train` process with the cores shared out
   (2 cores, 2 models: one thread each), for --minutes: whatever else runs on the machine slows them alike.
   --one-by-one trains them in turn with every core instead. --set applies to every model (with `MODEL.KEY=VALUE`
   to one). The runs go to --work/MODEL/.
2. Each run's EMA generator draws --n samples from the same seeds, measured against as many real images in each
   extractor of --extractors (FID, KID, precision, recall, density, coverage). Where the data has attributes (the
   faces), its attribute classifier labels the samples and as many real images: per attribute the share of each
   that carries it, and how many attributes the samples carry in the real share (within ATTRIBUTE_TOLERANCE).
3. --figure: the first 36 samples of each model side by side, titled with its steps and FIDs.

Writes benchmarks/results/families-DATA-SIZE.json (or --name) after each model, with the command, commit, date,
processor and each run's full config. --smoke: 3 steps of tiny models on the digits at 32 px, pixels as features,
no results file.
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
from ganforge.plots import plot_side_by_side

ATTRIBUTE_TOLERANCE = 0.05  # an attribute is carried in the real share when its shares differ by at most this
SMOKE = ["--steps", "3", "--set", "g_width=4", "--set", "d_width=4", "--set", "z_dim=8", "--set", "n_samples=4",
         "--set", "batch_size=16"]


def train_all(models: list[str], args, work: Path) -> dict[str, Path]:
    """Start every model's training (at once unless --one-by-one) and wait: -> model -> its run folder."""
    cores = os.cpu_count() or 1
    threads = cores if args.one_by_one else max(1, cores // len(models))
    procs = {}
    for model in models:
        own = [p.split(".", 1)[1] for p in args.pairs if p.startswith(f"{model}.")]
        common = [p for p in args.pairs if "." not in p.split("=", 1)[0]]
        sets = [x for p in common + own for x in ("--set", p)]
        budget = SMOKE if args.smoke else ["--minutes", str(args.minutes)]
        argv = [sys.executable, "-m", "ganforge", "train", "--model", model, "--data", args.data, "--image-size",
                str(args.image_size), "--seed", str(args.seed), "--out", str(work / model), "--quiet", *budget, *sets]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        procs[model] = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if args.one_by_one:
            procs[model].wait()
    runs = {}
    for model, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{model}: ganforge train failed\n{err[-3000:]}")
        runs[model] = Path(out.strip().splitlines()[-1])
    return runs


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
    parser.add_argument("--models", nargs="+", default=["dcgan", "light"])
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="[MODEL.]KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=5000, help="samples (and real images) per measurement")
    parser.add_argument("--extractors", nargs="+", default=None, help="default: classifier:DATA ssl:DATA")
    parser.add_argument("--one-by-one", action="store_true", help="train the models in turn, each with every core")
    parser.add_argument("--work", type=Path, help="where the runs go (default: a new temporary folder)")
    parser.add_argument("--figure", type=Path, help="the side-by-side samples figure (PNG)")
    parser.add_argument("--name", help="results file name (default: families-DATA-SIZE)")
    parser.add_argument("--smoke", action="store_true", help="3 steps of tiny models on the digits: does it run?")
    args = parser.parse_args(argv)
    if args.smoke:
        args.data, args.image_size, args.n, args.extractors = "digits", 32, 100, ["pixels"]
    extractors = args.extractors or [f"classifier:{args.data}", f"ssl:{args.data}"]
    work = args.work or Path(tempfile.mkdtemp(prefix="ganforge-families-"))
    record = run_record("families") | {"data": args.data, "image_size": args.image_size, "minutes": args.minutes,
                                       "set": args.pairs, "seed": args.seed, "n": args.n, "together": not args.one_by_one,
                                       "models": {}}
    name = args.name or f"families-{args.data}-{args.image_size}"
    runs = train_all(args.models, args, work)
    panels = {}
    for model, run in runs.items():
        meta, _ = load_checkpoint(run)
        G = load(run)
        images = G.sample(args.n, seed=0)
        fakes = to_uint8(images)
        metrics = {e: evaluate(fakes, args.data, e, args.n) for e in extractors}
        for result in metrics.values():
            print(f"{model}: {meta['step']} steps\n{format_table(result)}")
        shares = None if args.smoke else attribute_shares(args.data, fakes, args.n)
        record["models"][model] = {"run": str(run), "steps": meta["step"], "images_seen": meta["images_seen"],
                                   "seconds": meta["seconds"], "config": meta["config"], "metrics": metrics,
                                   "attributes": shares}
        fids = ", ".join(f"FID {m['fid']:.1f} ({e})" for e, m in metrics.items())
        panels[f"{model}: {meta['step']:,} steps; {fids}"] = images[:36]
        if not args.smoke:
            print(f"results: {write_results(name, record)}")
    if args.figure:
        plot_side_by_side(panels, args.figure)
        print(f"figure: {args.figure}")
    return record


if __name__ == "__main__":
    main()
