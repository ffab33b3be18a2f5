"""Training settings compared side by side: each one trained for the same budget with several seeds and
measured as benchmarks/quality.py measures it (FID, precision, recall with the data's classifier).

    python benchmarks/tuning.py --minutes 10 --seeds 0,1 --parallel 2 \\
        --variant default= --variant narrow=g_width=32,d_width=32 --variant ttur=lr_d=4e-4,lr_g=1e-4

A variant is NAME=KEY=VALUE,KEY=VALUE (the `ganforge train --set` keys; nothing after NAME= is the
defaults), or NAME@SEEDS=... for seeds of its own (bf16@0=precision=bf16). `--steps N` budgets steps
instead of minutes. With --parallel P, P runs train at once, each pinned to its own core with one thread, so
every run of one command gets the same machine; with --parallel 1 each run has every core. Prints a
Markdown table (the mean and the spread, min to max, over the seeds) and writes every number to
benchmarks/results/tuning-NAME.json (--name). --smoke: 3 steps of a tiny model per run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
from concurrent.futures import ProcessPoolExecutor

import quality
from common import run_record, write_results

CONDITIONAL = ("label_accuracy", "recall_within_class")  # what a class-conditional model's runs also report


def parse_variant(text: str) -> tuple[str, list[int] | None, list[str]]:
    """NAME[@SEEDS]=KEY=VALUE,... -> (name, its own seeds or None, the pairs)."""
    head, sep, pairs = text.partition("=")
    name, _, seeds = head.partition("@")
    if not sep or not name:
        raise SystemExit(f"--variant {text!r}: expected NAME=KEY=VALUE,KEY=VALUE (or NAME= for the defaults)")
    return name, [int(s) for s in seeds.split(",")] if seeds else None, [p for p in pairs.split(",") if p]


_free_cores = None  # in a worker process with --parallel: the queue of the cores no run is using


def _keep(cores: multiprocessing.Queue) -> None:
    global _free_cores
    _free_cores = cores


def _one(argv: list[str]) -> dict:
    """One run, on a core no other run is using (with --parallel), which it gives back when it ends."""
    if _free_cores is None:
        return quality.main(argv, save=False)
    core = _free_cores.get()
    try:
        os.sched_setaffinity(0, {core})
        return quality.main(argv, save=False)
    finally:
        _free_cores.put(core)


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--model", default="dcgan")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each run")
    parser.add_argument("--steps", type=int, help="a budget in steps instead (for equal steps)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument("--variant", action="append", required=True, help="NAME=KEY=VALUE,... (repeatable)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once, one core and one thread each")
    parser.add_argument("--n", type=int, default=10_000, help="samples measured per run")
    parser.add_argument("--out", default="runs/tuning")
    parser.add_argument("--name", default="tuning", help="results file: benchmarks/results/NAME.json")
    parser.add_argument("--smoke", action="store_true", help="3 steps of a tiny model per run")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants, jobs = {}, []
    for name, own, pairs in map(parse_variant, args.variant):
        variants[name] = pairs
        jobs += [(name, seed) for seed in own or seeds]
    cores = sorted(os.sched_getaffinity(0))
    if args.parallel > len(cores):
        raise SystemExit(f"--parallel {args.parallel}: this process may use {len(cores)} cores")

    def child(name, seed):
        budget = ["--steps", str(args.steps)] if args.steps else ["--minutes", str(args.minutes)]
        argv = ["--data", args.data, "--model", args.model, *budget, "--seed", str(seed),
                "--n", str(args.n), "--out", args.out, *(f"--set={p}" for p in variants[name])]
        return argv + (["--threads", "1"] if args.parallel > 1 else []) + (["--smoke"] if args.smoke else [])

    record = run_record("tuning") | {"smoke": args.smoke, "data": args.data, "model": args.model,
                                     "minutes": None if args.steps else args.minutes,
                                     "steps": args.steps, "seeds": seeds, "parallel": args.parallel,
                                     "threads_per_run": 1 if args.parallel > 1 else len(cores), "rows": []}
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    for core in cores[:args.parallel]:
        queue.put(core)
    with ProcessPoolExecutor(args.parallel, mp_context=context, initializer=_keep if args.parallel > 1 else None,
                             initargs=(queue,) if args.parallel > 1 else (), max_tasks_per_child=1) as pool:
        runs = list(pool.map(_one, [child(*job) for job in jobs]))
    for name, pairs in variants.items():
        mine = [r for (n, _), r in zip(jobs, runs) if n == name]
        row = {"variant": name, "set": pairs,
               "runs": [{"seed": r["seed"], "steps": r["steps"], "images_seen": r["images_seen"], "run": r["run"],
                         **{k: r["metrics"][k] for k in ("fid", "kid", "precision", "recall", "coverage") + CONDITIONAL
                            if k in r["metrics"]}}
                        for r in mine]}
        for key in ("fid", "precision", "recall", "steps") + CONDITIONAL:
            if key in row["runs"][0]:
                row[key] = summary([run[key] for run in row["runs"]])
        record["rows"].append(row)
    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} minutes"
    print(f"\n{budget} each, "
          f"{record['threads_per_run']} thread(s) per run, {args.parallel} at once\n")
    shown = ("fid", "precision", "recall", *(k for k in CONDITIONAL if k in record["rows"][0]), "steps")
    print(f"| variant | settings | seeds | {' | '.join(shown)} |\n|---|---|---|" + "---:|" * len(shown))
    for row in record["rows"]:
        cells = [f"{row[k]['mean']:.1f} ({row[k]['min']:.1f}-{row[k]['max']:.1f})" if k == "fid" else
                 f"{row[k]['mean']:.2f}" if k != "steps" else f"{row[k]['mean']:.0f}" for k in shown]
        seeds = ",".join(str(run["seed"]) for run in row["runs"])
        print(f"| {row['variant']} | {' '.join(row['set']) or 'defaults'} | {seeds} | " + " | ".join(cells) + " |")
    if not args.smoke:
        print(f"results: {write_results(args.name, record)}")
    return record


if __name__ == "__main__":
    main()
