"""The quick start's first command, measured: `ganforge train` with its defaults (the demo `make demo` runs),
in a child process, as a new user runs it.

    python benchmarks/demo.py [--n 10000] [--smoke]

Records the wall-clock seconds of the whole command (start-up, data, training, figures), the child's peak
memory (max RSS), the steps, epochs and training images/s from its checkpoint, and the quality of its samples:
FID and the rest with classifier:digits, --n samples of the final generator (its EMA) against --n real digits.
Writes benchmarks/results/demo.json (with the command, commit, date, processor); --smoke (3 steps of a tiny
model, measured with pixels) writes nothing.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SMOKE_MODEL, extractor_for, run_record, write_results

from ganforge import load
from ganforge.data import load_data
from ganforge.metrics.evaluate import evaluate, format_table


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="samples measured, and real digits they are measured "
                        "against")
    parser.add_argument("--smoke", action="store_true", help="3 steps of a tiny model: does the script run?")
    args = parser.parse_args(argv)
    extra = []
    if args.smoke:
        args.n = 200
        extra = ["--steps", "3"] + [a for k, v in SMOKE_MODEL.items()
                                    for a in ("--set", f"{k}={v}")]
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "ganforge", "train", "--out", out, "--quiet", *extra]
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        run = Path(done.stdout.strip().splitlines()[-1])
        G = load(run, kind="image")
        meta = G.meta
        result = evaluate(G.sample(args.n, seed=0, output="uint8"), "digits", extractor_for("digits", args.smoke),
                          args.n)
    record = run_record("demo") | {
        "smoke": args.smoke, "train_command": "ganforge train" + "".join(f" {a}" for a in extra),
        "wall_seconds": round(wall, 1), "peak_rss_kb": peak_kb, "steps": meta["step"],
        "epochs": meta["images_seen"] / len(load_data("digits")),
        "images_seen": meta["images_seen"], "training_seconds": round(meta["seconds"], 1),
        "images_per_s": meta["images_seen"] / max(meta["seconds"], 1e-9), "config": meta["config"], "metrics": result}
    print(f"ganforge train: {wall:.0f} s in all, {meta['step']} steps ({meta['images_seen']:,} images) in "
          f"{meta['seconds']:.0f} s of training, {record['images_per_s']:.0f} images/s; peak memory (max RSS) "
          f"{peak_kb / 1024:.0f} MB")
    print(format_table(result))
    if not args.smoke:
        print(f"results: {write_results('demo', record)}")
    return record


if __name__ == "__main__":
    main()
