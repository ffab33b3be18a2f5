"""Load test of ganforge studio: N explore requests (grids of 16) at concurrency C on loopback.

    python benchmarks/studio_load.py                      # trains a tiny DCGAN, starts a studio on it
    python benchmarks/studio_load.py --checkpoint RUN_DIR # starts a studio on that run
    python benchmarks/studio_load.py --url http://127.0.0.1:7860/ --model 0   # a studio already running

Two phases: --concurrency clients (16, within the studio's queue of 32), then --overload clients (64, above
it). For each: p50 and p95 latency of the accepted requests, the share answered 503 (busy), other errors (any
other status, or a failed connection), and whether a plain request (/api/info, from a separate client every
0.2 s) was answered within 1 s while the studio was loaded and after. Writes
benchmarks/results/studio_load.json; --smoke (40 requests per phase) writes nothing.
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

from common import run_record, write_results


async def load(url: str, model: int, requests: int, concurrency: int) -> dict:
    """`requests` explore requests from `concurrency` clients at once; meanwhile a separate client asks for
    /api/info (a plain request, no generation) every 0.2 s, as a user's page would. -> each request's
    latency by outcome, and the probe's latencies."""
    import httpx

    latencies: dict[str, list[float]] = {}
    todo = iter(range(requests))
    done = asyncio.Event()

    async def worker(client):
        for i in todo:
            start = time.perf_counter()
            try:
                r = await client.get(f"{url}api/models/{model}/explore", params={"seed": i, "n": 16})
                ok = r.status_code == 200 and r.headers.get("content-type") == "image/png"
                outcome = "ok" if ok else f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                outcome = type(e).__name__
            latencies.setdefault(outcome, []).append(time.perf_counter() - start)

    async def probe(client, out: list[float]):
        while not done.is_set():
            start = time.perf_counter()
            r = await client.get(f"{url}api/info")
            out.append(time.perf_counter() - start if r.status_code == 200 else float("inf"))
            await asyncio.sleep(0.2)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    probes: list[float] = []
    async with httpx.AsyncClient(timeout=60, limits=limits) as client, httpx.AsyncClient(timeout=60) as side:
        watcher = asyncio.ensure_future(probe(side, probes))
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        done.set()
        await watcher
        start = time.perf_counter()
        after = (await side.get(f"{url}api/info")).status_code == 200
        after_s = time.perf_counter() - start if after else float("inf")
    return {"latencies": latencies, "probe_during_s": probes, "probe_after_s": after_s}


def percentile(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def summary(name: str, requests: int, concurrency: int, wall: float, measured: dict) -> dict:
    ok = measured["latencies"].get("ok", [])
    refused = len(measured["latencies"].get("HTTP 503", []))
    other = {k: len(v) for k, v in measured["latencies"].items() if k not in ("ok", "HTTP 503")}
    probes = measured["probe_during_s"]
    row = {"phase": name, "requests": requests, "concurrency": concurrency, "accepted": len(ok),
           "p50_ms": percentile(ok, 0.5) and percentile(ok, 0.5) * 1000,
           "p95_ms": percentile(ok, 0.95) and percentile(ok, 0.95) * 1000, "share_503": refused / requests,
           "other_errors": other, "requests_per_s": requests / wall,
           "plain_request_max_s_during": max(probes) if probes else None,
           "plain_request_s_after": measured["probe_after_s"],
           "plain_requests_within_1s": bool(probes) and max(probes) < 1 and measured["probe_after_s"] < 1}
    print(f"{name}: {requests} explore requests (16 images) at concurrency {concurrency}: {len(ok)} accepted, "
          f"p50 {row['p50_ms'] or 0:.1f} ms, p95 {row['p95_ms'] or 0:.1f} ms; {row['share_503']:.0%} answered 503; "
          f"other errors {sum(other.values())}; /api/info at most {row['plain_request_max_s_during'] or 0:.3f} s "
          f"while loaded, {row['plain_request_s_after']:.3f} s after", flush=True)
    return row


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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a studio already running (default: start one)")
    parser.add_argument("--checkpoint", help="start the studio on this run folder or checkpoint (default: a tiny "
                        "DCGAN trained here on digits, 28x28)")
    parser.add_argument("--model", type=int, default=0, help="the model id to draw from (default: 0)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--overload", type=int, default=64, help="the second phase's concurrency, above the "
                        "studio's queue of 32 (0: no such phase)")
    parser.add_argument("--threads", type=int, default=max(1, min(4, (os.cpu_count() or 2) // 2)),
                        help="torch threads of a studio started here")
    parser.add_argument("--smoke", action="store_true", help="40 requests per phase: does the script run?")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests = 40
    record = run_record("studio_load") | {"smoke": args.smoke, "studio_threads": args.threads, "phases": []}
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url
        if not url:
            server, url = start_studio(args.checkpoint or tiny_run(Path(tmp)), args.threads)
        url = url if url.endswith("/") else url + "/"
        try:
            asyncio.run(load(url, args.model, 20, 4))  # warm up
            for name, concurrency in (("within the queue", args.concurrency), ("above the queue", args.overload)):
                if concurrency:
                    start = time.perf_counter()
                    measured = asyncio.run(load(url, args.model, args.requests, concurrency))
                    record["phases"].append(summary(name, args.requests, concurrency, time.perf_counter() - start,
                                                    measured))
        finally:
            if server:
                server.terminate()
                server.wait(10)
    if not args.smoke:
        print(f"results: {write_results('studio_load', record)}")
    return record


if __name__ == "__main__":
    main()
