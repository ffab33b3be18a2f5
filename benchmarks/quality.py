"""Train the default DCGAN (or `--model cgan`) for a wall-clock budget, write 10,000 samples, and measure them.

    python benchmarks/quality.py --data fashion-mnist --minutes 10 [--model cgan]

Writes `samples.npy` (uint8) and `metrics.json` into the run folder and prints the metrics,
each labelled with its extractor and sample counts. A conditional model draws every class in
turn, and the table adds the share of samples classified as the class asked for, per class.
"""

import argparse
import json

import torch

from ganforge import load, train
from ganforge.config import make_config
from ganforge.data import to_uint8
from ganforge.metrics.evaluate import evaluate, format_table
from ganforge.sampling import write_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--out", default="runs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = make_config(overrides={"data": args.data, "minutes": args.minutes, "model": args.model})
    run = train(cfg, runs_dir=args.out)
    G = load(run, kind="image")
    meta = G.meta
    labels = G.labels(args.n)
    images = G.sample(args.n, seed=0, label=labels)
    write_samples(images, run / "samples.npy")
    result = evaluate(to_uint8(images), args.data, f"classifier:{args.data}", args.n, requested_labels=labels)
    (run / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{run}: {meta['step']} steps, {meta['images_seen']} images seen in {meta['seconds']:.0f} s")
    print(format_table(result))


if __name__ == "__main__":
    main()
