"""What this machine multiplies fast: the processor, and the choice `--precision auto` makes from it.

On a CPU, bf16 autocast pays only where the processor multiplies bf16 in hardware (AMX tiles or AVX-512 BF16);
elsewhere torch emulates it, slower than fp32. So auto chooses bf16 on a CPU when torch's own check
(oneDNN's bf16 support) and the processor's flags say so and a short probe, bf16 and fp32 matrix products
timed side by side, confirms it; fp32 elsewhere. The probe's result is cached per processor and torch version
(`<cache>/hardware/`), so every run on a machine makes the same choice. On CUDA, auto is bf16 where the device
supports it, else fp32. GANFORGE_AUTO_PRECISION=fp32 (or bf16) in the environment makes that choice instead:
for runs that must match across machines, as the test suite's.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch

from ganforge.errors import GanforgeError
from ganforge.io import cache_dir, write_atomic

FAST_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo's names of bf16 multiplied in hardware
FLAGS = ("avx2", "avx512f", *FAST_BF16_FLAGS, "amx_tile")  # what decides a CPU's speed, as benchmarks record it
MIN_SPEEDUP = 1.3  # bf16 matrix products must be this much faster than fp32 for auto to choose bf16
PROBE_SIZE = 1024
FORCE_VARIABLE = "GANFORGE_AUTO_PRECISION"


def cpu() -> dict:
    """The processor's model name and speed-deciding flags (Linux's /proc/cpuinfo), with torch's own view."""
    name, flags = platform.processor() or None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in (None, "", "x86_64"):
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model_name": name, "flags": [f for f in FLAGS if f in flags], "logical_cpus": os.cpu_count(),
            "machine": platform.machine(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}


def matmul_rate(dtype: torch.dtype, size: int = PROBE_SIZE, seconds: float = 0.2) -> float:
    """GFLOP/s of size x size matrix products in `dtype` on this CPU, over about `seconds`."""
    small = torch.ones(64, 64, dtype=dtype)
    small @ small  # warm up on a small product: an emulated dtype takes seconds for one of the full size
    a = torch.ones(size, size, dtype=dtype)
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ a
        count += 1
    return 2 * size ** 3 * count / elapsed / 1e9


def bf16_probe(info: dict | None = None) -> dict:
    """bf16 against fp32 matrix products on this CPU, timed side by side; cached per processor and torch version."""
    info = info or cpu()
    key = hashlib.sha256(json.dumps([info, torch.__version__], sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "hardware" / f"bf16-probe-{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    fp32, bf16 = matmul_rate(torch.float32), matmul_rate(torch.bfloat16)
    result = {"fp32_gflops": round(fp32, 1), "bf16_gflops": round(bf16, 1), "speedup": round(bf16 / fp32, 2),
              "cpu": info["model_name"], "torch": torch.__version__}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result, indent=1).encode())
    return result


def choose_precision(device: torch.device) -> tuple[str, str]:
    """(the precision `--precision auto` trains in on `device`: bf16 or fp32, why)."""
    if forced := os.environ.get(FORCE_VARIABLE):
        if forced not in ("fp32", "bf16"):
            raise GanforgeError(f"{FORCE_VARIABLE}={forced[:40]!r}: expected fp32 or bf16")
        return forced, f"{FORCE_VARIABLE}={forced} in the environment"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{name} supports bf16"
        return "fp32", f"{name} does not support bf16"
    info = cpu()
    fast = [f for f in FAST_BF16_FLAGS if f in info["flags"]]
    if not fast or not info["onednn_bf16"]:
        return "fp32", (f"this CPU ({info['model_name']}) has neither AMX nor AVX-512 BF16: torch would emulate "
                        "bf16, slower than fp32")
    probe = bf16_probe(info)
    if probe["speedup"] < MIN_SPEEDUP:
        return "fp32", (f"this CPU ({info['model_name']}, {', '.join(fast)}) multiplied bf16 only "
                        f"{probe['speedup']}x as fast as fp32 (under {MIN_SPEEDUP}x, measured)")
    return "bf16", (f"this CPU ({info['model_name']}, {', '.join(fast)}) multiplies bf16 {probe['speedup']}x as "
                    f"fast as fp32 ({probe['bf16_gflops']:,.0f} against {probe['fp32_gflops']:,.0f} GFLOP/s, measured)")
