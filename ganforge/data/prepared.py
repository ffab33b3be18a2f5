"""Prepared data sets: images decoded once into uint8 shard files that training reads by memory map.

`ganforge prepare SOURCE --out DIR` (or the first use of folder:, celeba:, captions: or lsun:, which
prepares into ganforge's cache) writes:

  DIR/plan.json         first: what is being prepared (source, size, channels, the listing's fingerprint)
  DIR/shard-00000.npy   uint8 (n, C, H, W): the decoded images of one slice of the listing
  DIR/shard-00000.json  after its shard: the count, the shard's SHA-256, the listing positions kept, skips
  DIR/labels.npy, attributes.npy, captions.json   beside the images, in image order (when the source has them)
  DIR/manifest.json     last: format, version, count, shape, source, ganforge version, every shard with its
                        SHA-256, class and attribute names, the report of skipped files

A shard and its JSON are each written to a unique temp name and renamed, so a file with a final name is
complete. A killed preparation leaves the finished shards; running it again decodes only the rest. A
set without manifest.json is never read. The manifest's own SHA-256 names the data set in caches.

Reading: every shard is an `np.load(mmap_mode="r")` array, and `ShardedImages` gathers any batch from
them; the operating system keeps the pages it reads in its file cache, so a process's own memory does
not grow with the data set.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import mmap
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ganforge.data.images import ImageData
from ganforge.errors import GanforgeError
from ganforge.io import cache_dir, sha256_file, unique_tmp, write_atomic
from ganforge.version import __version__

FORMAT = "ganforge-prepared"
FORMAT_VERSION = 1
SHARD_BYTES = 64 << 20  # images per shard: about this many bytes, and at least SHARD_MIN images
SHARD_MIN = 256
CHUNK = 64  # listing items per task handed to a decoding process
POOL_FROM = 512  # fewer items than this are decoded in this process: no pool to start


@dataclass
class Listing:
    """What a source holds, before decoding: one picklable item per image (a file path, an LMDB key) and
    a function that decodes a list of items, with whatever the source knows about each item."""

    source: str  # the spec it came from, e.g. folder:/photos
    items: list
    # decode(items, size, channels) -> (uint8 (K, C, size, size), positions in items of the K decoded,
    # "item (why)" for each item skipped); a module-level function or a functools.partial of one, so a
    # process pool can run it
    decode: Callable
    fingerprint: str  # changes whenever the items or their content may have changed
    labels: np.ndarray | None = None  # int64 per item
    classes: list[str] | None = None
    attributes: np.ndarray | None = None  # bool (items, A)
    attribute_names: list[str] | None = None
    captions: list[list[str]] | None = None  # per item
    skipped: list[str] = field(default_factory=list)  # items dropped before decoding (e.g. listed but missing)


class ShardedImages:
    """uint8 images (N, C, H, W) spread over memory-mapped shards, indexed like a tensor: an int, a slice,
    integer indices or a bool mask give a uint8 tensor holding only those images."""

    dtype = torch.uint8

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.starts = np.cumsum([0] + [len(a) for a in arrays])
        self.shape = torch.Size((int(self.starts[-1]), *arrays[0].shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return 4

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, tuple):  # images first, then within them
            first, rest = index[0], index[1:]
            return self[first][rest] if isinstance(first, int) else self[first][(slice(None), *rest)]
        if isinstance(index, int):
            return self[torch.tensor([index])][0]
        if isinstance(index, slice):
            positions = np.arange(*index.indices(len(self)))
        else:
            positions = torch.as_tensor(index)
            if positions.dtype == torch.bool:
                positions = positions.nonzero().flatten()
            positions = positions.numpy().astype(np.int64).reshape(-1)
            if len(positions) and (positions.min() < -len(self) or positions.max() >= len(self)):
                raise IndexError(f"index out of range for {len(self)} images")
            positions = positions % max(len(self), 1)
        out = np.empty((len(positions), *self.shape[1:]), dtype=np.uint8)
        shard = np.searchsorted(self.starts, positions, side="right") - 1
        for s in np.unique(shard):
            take = shard == s
            out[take] = self.arrays[s][positions[take] - self.starts[s]]
        return torch.from_numpy(out)


# ---- preparing -------------------------------------------------------------------------------------------------

def prepare(listing: Listing, out: Path, size: int, channels: int, workers: int | None = None,
            progress: bool = True) -> Path:
    """Decode a listing into a prepared set in `out` (continuing a preparation that was stopped); returns
    the manifest's path. Refuses a folder that holds, or is preparing, a different data set."""
    out = Path(out).expanduser()
    plan = {"format": FORMAT, "format_version": FORMAT_VERSION, "source": listing.source, "image_size": size,
            "channels": channels, "fingerprint": listing.fingerprint, "items": len(listing.items),
            "shard_items": max(SHARD_MIN, SHARD_BYTES // (channels * size * size))}
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = open(out / ".lock", "a")  # noqa: SIM115 - held by the `with` below for the whole preparation
    except OSError as e:
        raise GanforgeError(f"cannot prepare into {out}: {e.strerror or e}; choose another --out") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process preparing the same folder: wait for it
        manifest = out / "manifest.json"
        if manifest.is_file():
            _check_same(out, plan, read_manifest(out))
            return manifest
        if (out / "plan.json").is_file():  # a preparation that was stopped: go on with its plan
            stored = _read_json(out / "plan.json")
            _check_same(out, plan, stored)
            plan["shard_items"] = stored.get("shard_items", plan["shard_items"])
        elif any(p.name != ".lock" for p in out.iterdir()):
            raise GanforgeError(f"{out} is not empty and holds no prepared data set; choose an empty or new --out")
        else:
            write_atomic(out / "plan.json", json.dumps(plan, indent=1).encode())
        return _prepare(listing, out, plan, workers, progress)


def _check_same(out: Path, plan: dict, found: dict) -> None:
    """Refuse to continue or reuse a folder that holds another data set. The fingerprint stands for the
    source's files (however their path is spelled) and the way ganforge decodes them."""
    if all(found.get(k) == plan[k] for k in ("fingerprint", "image_size", "channels")):
        return

    def described(p: dict) -> str:
        return f"{p.get('source')} at {p.get('image_size')}x{p.get('image_size')} px, {p.get('channels')} channel(s)"

    held, asked = described(found), described(plan)
    why = " (the same source, but its files have changed since, or ganforge decodes them differently)" * (held == asked)
    raise GanforgeError(f"{out} holds a different prepared data set: {held}, not {asked}{why}; choose another "
                        "--out, or delete the folder to prepare it again")


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _prepare(listing: Listing, out: Path, plan: dict, workers: int | None, progress: bool) -> Path:
    per_shard, n_items = plan["shard_items"], plan["items"]
    n_shards = max(1, -(-n_items // per_shard))
    done = {k for k in range(n_shards) if _shard_complete(out, k)}
    todo = [k for k in range(n_shards) if k not in done]
    size, channels = plan["image_size"], plan["channels"]

    def end(k: int) -> int:
        return min((k + 1) * per_shard, n_items)

    # (shard, first item, last item + 1): a shard's items in chunks, one chunk per task
    tasks = [(k, a, min(a + CHUNK, end(k))) for k in todo for a in range(k * per_shard, end(k), CHUNK)]
    remaining = sum(end(k) - k * per_shard for k in todo)
    workers = workers or _cpu_count()
    bar = tqdm(total=n_items, initial=n_items - remaining, unit="img", desc=f"preparing {listing.source}",
               disable=not progress or n_items < 200, mininterval=0.5 if sys.stderr.isatty() else 30, dynamic_ncols=True)
    if done and todo:
        tqdm.write(f"{out}: {len(done)} of {n_shards} shards were already prepared; continuing", file=sys.stderr)
    pool = None
    try:
        if workers > 1 and remaining >= POOL_FROM:
            pool = multiprocessing.get_context("fork").Pool(workers, initializer=_ignore_sigint)
            results = pool.imap(_decode_task, [(listing.decode, listing.items[a:b], size, channels)
                                               for _, a, b in tasks])
        else:
            results = (_decode_task((listing.decode, listing.items[a:b], size, channels)) for _, a, b in tasks)
        parts: list = []
        for (k, a, b), result in zip(tasks, results):
            parts.append((a, result))
            bar.update(b - a)
            if b == end(k):  # the shard's last chunk
                _write_shard(out, k, parts)
                parts = []
    except KeyboardInterrupt:
        if pool is not None:
            pool.terminate()
        bar.close()
        finished = sum(_shard_complete(out, k) for k in range(n_shards))
        print(f"\ninterrupted: {finished} of {n_shards} shards of {out} are prepared; run the same command again "
              "to continue", file=sys.stderr)
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    bar.close()
    return _write_manifest(listing, out, plan, n_shards)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool


def _decode_task(task):
    decode, items, size, channels = task
    return decode(items, size, channels)


def _write_shard(out: Path, k: int, parts: list) -> None:
    """Join a shard's decoded chunks and write it, then its JSON (the mark that it is complete)."""
    images = np.concatenate([images for _, (images, _, _) in parts])
    kept = np.concatenate([start + np.asarray(positions, dtype=np.int64) for start, (_, positions, _) in parts])
    skipped = [s for _, (_, _, skips) in parts for s in skips]
    path = out / f"{_shard_name(k)}.npy"
    tmp = unique_tmp(path)
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array(f, np.ascontiguousarray(images))
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    record = {"count": len(images), "sha256": digest, "kept": kept.tolist(), "skipped": skipped}
    write_atomic(out / f"{_shard_name(k)}.json", json.dumps(record).encode())


def _shard_complete(out: Path, k: int) -> bool:
    record, shard = out / f"{_shard_name(k)}.json", out / f"{_shard_name(k)}.npy"
    if not (record.is_file() and shard.is_file()):
        return False
    try:
        return json.loads(record.read_text())["count"] >= 0
    except (ValueError, KeyError, TypeError):
        return False


def _write_manifest(listing: Listing, out: Path, plan: dict, n_shards: int) -> Path:
    shards, kept, skipped = [], [], list(listing.skipped)
    for k in range(n_shards):
        record = _read_json(out / f"{_shard_name(k)}.json")
        if record["count"]:
            shards.append({"file": f"{_shard_name(k)}.npy", "count": record["count"], "sha256": record["sha256"]})
        kept += record["kept"]
        skipped += record["skipped"]
    for k in range(n_shards):
        if not any(s["file"] == f"{_shard_name(k)}.npy" for s in shards):
            (out / f"{_shard_name(k)}.npy").unlink(missing_ok=True)  # every image of it was skipped
    if not kept:
        raise GanforgeError(f"{listing.source}: none of the {len(listing.items) + len(listing.skipped)} image "
                            f"file(s) could be decoded" + (f"; e.g. {skipped[0]}" if skipped else ""))
    kept = np.asarray(kept, dtype=np.int64)
    extras = {}
    if listing.labels is not None:
        extras["labels"] = _save_array(out / "labels.npy", listing.labels[kept].astype(np.int64))
    if listing.attributes is not None:
        extras["attributes"] = _save_array(out / "attributes.npy", listing.attributes[kept].astype(bool))
    if listing.captions is not None:
        blob = json.dumps([listing.captions[i] for i in kept.tolist()]).encode()
        write_atomic(out / "captions.json", blob)
        extras["captions"] = {"file": "captions.json", "sha256": hashlib.sha256(blob).hexdigest()}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "ganforge_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": plan["source"], "image_size": plan["image_size"], "channels": plan["channels"],
        "fingerprint": plan["fingerprint"], "count": len(kept),
        "shape": [plan["channels"], plan["image_size"], plan["image_size"]], "shards": shards,
        "classes": listing.classes, "attribute_names": listing.attribute_names, **extras,
        "skipped": {"count": len(skipped), "files": skipped},
    }
    path = out / "manifest.json"
    write_atomic(path, json.dumps(manifest, indent=1).encode())
    _write_stamps(out, manifest, {})  # the hashes were computed as the files were written: no need to read them again
    for k in range(n_shards):  # the manifest holds what the shard records held
        (out / f"{_shard_name(k)}.json").unlink(missing_ok=True)
    return path


def _save_array(path: Path, array: np.ndarray) -> dict:
    tmp = unique_tmp(path)
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array(f, np.ascontiguousarray(array))
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": path.name, "sha256": digest}


# ---- reading ---------------------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise GanforgeError(f"{path}: cannot read ({e.strerror or e})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise GanforgeError(f"{path}: damaged, not valid JSON ({type(e).__name__}); prepare the data set "
                            "again") from None
    if not isinstance(value, dict):
        raise GanforgeError(f"{path}: damaged, not a JSON object; prepare the data set again")
    return value


def read_manifest(folder: Path) -> dict:
    """A prepared set's manifest, its structure checked; a GanforgeError names what is wrong."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        hint = " (its preparation has not finished: run `ganforge prepare` again)" if (
            Path(folder) / "plan.json").is_file() else ""
        raise GanforgeError(f"prepared:{folder}: no manifest.json{hint}; make one with `ganforge prepare SOURCE "
                            f"--out {folder}`")
    manifest = _read_json(path)
    try:
        assert manifest["format"] == FORMAT
        if manifest["format_version"] > FORMAT_VERSION:
            raise GanforgeError(f"{path}: format version {manifest['format_version']} is newer than this ganforge "
                                f"reads ({FORMAT_VERSION}); upgrade ganforge")
        c, h, w = manifest["shape"]
        assert c in (1, 3) and h == w == manifest["image_size"] and manifest["count"] > 0
        assert sum(s["count"] for s in manifest["shards"]) == manifest["count"]
        assert all(isinstance(s["file"], str) and "/" not in s["file"] and len(s["sha256"]) == 64
                   for s in manifest["shards"])
    except (KeyError, TypeError, ValueError, AssertionError):
        raise GanforgeError(f"{path}: damaged or not a ganforge manifest; prepare the data set again") from None
    return manifest


def manifest_sha256(folder: Path) -> str:
    return sha256_file(Path(folder) / "manifest.json")


def verify(folder: Path, manifest: dict) -> None:
    """Check every shard's size, and its SHA-256 unless it was verified before and has not changed since
    (its size and modification time are stamped in .verified.json). Raises a GanforgeError naming a damaged file."""
    folder = Path(folder)
    try:
        stamps = json.loads((folder / ".verified.json").read_text())
    except (OSError, ValueError):
        stamps = {}
    _write_stamps(folder, manifest, stamps, check=True)


def _write_stamps(folder: Path, manifest: dict, stamps: dict, check: bool = False) -> None:
    """Stamp every file of the set with (SHA-256, size, modification time) in .verified.json; with `check`,
    first hash each file whose stamp differs and raise a GanforgeError naming one that is damaged or missing."""
    fresh = {}
    for entry in [*manifest["shards"], *(manifest[k] for k in ("labels", "attributes", "captions") if manifest.get(k))]:
        path = folder / entry["file"]
        try:
            st = path.stat()
        except OSError:
            raise GanforgeError(f"{path}: missing from the prepared data set; prepare it again") from None
        stamp = [entry["sha256"], st.st_size, st.st_mtime_ns]
        if check and stamps.get(entry["file"]) != stamp and sha256_file(path) != entry["sha256"]:
            raise GanforgeError(f"{path}: damaged (its SHA-256 does not match manifest.json); prepare the data "
                                "set again")
        fresh[entry["file"]] = stamp
    if fresh != stamps:
        with contextlib.suppress(OSError):  # a read-only set is verified again next time
            write_atomic(folder / ".verified.json", json.dumps(fresh).encode())


def load_prepared(folder: str | Path, image_size: int | None = None, channels: int | None = None) -> ImageData:
    """A prepared set as ImageData: memory-mapped images, with its labels, attributes and captions."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise GanforgeError(f"prepared:{folder}: no such folder")
    manifest = read_manifest(folder)
    c, size, _ = manifest["shape"]
    for asked, has, what in ((image_size, size, "image_size"), (channels, c, "channels")):
        if asked is not None and asked != has:
            raise GanforgeError(f"prepared:{folder} holds {c}-channel {size}x{size} images, not {what} {asked}; "
                                f"prepare it again with --image-size / --channels, into another --out")
    verify(folder, manifest)
    arrays = []
    for shard in manifest["shards"]:
        path = folder / shard["file"]
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise GanforgeError(f"{path}: damaged, not a readable shard ({e}); prepare the data set again") from None
        if hasattr(mmap, "MADV_RANDOM") and isinstance(getattr(array, "_mmap", None), mmap.mmap):
            # batches are gathered from random places: without this hint the kernel reads ahead megabytes
            # around every image (measured: 62x the bytes needed from a cold cache, with 8 MB read-ahead)
            array._mmap.madvise(mmap.MADV_RANDOM)
        if array.dtype != np.uint8 or array.shape != (shard["count"], c, size, size):
            raise GanforgeError(f"{path}: holds {array.dtype} {array.shape}, but manifest.json says uint8 "
                                f"{(shard['count'], c, size, size)}; prepare the data set again")
        arrays.append(array)

    def side(key):
        return np.load(folder / manifest[key]["file"], allow_pickle=False) if manifest.get(key) else None

    labels, attributes = side("labels"), side("attributes")
    captions = json.loads((folder / "captions.json").read_text()) if manifest.get("captions") else None
    skipped = manifest["skipped"]["files"]
    return ImageData(ShardedImages(arrays), None if labels is None else torch.from_numpy(labels),
                     manifest["classes"], skipped=skipped,
                     attributes=None if attributes is None else torch.from_numpy(attributes),
                     attribute_names=manifest["attribute_names"], captions=captions,
                     fingerprint=manifest_sha256(folder))


def prepare_cached(listing: Listing, size: int, channels: int, progress: bool = True) -> ImageData:
    """A listing prepared into ganforge's cache (once; keyed by its fingerprint, size and channels) and loaded."""
    out = cached_folder(listing, size, channels)
    prepare(listing, out, size, channels, progress=progress)
    return load_prepared(out)


def cached_folder(listing: Listing, size: int, channels: int) -> Path:
    """Where a listing is prepared in ganforge's cache: named by its source, fingerprint, size and channels."""

    kind = listing.source.partition(":")[0]  # not the path as spelled: the fingerprint holds the resolved files
    key = hashlib.sha256(f"{kind}\0{listing.fingerprint}\0{size}\0{channels}".encode()).hexdigest()[:24]
    return cache_dir() / "prepared" / key
