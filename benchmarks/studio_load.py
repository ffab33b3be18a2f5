"""Load test of ganforge studio: N explore requests (grids of 16) at concurrency C on loopback.

    python benchmarks/studio_load.py                      # trains a tiny DCGAN, starts a studio on it
    python benchmarks/studio_load.py --checkpoint RUN_DIR # starts a studio on that run
    python benchmarks/studio_load.py --url http://127.0.0.1:7860/ --model 0   # a studio already running

Prints p50 and p95 latency and the error count (any status but 200, or a failed connection).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


async def load(url: str, model: int, requests: int, concurrency: int) -> tuple[list[float], dict]:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    todo = iter(range(requests))

    async def worker(client):
        for i in todo:
            start = time.perf_counter()
            try:
                r = await client.get(f"{url}api/models/{model}/explore", params={"seed": i, "n": 16})
                ok = r.status_code == 200 and r.headers.get("content-type") == "image/png"
                if not ok:
                    errors[f"HTTP {r.status_code}"] = errors.get(f"HTTP {r.status_code}", 0) + 1
            except httpx.HTTPError as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, errors


def start_studio(checkpoint: str, threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "ganforge", "studio", checkpoint, "--port", str(port),
                               "--threads", str(threads)], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if "http://" not in line:
        server.terminate()
        raise SystemExit(f"the studio did not start: {line}")
    return server, f"http://127.0.0.1:{port}/"


def tiny_run(folder: Path) -> str:
    from ganforge import train
    from ganforge.config import TrainConfig

    config = TrainConfig(model="dcgan", data="digits", g_width=8, d_width=8, z_dim=16, batch_size=256,
                         log_every=5, n_samples=16, steps=10).validate()
    return str(train(config, runs_dir=folder, progress=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a studio already running (default: start one)")
    parser.add_argument("--checkpoint", help="start the studio on this run folder or checkpoint (default: a tiny "
                        "DCGAN trained here on digits, 28x28)")
    parser.add_argument("--model", type=int, default=0, help="the model id to draw from (default: 0)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=max(1, min(4, (os.cpu_count() or 2) // 2)),
                        help="torch threads of a studio started here")
    args = parser.parse_args()
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url
        if not url:
            server, url = start_studio(args.checkpoint or tiny_run(Path(tmp)), args.threads)
        url = url if url.endswith("/") else url + "/"
        try:
            asyncio.run(load(url, args.model, 20, 4))  # warm up
            start = time.perf_counter()
            latencies, errors = asyncio.run(load(url, args.model, args.requests, args.concurrency))
            wall = time.perf_counter() - start
        finally:
            if server:
                server.terminate()
                server.wait(10)
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print(f"{args.requests} requests (explore, 16 images) at concurrency {args.concurrency} on {url}")
    print(f"p50 {pct(0.50):.1f} ms   p95 {pct(0.95):.1f} ms   max {latencies[-1] * 1000:.1f} ms   "
          f"{args.requests / wall:.0f} requests/s")
    print(f"errors: {sum(errors.values())}" + (f" ({errors})" if errors else ""))


if __name__ == "__main__":
    main()
