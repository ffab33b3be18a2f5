"""Training throughput on a GPU at each precision, with and without torch.compile, and a short run with its FID.

    python benchmarks/gpu.py [--device cuda] [--steps 200] [--minutes 2] [--data fashion-mnist]

For each precision (fp32, bf16, fp16) and each of eager and compiled: ganforge's step on the gpu preset's DCGAN
(the paper's widths, batch 128) over the bundled digits, images/s over --steps timed steps after a warm-up, all in
this one process. Then `ganforge train --preset gpu --precision auto` on --data for --minutes, measured with
`ganforge eval`'s default extractor (the data's classifier, trained first on the GPU where none is cached) on
10,000 samples. benchmarks/gpu.sh runs it with the
gpu-marked tests; writes benchmarks/results/gpu.json after each part, and exits non-zero when any row failed
(the file keeps its error). --smoke: the CPU, fp32 eager only, 3 steps, no training
run, at the smoke sizes; no results file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import SMOKE_MODEL, run_record, write_results
from throughput import ganforge_train

from ganforge import load, train
from ganforge.config import make_config
from ganforge.data import load_data
from ganforge.errors import GanforgeError
from ganforge.metrics.classifier import classifier_path, train_classifier
from ganforge.metrics.evaluate import measure
from ganforge.state import TrainState


def rates(device: str, steps: int, precisions: list[str], compiled: list[bool], sizes: dict) -> list[dict]:
    """images/s of the gpu preset's DCGAN step (with `sizes` instead of its own), for every precision and
    compilation."""
    data, rows = load_data("digits"), []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in precisions:
            for compile_ in compiled:
                cfg = make_config("gpu", sizes | {"device": device, "precision": precision, "compile": compile_})
                try:
                    trainer = TrainState(cfg, Path(tmp), data)
                    ganforge_train(trainer, max(3, steps // 10))  # warm-up: kernels chosen, graphs compiled
                    rate = ganforge_train(trainer, steps)
                except (GanforgeError, RuntimeError) as e:  # say so, go on: main exits non-zero at the end
                    rows.append({"precision": precision, "compile": compile_, "error": str(e)[:300]})
                    print(f"{precision:>5} {'compiled' if compile_ else 'eager':>9}: {e}"[:200])
                    continue
                rows.append({"precision": precision, "compile": compile_, "images_per_s": rate})
                print(f"{precision:>5} {'compiled' if compile_ else 'eager':>9}: {rate:8.0f} images/s")
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per precision and compilation")
    parser.add_argument("--minutes", type=float, default=2.0, help="the training run's budget")
    parser.add_argument("--data", default="fashion-mnist", help="the training run's data")
    parser.add_argument("--data-dir", help="folder holding the IDX files of fashion-mnist")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--smoke", action="store_true", help="CPU, fp32 eager, 3 steps, no training run")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.steps = "cpu", 3
    elif not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device (or --smoke)")
    precisions = ["fp32"] if args.smoke else ["fp32", "bf16", "fp16"]
    record = run_record("gpu") | {"smoke": args.smoke, "device": args.device, "steps": args.steps,
                                  "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                                  "rows": rates(args.device, args.steps, precisions, [False] if args.smoke else
                                                [False, True], SMOKE_MODEL if args.smoke else {})}
    failed = [r for r in record["rows"] if "error" in r]
    if not args.smoke:
        print(write_results("gpu", record))  # after each part: a timeout keeps what was measured
        if not classifier_path(args.data).is_file():  # the FID's classifier, trained here on the GPU (minutes, not 10)
            began = time.perf_counter()
            train_classifier(args.data, data_dir=args.data_dir, progress=False, device=args.device)
            record["classifier_seconds"] = time.perf_counter() - began
            print(write_results("gpu", record))
        start = time.perf_counter()
        cfg = make_config("gpu", {"data": args.data, "data_dir": args.data_dir, "minutes": args.minutes,
                                  "device": args.device, "precision": "auto"})
        run = train(cfg, runs_dir=args.out, progress=False)
        G = load(run)
        record["training"] = {"run": str(run), "data": args.data, "minutes": args.minutes, "steps": G.meta["step"],
                              "seconds": time.perf_counter() - start, **measure(G, 10_000, data_dir=args.data_dir)}
        print(f"{args.data}, {args.minutes:g} min at the gpu preset: {G.meta['step']} steps, "
              f"FID {record['training']['fid']:.1f} ({record['training']['extractor']})")
        print(write_results("gpu", record))
    if failed:
        raise SystemExit(f"benchmarks/gpu.py: {len(failed)} of {len(record['rows'])} throughput rows failed "
                         f"({', '.join(r['precision'] + (' compiled' if r['compile'] else '') for r in failed)})")
    return record


if __name__ == "__main__":
    main()
