"""Inception-v3 pool3 feature extraction speed: ganforge's extractor (channels_last) next to the
same network in the default contiguous layout, as pytorch-fid runs it, in alternating rounds in this process.

Random weights in pytorch-fid's file format stand in for the real file: speed does not depend on
the values. Prints images per second and the ratio, and the minutes 10,000 images take.

    python benchmarks/inception.py [--n 100] [--rounds 3] [--batch-size 50] [--smoke]

Writes benchmarks/results/inception.json (with the command, commit, date, processor); --smoke (2 images,
1 round) writes nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import run_record, write_results

from ganforge.metrics.features import extract
from ganforge.metrics.inception import WEIGHTS_FILE, Inception, fid_inception


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="images per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--smoke", action="store_true", help="2 images, 1 round: does the script run?")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.rounds, args.batch_size = 2, 1, 2

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / WEIGHTS_FILE
        torch.save(fid_inception().state_dict(), path)
        fast = Inception(path)
        plain = Inception(path)
        plain.memory_format = torch.contiguous_format
        plain.net.to(memory_format=plain.memory_format)

    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8)
    rates = {"ganforge (channels_last)": [], "contiguous (pytorch-fid's layout)": []}
    extractors = dict(zip(rates, (fast, plain)))
    for extractor in extractors.values():  # warm-up
        extract(extractor, images[:args.batch_size], batch=args.batch_size)
    for _ in range(args.rounds):
        for name, extractor in extractors.items():
            start = time.perf_counter()
            extract(extractor, images, batch=args.batch_size)
            rates[name].append(args.n / (time.perf_counter() - start))
    best = {name: max(r) for name, r in rates.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"best of {args.rounds} rounds of {args.n} images")
    for name, rate in best.items():
        print(f"  {name:34s} {rate:7.1f} img/s   10,000 images in {10_000 / rate / 60:5.1f} min")
    a, b = best.values()
    print(f"  ratio {a / b:.2f}x")
    record = run_record("inception") | {"smoke": args.smoke, "n": args.n, "rounds": args.rounds,
                                        "batch_size": args.batch_size, "images_per_s": rates,
                                        "best_images_per_s": best, "ratio": a / b}
    if not args.smoke:
        print(f"results: {write_results('inception', record)}")
    return record


if __name__ == "__main__":
    main()
