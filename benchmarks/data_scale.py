"""Prepared data sets at scale: how fast a folder of JPEGs is prepared, and whether training from the
memory-mapped shards is as fast as from memory and keeps the process's own memory flat as the set grows.

    python benchmarks/data_scale.py [--small 10000] [--large 200000] [--steps 100] [--rounds 2] [--together 2]
                                    [--threads 2] [--work /tmp/ganforge-data-scale] [--out FILE] [--cleanup]

1. Draws two folders of 64x64 RGB JPEGs (quality 90: a two-colour gradient, up to 6 rectangles and discs,
   a little noise), --small and --large images, 1,000 per subfolder, into --work, with a process per core;
   a folder already there with the right count is reused.
2. Preparation: `prepare_source("folder:...")` of the small set with 1 and 2 worker processes (alternating,
   --rounds times each), the large set with 2, each into a fresh folder; images/s over the whole call
   (listing and fingerprinting the files, decoding, writing the shards and the manifest).
3. Gathering: microseconds per `images[idx]` of a random batch, as the training loop gathers it, from the
   small set as one tensor and memory-mapped and from the large set memory-mapped.
4. Training: the default DCGAN (TrainConfig(data="prepared:DIR", image_size=64, channels=3, steps=--steps),
   all else default) on (a) the small set memory-mapped, (b) the same images in one tensor
   (ImageData(images=data.images[:])), (c) the large set memory-mapped; a and b alternate --rounds times,
   then c, then a and b are started at the same time --together times. Each run is a fresh process (the model's
   load_data, then TrainState(cfg, run_dir, data) and fit with a Recorder, which is what train_run does for one
   process), with --threads torch threads. Training images/s comes from the
   run's stats.jsonl: images seen over training seconds from its first line (warm-up, left out) to its last.
   The parent reads the child's /proc/PID/status every 50 ms and keeps the peak RssAnon (anonymous resident
   memory: the process's own, not the page cache of the memory-mapped shards) and VmHWM (peak resident
   memory, mapped file pages included); also the RssAnon peak within the training loop (first step to
   last), apart from the final panel, checkpoint and figures. MB here are 2^20 bytes.
5. Targets: memory-mapped training at least 90% of in-memory images/s; the large run's peak RssAnon within
   100 MB of the small memory-mapped run's (median over rounds), and under 1.5 GB (1,500 MB). The speed ratio
   is the median over the rounds trained together, where each run's images/s is taken over the window in
   which both were past their warm-up and neither had finished (from the wall clock at every step's end):
   whatever else runs on the machine then slows both alike. Runs one after the other see the machine's load
   change between them (on a shared 2-core machine, a run's images/s can swing 5x within minutes); their
   ratios are reported too, and are the target's with --together 0.

Writes benchmarks/results/data_scale.json (or --out). --smoke: 100 and 200 images, 4 steps of a tiny model per
run, one round, none together, in a temporary folder; writes no results file. The memory-mapped shards are read
warm: preparing and
verifying them leaves them in the page cache (this machine's RAM holds them), so (a) and (c) measure the
memory map's gather, not a disk. The default DCGAN at 64x64 trains at some tens of images/s on 2 cores, so
the default 100 steps take one to four minutes per run; "cores" (the child's CPU seconds over wall seconds in
its training loop) shows how much of the machine a run got when other work shares it.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import SMOKE_MODEL, run_record
from PIL import Image

from ganforge import training
from ganforge.config import TrainConfig
from ganforge.data import ImageData, prepare_source
from ganforge.data.folder import list_folder
from ganforge.data.prepared import load_prepared
from ganforge.families import MODELS
from ganforge.record import Recorder, new_run_dir
from ganforge.state import TrainState
from ganforge.stats import read_stats

SIZE = 64
CHUNK = 1000  # images per generation task, and per subfolder
SHAPES = 6  # rectangles or discs drawn per image, each kept with probability 0.8
QUALITY = 90
NOISE = 12  # uniform noise added to every pixel, 0..NOISE
SAMPLE_EVERY = 0.05  # seconds between reads of the child's /proc/PID/status
RESULTS = Path(__file__).resolve().parent / "results" / "data_scale.json"
MMAP_SPEED_MIN = 0.90  # memory-mapped / in-memory training images/s
ANON_GROWTH_MAX_MB = 100  # |peak RssAnon of the large run - that of the small memory-mapped run|
ANON_MAX_MB = 1500  # peak RssAnon of the large run
STATUS_KEYS = ("RssAnon", "RssFile", "RssShmem", "VmRSS", "VmHWM")


# ---- images ----------------------------------------------------------------------------------------------------

def draw(n: int, rng: np.random.Generator) -> np.ndarray:
    """n varied images, uint8 (n, SIZE, SIZE, 3), drawn for all n at once: a gradient between two colours in a
    random direction, up to SHAPES rectangles or discs of random colours, and a little noise."""
    top = 255 - NOISE
    yy, xx = (g.astype(np.float32) for g in np.mgrid[:SIZE, :SIZE])
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    t = 0.5 + (np.cos(angle) * (xx - SIZE / 2) + np.sin(angle) * (yy - SIZE / 2)) / (1.5 * SIZE)
    c0, c1 = rng.uniform(0, top, (2, 3, n, 1, 1)).astype(np.float32)
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    for channel in range(3):
        images[..., channel] = c0[channel] + (c1[channel] - c0[channel]) * t
    for _ in range(SHAPES):
        cx, cy = rng.uniform(0, SIZE, (2, n, 1, 1)).astype(np.float32)
        rx, ry = rng.uniform(2, SIZE / 4, (2, n, 1, 1)).astype(np.float32)
        rect = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < rx ** 2
        mask = np.where(rng.random((n, 1, 1)) < 0.5, rect, disc) & (rng.random((n, 1, 1)) < 0.8)
        colour = rng.integers(0, top + 1, (n, 3), dtype=np.uint8)
        images[mask] = colour[mask.nonzero()[0]]
    images += rng.integers(0, NOISE + 1, images.shape, dtype=np.uint8)
    return images


def write_chunk(task: tuple[str, int, int, int]) -> int:
    """Draw and write one subfolder of JPEGs; its images depend only on (set size, chunk)."""
    folder, total, k, count = task
    sub = Path(folder) / f"{k:04d}"
    sub.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(draw(count, np.random.default_rng([total, k]))):
        Image.fromarray(image).save(sub / f"{k * CHUNK + i:07d}.jpg", quality=QUALITY)
    return count


def count_jpegs(folder: Path) -> int:
    return sum(1 for sub in os.scandir(folder) if sub.is_dir() for f in os.scandir(sub.path) if f.name.endswith(".jpg"))


def image_folder(work: Path, n: int, workers: int) -> tuple[Path, dict]:
    """work/images-N with N JPEGs: reused when complete, else drawn (into a .partial folder, renamed when done)."""
    folder = work / f"images-{n}"
    if folder.is_dir() and count_jpegs(folder) == n:
        return folder, {"images": n, "reused": True, "seconds": None, "images_per_s": None,
                        "bytes": folder_bytes(folder)}
    partial = work / f"images-{n}.partial"
    for old in (partial, folder):
        shutil.rmtree(old, ignore_errors=True)
    tasks = [(str(partial), n, k, min(CHUNK, n - k * CHUNK)) for k in range(math.ceil(n / CHUNK))]
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        written = sum(pool.imap_unordered(write_chunk, tasks))
    seconds = time.perf_counter() - start
    os.replace(partial, folder)
    return folder, {"images": written, "reused": False, "seconds": round(seconds, 2),
                    "images_per_s": round(written / seconds, 1), "bytes": folder_bytes(folder)}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---- preparation -----------------------------------------------------------------------------------------------

def prepare_timed(name: str, folder: Path, out: Path, workers: int, round_: int) -> dict:
    """Prepare a folder into a fresh `out`; -> its row, with the CPU seconds of this process and of the pool's
    (reaped) worker processes, and the load average before and after."""
    shutil.rmtree(out, ignore_errors=True)
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds()
    start = time.perf_counter()
    prepare_source(f"folder:{folder}", out, SIZE, 3, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    cpu = [after - before for after, before in zip(cpu_seconds(), cpu_before)]
    manifest = json.loads((out / "manifest.json").read_text())
    row = {"set": name, "images": manifest["count"], "workers": workers, "round": round_,
           "seconds": round(seconds, 2), "images_per_s": round(manifest["count"] / seconds, 1),
           "cpu_seconds_main": round(cpu[0], 2), "cpu_seconds_workers": round(cpu[1], 2),
           "cores_used": round(sum(cpu) / seconds, 2), "cpu_ms_per_image": round(sum(cpu) / manifest["count"] * 1e3, 3),
           "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
           "shards": len(manifest["shards"]), "skipped": manifest["skipped"]["count"], "bytes": folder_bytes(out)}
    print(f"  prepared {name} ({row['images']} images) with {workers} worker(s): {seconds:.1f} s, "
          f"{row['images_per_s']:.0f} images/s, {row['cores_used']:.2f} cores", flush=True)
    return row


def cpu_seconds() -> tuple[float, float]:
    """(user + system CPU seconds of this process, of its reaped child processes)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


# ---- gathering a batch -----------------------------------------------------------------------------------------

def gather_us(images, batch: int, batches: int = 200, repeats: int = 5) -> float:
    """Microseconds to gather one batch of random images, as the training loop does (`images[idx]`); the
    median of `repeats` passes over the same `batches` random batches (the first pass also warms)."""
    g = torch.Generator().manual_seed(0)
    index = [torch.randint(0, len(images), (batch,), generator=g) for _ in range(batches)]
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for idx in index:
            images[idx]
        times.append((time.perf_counter() - start) / batches * 1e6)
    return round(statistics.median(times[1:]), 1)


def gather_rows(prepared: dict[str, Path], batch: int) -> list[dict]:
    small = load_prepared(prepared["small"])
    rows = [{"set": "small", "held_as": "tensor", "images": len(small),
             "us_per_batch": gather_us(small.images[:], batch)},
            {"set": "small", "held_as": "memory map", "images": len(small),
             "us_per_batch": gather_us(small.images, batch)}]
    large = load_prepared(prepared["large"])
    rows.append({"set": "large", "held_as": "memory map", "images": len(large),
                 "us_per_batch": gather_us(large.images, batch)})
    for row in rows:
        print(f"  gather a batch of {batch}, {row['set']} set as a {row['held_as']}: {row['us_per_batch']:.0f} us")
    return rows


# ---- training: one child process per run ----------------------------------------------------------------------

def proc_status(pid: int | str) -> dict[str, int]:
    """The memory lines of /proc/PID/status, in kB; {} once the process is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_KEYS:
            fields[key] = int(value.split()[0])
    return fields


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def mark() -> dict:
    """The memory lines of this process's status, the wall clock and the CPU time it has used."""
    return {**proc_status("self"), "t": time.time(), "cpu_s": time.process_time()}


def child(spec: dict) -> None:
    """One training run, in its own process; writes what it saw to spec["result"]."""
    torch.set_num_threads(spec["threads"])
    marks = {"started": mark()}
    tiny = SMOKE_MODEL if spec.get("smoke") else {}
    cfg = TrainConfig(data=f"prepared:{spec['prepared']}", image_size=SIZE, channels=3, steps=spec["steps"], **tiny)
    data = MODELS[cfg.model].load_data(cfg)
    if spec["in_memory"]:
        data = ImageData(images=data.images[:])
    marks["loaded"] = mark()
    run_dir = new_run_dir(Path(spec["runs"]), cfg)
    trainer = TrainState(cfg, run_dir, data)
    marks["built"] = mark()
    loop = []  # (wall clock, CPU seconds) at the start of the first training step and at the end of the last
    train_step = training.train_step

    step_ends = []  # wall clock at the end of every step

    def timed_step(*a, **k):
        if not loop:
            loop.append((time.time(), time.process_time()))
        out = train_step(*a, **k)
        loop[1:] = [(time.time(), time.process_time())]
        step_ends.append(loop[1][0])
        return out

    training.train_step = timed_step  # fit calls the module's train_step: this process's (a child's) own
    rec = Recorder(trainer)
    try:
        rec.open({})
        training.fit(trainer, rec, progress=False)
    finally:
        rec.close()
    marks["trained"] = mark()
    stats = read_stats(run_dir).train
    result = {"run_dir": str(run_dir), "images": len(data), "images_type": type(data.images).__name__,
              "step": trainer.step, "threads": torch.get_num_threads(),
              "stats": [s for s in stats if "images_per_s" in s], "marks": marks, "loop": loop, "step_ends": step_ends}
    Path(spec["result"]).write_text(json.dumps(result))


def train_runs(jobs: list[tuple[str, Path, bool, int]], args, runs: Path) -> list[dict]:
    """Start training runs (name, prepared folder, in memory, round) at once, each in its own process, and
    sample their memory from here until all have ended; -> a row per run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    mode = "together" if len(jobs) > 1 else "alone"
    load_before = os.getloadavg()
    children = []
    for name, prepared, in_memory, round_ in jobs:
        result_path = runs / f"{name}-{round_}-{mode}.json"
        spec = {"prepared": str(prepared), "in_memory": in_memory, "steps": args.steps, "threads": args.threads,
                "runs": str(runs), "result": str(result_path), "smoke": args.smoke}
        command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        children.append({"name": name, "round": round_, "result": result_path, "start": time.perf_counter(),
                         "proc": subprocess.Popen(command, env=env), "samples": [], "wall": None})
    while any(c["wall"] is None for c in children):
        for c in children:
            if c["wall"] is not None:
                continue
            if c["proc"].poll() is not None:
                c["wall"] = time.perf_counter() - c["start"]
                continue
            fields = proc_status(c["proc"].pid)  # (wall clock, the memory lines of /proc/PID/status in kB)
            if fields.get("RssAnon") is not None:
                c["samples"].append((time.time(), fields))
        time.sleep(SAMPLE_EVERY)
    load_after = os.getloadavg()
    rows = []
    for c in children:
        if c["proc"].returncode:
            raise SystemExit(f"training run {c['name']} (round {c['round']}) failed: exit status {c['proc'].returncode}")
        row = run_row(c["name"], c["round"], json.loads(c["result"].read_text()), c["samples"], c["wall"])
        row.update(mode=mode, loadavg_before=load_before[0], loadavg_after=load_after[0])
        rows.append(row)
        print(f"  {row['run']} round {row['round']}{' (together)' if len(jobs) > 1 else ''}: "
              f"{row['images_per_s']:.1f} images/s, peak RssAnon {row['peak_rss_anon_mb']:.0f} MB, "
              f"VmHWM {row['vmhwm_mb']:.0f} MB ({row['child_wall_seconds']:.0f} s)", flush=True)
    return rows


def run_row(name: str, round_: int, result: dict, samples: list, wall: float) -> dict:
    """One run's numbers, from what its process wrote and the memory samples taken of it."""
    stats, marks = result["stats"], result["marks"]
    first, last = stats[0], stats[-1]
    if len(stats) >= 2:  # the first line holds the warm-up
        rate = (last["images_seen"] - first["images_seen"]) / (last["seconds"] - first["seconds"])
        median = statistics.median(s["images_per_s"] for s in stats[1:])
    else:
        rate = median = last["images_seen"] / last["seconds"]
    (t_start, cpu_start), (t_end, cpu_end) = result["loop"][0], result["loop"][-1]
    marks["loop_start"], marks["loop_end"] = {"t": t_start}, {"t": t_end}

    def peak(key: str, since: str | None = None, until: str | None = None) -> float:
        lo, hi = marks[since]["t"] if since else 0, marks[until]["t"] if until else math.inf
        return mb(max((f.get(key, 0) for t, f in samples if lo <= t <= hi), default=0))

    t0 = samples[0][0] if samples else 0
    timeline = {}  # RssAnon, the highest sample in each second of the run
    for t, f in samples:
        second = int(t - t0)
        timeline[second] = max(timeline.get(second, 0), mb(f["RssAnon"]))
    fit_wall = marks["trained"]["t"] - marks["built"]["t"]
    return {"run": name, "round": round_, "images": result["images"], "images_type": result["images_type"],
            "steps": result["step"], "batch_size": TrainConfig.batch_size, "threads": result["threads"],
            "train_seconds": last["seconds"], "steady_seconds": round(last["seconds"] - first["seconds"], 2),
            "steady_images": last["images_seen"] - first["images_seen"], "images_per_s": round(rate, 1),
            "median_line_images_per_s": median, "stats_lines": len(stats),
            "peak_rss_anon_mb": mb(max((f["RssAnon"] for _, f in samples), default=0)),
            "peak_rss_anon_mb_before_fit": peak("RssAnon", None, "built"),
            "peak_rss_anon_mb_training_loop": peak("RssAnon", "loop_start", "loop_end"),
            "peak_rss_anon_mb_after_loop": peak("RssAnon", "loop_end"),
            "vmhwm_mb": mb(max([f.get("VmHWM", 0) for _, f in samples] + [marks["trained"].get("VmHWM", 0)])),
            "peak_rss_file_mb": peak("RssFile"), "memory_samples": len(samples),
            "rss_anon_mb_at": {k: mb(v["RssAnon"]) for k, v in marks.items() if "RssAnon" in v},
            "rss_file_mb_at": {k: mb(v["RssFile"]) for k, v in marks.items() if "RssFile" in v},
            "load_seconds": round(marks["loaded"]["t"] - marks["started"]["t"], 2), "fit_seconds": round(fit_wall, 1),
            "loop_seconds": round(t_end - t_start, 1),
            "loop_cores_used": round((cpu_end - cpu_start) / (t_end - t_start), 2),
            "loop_images_per_cpu_s": round(result["step"] * TrainConfig.batch_size / (cpu_end - cpu_start), 2),
            "fit_cores_used": round((marks["trained"]["cpu_s"] - marks["built"]["cpu_s"]) / fit_wall, 2),
            "child_wall_seconds": round(wall, 1), "loop_from_s": round(t_start - t0, 1),
            "loop_to_s": round(t_end - t0, 1), "step_ends": [round(t, 3) for t in result["step_ends"]],
            "rss_anon_mb_timeline_1s": [timeline[k] for k in sorted(timeline)]}


def common_window(a: dict, b: dict, warmup: int) -> dict:
    """Two runs trained at the same time: each one's images/s over the time both were past their first `warmup`
    steps and neither had finished (cumulative steps interpolated at the window's ends)."""
    lo = max(a["step_ends"][warmup - 1], b["step_ends"][warmup - 1])
    hi = min(a["step_ends"][-1], b["step_ends"][-1])

    def rate(run: dict) -> float:
        ends, steps = run["step_ends"], np.arange(1, len(run["step_ends"]) + 1)
        return float(np.interp(hi, ends, steps) - np.interp(lo, ends, steps)) * run["batch_size"] / (hi - lo)

    ra, rb = rate(a), rate(b)
    return {"round": a["round"], "window_seconds": round(hi - lo, 1), "a_images_per_s": round(ra, 2),
            "b_images_per_s": round(rb, 2), "ratio": round(ra / rb, 4)}


# ---- the report ------------------------------------------------------------------------------------------------

def median_of(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000, help="images in the small set")
    parser.add_argument("--large", type=int, default=200_000, help="images in the large set")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run (at least 2 stats lines: 50)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of (a, b), and of the 1- and "
                        "2-worker preparations of the small set")
    parser.add_argument("--together", type=int, default=2, help="rounds of (a, b) trained at the same time, for "
                        "their ratio (0: none; the ratio then comes from the rounds one after the other)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every training run")
    parser.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1, help="processes drawing images")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ganforge-data-scale"),
                        help="where the images, prepared sets and runs go")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the results JSON")
    parser.add_argument("--cleanup", action="store_true", help="delete the work folder at the end")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="tiny sets and runs: does the script run?")
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    log_every = TrainConfig.log_every
    if args.smoke:
        log_every = SMOKE_MODEL["log_every"]
        args.small, args.large, args.steps, args.rounds, args.together, args.gen_workers = 100, 200, 4, 1, 0, 1
        args.work, args.cleanup = Path(tempfile.mkdtemp(prefix="ganforge-smoke-")), True
    if args.steps < 2 * log_every:
        parser.error(f"--steps must be at least {2 * log_every}: two stats lines, the first being the warm-up")
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    work = args.work.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    print(f"work folder {work} ({free / 2**30:.0f} GB free); torch {torch.__version__}, {args.threads} thread(s)")

    print("images")
    folders, generation = {}, {}
    for name, n in (("small", args.small), ("large", args.large)):
        folders[name], generation[name] = image_folder(work, n, args.gen_workers)
        g = generation[name]
        print(f"  {name}: {n} JPEGs in {folders[name]}" + (" (reused)" if g["reused"] else
              f", drawn in {g['seconds']:.0f} s ({g['images_per_s']:.0f} images/s)"), flush=True)

    print("preparation")
    listing = {}
    for name in ("small", "large"):  # once untimed: the files' metadata is warm for every timed run
        start = time.perf_counter()
        list_folder(str(folders[name]))
        listing[name] = round(time.perf_counter() - start, 2)
    prep = []
    for r in range(args.rounds):
        for workers in (1, 2):
            prep.append(prepare_timed("small", folders["small"], work / f"prepared-small-w{workers}", workers, r))
    prep.append(prepare_timed("large", folders["large"], work / "prepared-large", 2, 0))
    small_w1 = median_of([p for p in prep if p["set"] == "small" and p["workers"] == 1], "images_per_s")
    small_w2 = median_of([p for p in prep if p["set"] == "small" and p["workers"] == 2], "images_per_s")
    large_w2 = prep[-1]["images_per_s"]

    print("gathering (page cache warm)")
    gather = gather_rows({"small": work / "prepared-small-w2", "large": work / "prepared-large"},
                         TrainConfig.batch_size)

    print(f"training: dcgan {SIZE}x{SIZE}, batch {TrainConfig.batch_size}, {args.steps} steps per run, "
          f"{args.threads} thread(s)")
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    training, together = [], []
    small, large = work / "prepared-small-w2", work / "prepared-large"
    for r in range(args.rounds):
        training += train_runs([("a_small_mmap", small, False, r)], args, runs)
        training += train_runs([("b_small_memory", small, True, r)], args, runs)
    training += train_runs([("c_large_mmap", large, False, 0)], args, runs)
    for r in range(args.together):
        together += train_runs([("a_small_mmap", small, False, r), ("b_small_memory", small, True, r)], args, runs)
    a = [t for t in training if t["run"] == "a_small_mmap"]
    b = [t for t in training if t["run"] == "b_small_memory"]
    c = training[-1]
    round_ratios = [x["images_per_s"] / y["images_per_s"] for x, y in zip(a, b)]
    windows = [common_window(x, y, log_every) for x, y in zip(together[::2], together[1::2])]
    if windows:  # a and b at the same time see the same load from anything else on the machine
        speed_ratio, speed_how = statistics.median(w["ratio"] for w in windows), "trained together, median of rounds"
    else:
        speed_ratio, speed_how = statistics.median(round_ratios), "trained one after the other, median of rounds"
    anon_a = median_of(a, "peak_rss_anon_mb")
    growth = c["peak_rss_anon_mb"] - anon_a
    targets = [
        {"name": f"memory-mapped training images/s at least 90% of in-memory ({speed_how})",
         "value": round(speed_ratio, 3),
         "limit": MMAP_SPEED_MIN, "met": speed_ratio >= MMAP_SPEED_MIN},
        {"name": f"peak RssAnon, {args.large} images vs {args.small} (memory-mapped), MB difference",
         "value": round(growth, 1), "limit": ANON_GROWTH_MAX_MB, "met": abs(growth) <= ANON_GROWTH_MAX_MB},
        {"name": f"peak RssAnon of the {args.large}-image run, MB", "value": c["peak_rss_anon_mb"],
         "limit": ANON_MAX_MB, "met": c["peak_rss_anon_mb"] < ANON_MAX_MB},
    ]
    total = time.perf_counter() - began

    print("\npreparation (folder of JPEGs -> prepared shards; listing the files included)")
    print(f"{'set':8}{'images':>9}{'workers':>9}{'round':>7}{'seconds':>9}{'images/s':>10}{'cores':>7}"
          f"{'CPU ms/image':>14}")
    for p in prep:
        print(f"{p['set']:8}{p['images']:9d}{p['workers']:9d}{p['round']:7d}{p['seconds']:9.1f}{p['images_per_s']:10.0f}"
              f"{p['cores_used']:7.2f}{p['cpu_ms_per_image']:14.3f}")
    print(f"small set, 2 workers vs 1 (medians): {small_w2 / small_w1:.2f}x; listing alone: "
          f"small {listing['small']:.1f} s, large {listing['large']:.1f} s")
    step_us = TrainConfig.batch_size / median_of(a, "images_per_s") * 1e6
    print(f"\ngathering a batch of {TrainConfig.batch_size} random images (images[idx]; median of 5 passes over 200 "
          f"batches)")
    for g in gather:
        g["fraction_of_a_step"] = round(g["us_per_batch"] / step_us, 6)
        print(f"  {g['set']:6}{g['images']:8d} images as a {g['held_as']:11}{g['us_per_batch']:8.0f} us "
              f"({g['fraction_of_a_step']:.3%} of a training step)")
    print(f"\ntraining ({args.steps} steps; images/s from stats.jsonl after its first line; cores: CPU seconds / wall "
          "seconds of the child in its training loop)")
    print("RssAnon MB: after loading the data; peak in the training loop; peak of the whole process (VmHWM: all")
    print("resident memory, the mapped shards' pages included)")
    print(f"{'run':16}{'images':>8}{'round':>6}{'train s':>9}{'images/s':>10}{'cores':>7}{'loaded':>8}{'loop':>7}"
          f"{'peak':>7}{'VmHWM':>7}")
    for t in training + together:
        print(f"{t['run'] + (' *' if t['mode'] == 'together' else ''):16}{t['images']:8d}{t['round']:6d}"
              f"{t['train_seconds']:9.1f}{t['images_per_s']:10.1f}{t['loop_cores_used']:7.2f}"
              f"{t['rss_anon_mb_at']['loaded']:8.0f}{t['peak_rss_anon_mb_training_loop']:7.0f}"
              f"{t['peak_rss_anon_mb']:7.0f}{t['vmhwm_mb']:7.0f}")
    if together:
        print("* a and b trained at the same time (each gets about half the machine)")
    print(f"memory-mapped vs in memory, one after the other: images/s per round "
          f"{', '.join(f'{r:.3f}' for r in round_ratios)}; per CPU second in the loop "
          f"{median_of(a, 'loop_images_per_cpu_s') / median_of(b, 'loop_images_per_cpu_s'):.3f}")
    for w in windows:
        print(f"memory-mapped vs in memory, trained together (round {w['round']}): {w['a_images_per_s']:.1f} vs "
              f"{w['b_images_per_s']:.1f} images/s over the {w['window_seconds']:.0f} s both were past their warm-up: "
              f"{w['ratio']:.3f}")
    print(f"peak RssAnon in the training loop, large vs small memory-mapped: "
          f"{c['peak_rss_anon_mb_training_loop'] - median_of(a, 'peak_rss_anon_mb_training_loop'):+.0f} MB")
    print("\ntargets")
    for target in targets:
        print(f"  {'PASS' if target['met'] else 'FAIL'}  {target['name']}: {target['value']} (limit {target['limit']})")
    print(f"\ntotal {total / 60:.1f} min")

    report = run_record("data_scale") | {
        "threads": args.threads,
        "settings": {"small": args.small, "large": args.large, "steps": args.steps, "rounds": args.rounds,
                     "together": args.together,
                     "image_size": SIZE, "channels": 3, "jpeg_quality": QUALITY, "model": TrainConfig.model,
                     "batch_size": TrainConfig.batch_size, "log_every": log_every, "work": str(work),
                     "memory_sample_every_s": SAMPLE_EVERY,
                     "images_per_s_from": "stats.jsonl: images_seen / seconds between the first line "
                                          "(warm-up, excluded) and the last"},
        "generation": generation, "listing_seconds": listing,
        "preparation": {"runs": prep, "small_workers1_images_per_s": small_w1, "small_workers2_images_per_s": small_w2,
                        "large_workers2_images_per_s": large_w2, "small_workers2_vs_1": round(small_w2 / small_w1, 3)},
        "gather": gather,
        "training": {"runs": training,
                     "a_small_mmap_images_per_s": median_of(a, "images_per_s"),
                     "b_small_memory_images_per_s": median_of(b, "images_per_s"),
                     "c_large_mmap_images_per_s": c["images_per_s"],
                     "mmap_vs_memory": round(speed_ratio, 3), "mmap_vs_memory_from": speed_how,
                     "round_ratios": [round(r, 3) for r in round_ratios],
                     "mmap_vs_memory_one_after_the_other": round(statistics.median(round_ratios), 3),
                     "together": {"runs": together, "windows": windows,
                                  "how": "a and b started at the same time; each one's images/s over the window in "
                                         "which both were past their first log_every steps (warm-up) and neither "
                                         "had finished, from the wall clock at the end of every step"},
                     "mmap_vs_memory_of_medians": round(median_of(a, "images_per_s") / median_of(b, "images_per_s"), 3),
                     "mmap_vs_memory_per_cpu_s": round(median_of(a, "loop_images_per_cpu_s")
                                                       / median_of(b, "loop_images_per_cpu_s"), 3),
                     "a_small_mmap_peak_rss_anon_mb": anon_a,
                     "b_small_memory_peak_rss_anon_mb": median_of(b, "peak_rss_anon_mb"),
                     "c_large_mmap_peak_rss_anon_mb": c["peak_rss_anon_mb"],
                     "large_vs_small_peak_rss_anon_mb": round(growth, 1),
                     "a_small_mmap_loop_peak_rss_anon_mb": median_of(a, "peak_rss_anon_mb_training_loop"),
                     "b_small_memory_loop_peak_rss_anon_mb": median_of(b, "peak_rss_anon_mb_training_loop"),
                     "c_large_mmap_loop_peak_rss_anon_mb": c["peak_rss_anon_mb_training_loop"],
                     "large_vs_small_loop_peak_rss_anon_mb": round(c["peak_rss_anon_mb_training_loop"]
                                                                   - median_of(a, "peak_rss_anon_mb_training_loop"), 1)},
        "targets": targets, "all_targets_met": all(t["met"] for t in targets),
        "total_seconds": round(total, 1),
    }
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    if args.cleanup:
        shutil.rmtree(work, ignore_errors=True)
        print(f"deleted {work}")
    return report


if __name__ == "__main__":
    main()
