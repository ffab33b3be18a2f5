"""The README's headline figures, rerun on this machine and printed beside the committed ones (`make bench`).

    python benchmarks/headline.py [--update] [--smoke]

Runs, one after another in this process, the benchmarks whose files the README quotes:
  demo.py                              the quick start's `ganforge train` (3 minutes of DCGAN on the digits)
  quality.py                           10 minutes of the default DCGAN on Fashion-MNIST
  quality.py --model cgan              10 minutes of the class-conditional GAN on Fashion-MNIST
  throughput.py                        training images/s of the default DCGAN, and against a textbook loop
and prints each figure beside the committed file's, with both processors. About 45 minutes on 2 cores from an empty
cache (the Fashion-MNIST classifier that measures FID trains first, about 10 of them), 35 after.

The new results go to runs/bench/ and benchmarks/results/ stays as it is; --update writes them into
benchmarks/results/ instead (a maintainer's run, from a clean tree, for the docs to quote). Also writes
headline.json beside them: every figure, committed and rerun. --smoke runs each part's smoke mode and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os

import demo
import quality
import throughput
from common import RESULTS, ROOT, described, results_dir, run_record, write_results

# (results file, what it is, where in the file, how it is shown): the figures the README quotes
FIGURES = [
    ("demo", "make demo: FID (classifier:digits)", ("metrics", "fid"), "{:.1f}"),
    ("demo", "make demo: training steps", ("steps",), "{:,}"),
    ("quality-dcgan-fashion-mnist", "Fashion-MNIST 10 min: FID (classifier)", ("metrics", "fid"), "{:.1f}"),
    ("quality-dcgan-fashion-mnist", "Fashion-MNIST 10 min: recall", ("metrics", "recall"), "{:.2f}"),
    ("quality-cgan-fashion-mnist", "cGAN 10 min: in the class asked for", ("metrics", "label_accuracy"), "{:.1%}"),
    ("quality-cgan-fashion-mnist", "cGAN 10 min: recall within each class", ("metrics", "recall_within_class"),
     "{:.3f}"),
    ("throughput", "DCGAN training images/s (fp32)",
     ("models", "dcgan", "precisions", "fp32", "train_images_per_s"), "{:.0f}"),
    ("throughput", "DCGAN against a textbook loop", ("models", "dcgan", "precisions", "fp32", "train_ratio"),
     "{:.2f}x"),
]
PARTS = [  # (results file, script, its arguments)
    ("demo", demo, []),
    ("quality-dcgan-fashion-mnist", quality, ["--out", "runs/bench"]),
    ("quality-cgan-fashion-mnist", quality, ["--model", "cgan", "--out", "runs/bench"]),
    ("throughput", throughput, []),
]


def dig(record: dict | None, keys: tuple):
    for key in keys:
        if not isinstance(record, dict) or key not in record:
            return None
        record = record[key]
    return record


def processor_of(record: dict | None) -> str:
    return described(record.get("processor", {})) if record else "no file"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="write the results into benchmarks/results/")
    parser.add_argument("--smoke", action="store_true", help="each part's smoke mode: does the script run?")
    args = parser.parse_args(argv)
    if not args.update:
        os.environ["GANFORGE_RESULTS"] = str(ROOT / "runs" / "bench")
    committed = {name: json.loads((RESULTS / f"{name}.json").read_text()) if (RESULTS / f"{name}.json").is_file()
                 else None for name, _, _ in PARTS}
    rerun = {}
    for name, script, extra in PARTS:
        print(f"== {name}", flush=True)
        rerun[name] = script.main(extra + (["--smoke"] if args.smoke else []))
    rows = [{"figure": what, "file": name, "committed": dig(committed[name], keys), "rerun": dig(rerun[name], keys),
             "shown": shown} for name, what, keys, shown in FIGURES]
    width = max(len(r["figure"]) for r in rows)

    def show(row, key):
        return "-" if row[key] is None else row["shown"].format(row[key])
    print(f"\n{'figure':<{width}}  {'committed':>10}  {'here':>10}")
    for row in rows:
        print(f"{row['figure']:<{width}}  {show(row, 'committed'):>10}  {show(row, 'rerun'):>10}")
    print("\ncommitted: " + "; ".join(sorted({f'{n}: {processor_of(r)}' for n, r in committed.items()})))
    print(f"here: {processor_of(next(iter(rerun.values())))}")
    record = run_record("headline") | {"smoke": args.smoke, "update": args.update, "rows": rows}
    if not args.smoke:
        print(f"results: {write_results('headline', record)} (the parts' files beside it, in {results_dir()})")
    return record


if __name__ == "__main__":
    main()
