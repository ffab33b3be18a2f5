"""What every benchmark records beside its numbers: the command, the commit, the date, the processor
(with the instruction sets that decide its speed), torch and the threads; and where the JSON goes."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from ganforge.hardware import cpu

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"  # the committed files the docs quote


OUTPUTS = ("benchmarks/results/", "docs/")  # what benchmarks and the gallery write: no number depends on them


def git_commit() -> dict:
    """The commit the numbers come from, and whether the tree differs from it where it could change them: "dirty"
    counts changes outside OUTPUTS (results files and the gallery's pictures, which a run of several parts writes
    as it goes), "outputs_changed" those inside."""
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, check=False, capture_output=True, text=True).stdout
    try:
        changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
        outputs = [path for path in changed if path.startswith(OUTPUTS)]
        return {"commit": git("rev-parse", "HEAD").strip() or None, "dirty": len(changed) > len(outputs),
                "outputs_changed": len(outputs)}
    except FileNotFoundError:  # no git on this machine: the numbers stand, unpinned
        return {"commit": None, "dirty": None}


def processor() -> dict:
    """The CPU's model name and the instruction-set flags that decide its speed, with torch's own view."""
    return cpu()


def described(cpu: dict) -> str:
    """"AMD EPYC (2 cores; avx2, avx512_bf16)": the processor's name with what decides its speed."""
    return f"{cpu.get('model_name')} ({cpu.get('logical_cpus')} cores; {', '.join(cpu.get('flags', [])) or 'no AVX2'})"


def run_record(name: str) -> dict:
    """The fields every results file starts with."""
    return {"benchmark": name, "command": " ".join([Path(sys.executable).name, *sys.argv]), "git": git_commit(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "processor": processor(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def results_dir() -> Path:
    """Where results go: benchmarks/results/, or $GANFORGE_RESULTS (benchmarks/headline.py points it elsewhere so
    that a user's rerun does not overwrite the committed files it is compared with)."""
    return Path(os.environ.get("GANFORGE_RESULTS") or RESULTS)


def write_results(name: str, record: dict) -> Path:
    """NAME.json in results_dir(), rewritten whole (call it after each part: nothing is lost on a crash)."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


# --smoke: every script's few steps at tiny sizes (tests/test_benchmarks.py runs them), measured with raw
# pixels (no classifier to train); a smoke run writes no results file
SMOKE_MODEL = {"g_width": 8, "d_width": 8, "z_dim": 8, "batch_size": 32, "log_every": 1, "n_samples": 4, "eval_n": 100}
SMOKE_TRAINING = {"data": "digits", "steps": 3, "minutes": None, **SMOKE_MODEL}


def extractor_for(data: str, smoke: bool) -> str:
    """What the benchmarks measure with: the data's classifier, or raw pixels in a smoke run."""
    return "pixels" if smoke else f"classifier:{data}"


def smoke_cache() -> Path:
    """A smoke run's own cache folder, for the classifiers it trains in seconds: the user's cache keeps the real
    ones. Drawn data (the faces) is no model: it is shared with the user's cache, drawn there once."""
    import tempfile

    from ganforge.io import cache_dir

    faces = cache_dir() / "faces"
    faces.mkdir(parents=True, exist_ok=True)
    os.environ["GANFORGE_CACHE"] = tempfile.mkdtemp(prefix="ganforge-smoke-cache-")
    (Path(os.environ["GANFORGE_CACHE"]) / "faces").symlink_to(faces, target_is_directory=True)
    return Path(os.environ["GANFORGE_CACHE"])


# --- the benchmarks measured on a DCGAN trained on faces (arithmetic.py, directions.py)
def faces_options(parser) -> None:
    """Their options: the run to measure, or the budget of the one they train; threads; --smoke."""
    parser.add_argument("--run", help="a run trained on faces (default: train one first)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget when no --run is given")
    parser.add_argument("--image-size", type=int, default=32, help="training image size when no --run is given")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--out", help="where the run they train goes (default: runs; smoke: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="a few steps at tiny sizes: does the script run?")


def faces_run(args) -> Path:
    """The run they measure: --run, or the default DCGAN trained on faces for --minutes at --image-size. A smoke
    run trains 3 steps of a tiny model, and an attribute classifier of 1 epoch in a temporary cache."""
    import tempfile

    from ganforge import load, train
    from ganforge.config import make_config
    from ganforge.metrics.classifier import train_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {"data": "faces", "minutes": args.minutes, "image_size": args.image_size}
    if args.smoke:
        smoke_cache()
        train_classifier("faces", epochs=1, limit=600, attributes=True, progress=False)
        overrides |= SMOKE_TRAINING | {"data": "faces"}
    out = args.out or (tempfile.mkdtemp(prefix="ganforge-smoke-") if args.smoke else "runs")
    run = Path(args.run) if args.run else train(make_config(overrides=overrides), runs_dir=out,
                                                progress=not args.smoke)
    data = load(run).meta["config"]["data"]
    if data != "faces":
        raise SystemExit(f"{run} was trained on {data}, not faces")
    return run
