"""The same DCGAN trained with each loss for the same wall-clock budget, measured side by side.

    python benchmarks/losses.py --data fashion-mnist --minutes 4 [--threads 1] [--losses hinge,r3gan]

With `--threads 1` under `taskset -c 0`, every loss gets one core to itself, and the machine's
other core stays free for other work without disturbing the comparison.

Each loss runs with its own defaults (n_critic 5 for wgan and wgan-gp, layer norm in D for wgan-gp
and r3gan) and everything else equal: networks, Adam settings, batch, seed, data. Every epoch is
measured (`--eval-every 1`, 2,000 samples); the final generator (its EMA) is measured on `--n`
samples. Prints a Markdown table of FID, precision and recall, writes `losses.png` (FID against
images seen and training seconds) next to the runs, and the numbers to benchmarks/results/losses.json.
--smoke: 3 steps of a tiny model per loss, measured with pixels, no results file.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import SMOKE_TRAINING, extractor_for, run_record, write_results

from ganforge import load, train
from ganforge.config import make_config
from ganforge.losses import LOSSES
from ganforge.metrics.evaluate import evaluate
from ganforge.plots import plot_compare
from ganforge.stats import read_stats


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget of each loss")
    parser.add_argument("--losses", default=",".join(LOSSES), help="comma-separated (default: all registered)")
    parser.add_argument("--n", type=int, default=5000, help="samples for the final measurement")
    parser.add_argument("--out", default="runs/losses")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--smoke", action="store_true", help="3 steps of a tiny model per loss: does the script run?")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.data, args.n, args.out = "digits", 100, tempfile.mkdtemp(prefix="ganforge-smoke-")
    extractor = extractor_for(args.data, args.smoke)

    out = Path(args.out)
    record = run_record("losses") | {"smoke": args.smoke, "data": args.data, "minutes_each": args.minutes,
                                     "n": args.n, "rows": []}
    curves = {}
    for loss in args.losses.split(","):
        overrides = {"data": args.data, "minutes": args.minutes, "loss": loss, "eval_every": 1}
        cfg = make_config(overrides=overrides | (SMOKE_TRAINING | {"eval_extractor": "pixels"} if args.smoke else {}))
        run = train(cfg, runs_dir=out, progress=not args.smoke)
        G = load(run)
        result = evaluate(G.sample(args.n, seed=0, output="uint8"), args.data, extractor, args.n)
        record["rows"].append({"loss": loss, "run": run.name, "steps": G.meta["step"],
                               "images_seen": G.meta["images_seen"], "seconds": round(G.meta["seconds"]), **result})
        # the curve ends at the budget: the final G measured like the epochs were (eval_n samples)
        last = evaluate(G.sample(cfg.eval_n, seed=1, output="uint8"), args.data, extractor, cfg.eval_n)
        curves[loss] = read_stats(run).evals + [
            {**last, "images_seen": G.meta["images_seen"], "seconds": G.meta["seconds"]}]
        if not args.smoke:
            write_results("losses", record)  # after each loss: nothing lost
    plot_compare(curves, out / "losses.png")
    rows, first = record["rows"], record["rows"][0]
    print(f"\n{args.data}, {args.minutes:g} min of training each on {torch.get_num_threads()} thread(s) of "
          f"{record['processor']['model_name']}; final G (EMA) measured with "
          f"{first['extractor']}, {first['n_fake']} fake vs {first['n_real']} real\n")
    print("| loss | steps | images seen | FID | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['loss']} | {r['steps']} | {r['images_seen']} | {r['fid']:.1f} | {r['precision']:.3f} "
              f"| {r['recall']:.3f} |")
    print(f"\n{out / 'losses.png'}")
    return record


if __name__ == "__main__":
    main()
