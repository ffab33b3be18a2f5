"""Images per second as the work is spread: 1 and 2 processes on this machine's CPUs, or precisions on a GPU.

    python benchmarks/scaling.py [--model dcgan] [--steps 400] [--batch 32]
    python benchmarks/scaling.py --device cuda      # 1 GPU at fp32, bf16 and fp16 (and --compile)

Each configuration is a fresh `ganforge train` process (or torchrun's processes) on the bundled
digits with the same per-process batch; the rate is the median of its stats.jsonl lines after the
first (warm-up). On the CPU: 1 process with 1 thread, 1 process with 2 threads (all the cores to
one process), 2 processes with 1 thread each (DistributedDataParallel over gloo, a global
batch twice as large), and torch.compile (its compilation falls in the first, uncounted, stats
line). Efficiency = rate / (processes x the first row's rate). Writes benchmarks/results/scaling.json
(or scaling-cuda.json); --smoke (4 steps of the row of several processes) writes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import run_record, write_results

from ganforge.stats import read_stats


def rate(args: list[str], threads: int, steps: int, batch: int, model: str, log_every: int = 50) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "ganforge", "train", "--model", model, "--steps", str(steps), "--out", out,
                   "--quiet", "--set", f"batch_size={batch}", "--set", f"log_every={log_every}", *args]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        stats = read_stats(next(Path(out).iterdir())).train  # training lines only: no event has a rate
        return statistics.median(s["images_per_s"] for s in stats[1:])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32, help="images per process and step")
    parser.add_argument("--smoke", action="store_true", help="4 steps per row, no --compile: does the script run?")
    args = parser.parse_args(argv)
    log_every = 50
    if args.smoke:
        args.steps, args.batch, log_every = 4, 8, 1
    if args.device == "cpu":
        cores = os.cpu_count() or 1
        runs = [("1 process, 1 thread", 1, 1, []), (f"1 process, {cores} threads", 1, cores, []),
                (f"{cores} processes, 1 thread each", cores, 1, ["--nproc", str(cores)]),
                (f"1 process, {cores} threads, --compile", 1, cores, ["--compile"])]
    else:
        runs = [(f"1 GPU, {p}", 1, 4, ["--device", "cuda", "--precision", p]) for p in ("fp32", "bf16", "fp16")]
        runs.append(("1 GPU, bf16, --compile", 1, 4, ["--device", "cuda", "--precision", "bf16", "--compile"]))
    if args.smoke:  # the path of several processes
        runs = [r for r in runs if r[1] > 1]
    record = run_record("scaling") | {"smoke": args.smoke, "device": args.device, "model": args.model,
                                      "steps": args.steps, "batch_per_process": args.batch, "rows": []}
    base = None
    print(f"{args.model}, batch {args.batch} per process, {args.steps} steps, device {args.device}")
    print(f"{'':36} {'images/s':>10} {'efficiency':>11}")
    for name, procs, threads, extra in runs:
        r = rate(extra, threads, args.steps, args.batch, args.model, log_every)
        base = base or r
        record["rows"].append({"name": name, "processes": procs, "threads": threads, "args": extra,
                               "images_per_s": r, "efficiency": r / (procs * base)})
        print(f"{name:36} {r:10.0f} {r / (procs * base):11.2f}", flush=True)
    if not args.smoke:
        name = "scaling" if args.device == "cpu" else "scaling-cuda"
        print(f"results: {write_results(name, record)}")
    return record


if __name__ == "__main__":
    main()
