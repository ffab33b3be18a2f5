"""Train the default DCGAN (or `--model cgan`) for a wall-clock budget, write 10,000 samples, and measure them.

    python benchmarks/quality.py --data fashion-mnist --minutes 10 [--model cgan] [--set KEY=VALUE ...] [--seed S]

Writes `samples.npy` (uint8) and `metrics.json` into the run folder and prints the metrics,
each labelled with its extractor and sample counts. A conditional model draws every class in
turn, and the table adds the share of samples classified as the class asked for, per class.
The record (command, commit, date, processor, every number) goes to benchmarks/results/quality-MODEL-DATA.json
(or `--name`'s file); benchmarks/tuning.py runs this script for several settings and seeds side by side.
--smoke trains 3 steps of a tiny model on digits and measures pixels, writing no results file.
"""

import argparse
import json
import tempfile

import torch
from common import SMOKE_TRAINING, extractor_for, run_record, write_results

from ganforge import load, train
from ganforge.config import make_config
from ganforge.data import to_uint8
from ganforge.metrics.evaluate import evaluate, format_table
from ganforge.sampling import write_samples


def main(argv: list[str] | None = None, save: bool = True) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--steps", type=int, help="a budget in steps instead of minutes")
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--out", default="runs")
    parser.add_argument("--set", dest="pairs", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting, as `ganforge train --set` takes it (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="the training seed")
    parser.add_argument("--name", help="results file name (default: quality-MODEL-DATA)")
    parser.add_argument("--smoke", action="store_true", help="3 steps of a tiny model: does the script run?")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps:
        args.minutes = None
    overrides = {"data": args.data, "minutes": args.minutes, "steps": args.steps, "model": args.model,
                 "seed": args.seed}
    if args.smoke:
        overrides |= SMOKE_TRAINING
        args.data, args.n, args.out = "digits", 200, tempfile.mkdtemp(prefix="ganforge-smoke-")
    run = train(make_config(overrides=overrides, pairs=args.pairs), runs_dir=args.out, progress=not args.smoke)
    G = load(run, kind="image")
    meta = G.meta
    labels = G.labels(args.n)
    images = G.sample(args.n, seed=0, label=labels)
    write_samples(images, run / "samples.npy")
    result = evaluate(to_uint8(images), args.data, extractor_for(args.data, args.smoke), args.n,
                      requested_labels=labels)
    (run / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{run}: {meta['step']} steps, {meta['images_seen']} images seen in {meta['seconds']:.0f} s")
    print(format_table(result))
    record = run_record("quality") | {"smoke": args.smoke, "data": args.data, "model": args.model,
                                      "minutes": args.minutes, "set": args.pairs, "seed": args.seed, "run": str(run), "steps": meta["step"],
                                      "images_seen": meta["images_seen"], "seconds": meta["seconds"],
                                      "config": meta["config"], "metrics": result}
    if save and not args.smoke:
        print(f"results: {write_results(args.name or f'quality-{args.model}-{args.data}', record)}")
    return record


if __name__ == "__main__":
    main()
