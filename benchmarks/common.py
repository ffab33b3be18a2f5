"""What every benchmark records beside its numbers: the command, the commit, the date, the processor
(with the instruction sets that decide its speed), torch and the threads; and where the JSON goes."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what the CPU multiplies fast


def git_commit() -> dict:
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, check=False, capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def processor() -> dict:
    """The CPU's model name and the instruction-set flags /proc/cpuinfo lists (Linux), with torch's own view."""
    model, flags = platform.processor() or None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in (None, "", "x86_64"):
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model_name": model, "flags": [f for f in FLAGS if f in flags], "logical_cpus": os.cpu_count(),
            "machine": platform.machine(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def run_record(name: str) -> dict:
    """The fields every results file starts with."""
    return {"benchmark": name, "command": " ".join([Path(sys.executable).name, *sys.argv]), "git": git_commit(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "processor": processor(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def write_results(name: str, record: dict) -> Path:
    """benchmarks/results/NAME.json, rewritten whole (call it after each part: nothing is lost on a crash)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path
