"""LSUN scenes (bedrooms, churches, ...) in the LMDB databases they are distributed as.

`lsun:PATH` takes one database folder, such as `bedroom_train_lmdb/` (holding data.mdb), whose keys map
to encoded images (webp in the current release, jpeg in older ones); or a folder of several such
databases, each one class (named after its folder, `_lmdb` dropped), for a class-conditional GAN.
Images are decoded as folder.py does, resized so the short side is the model size and center-cropped,
as the DCGAN paper prepared LSUN, and prepared into ganforge's cache on first use (see prepared.py).
Reading needs the `lmdb` package: pip install 'ganforge[lsun]'.
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ganforge.data.folder import DECODER, _reason, decode, report_skipped
from ganforge.data.images import ImageData
from ganforge.data.prepared import Listing, prepare_cached
from ganforge.errors import GanforgeError

_ENVS: dict = {}  # (process id, database) -> an open read-only lmdb environment


def _lmdb():
    try:
        import lmdb
    except ImportError:
        raise GanforgeError("lsun:PATH reads LMDB databases with the lmdb package: pip install 'ganforge[lsun]'") from None
    return lmdb


def _open(db: str):
    key = (os.getpid(), db)  # an environment must not cross a fork: each decoding process opens its own
    if key not in _ENVS:
        _ENVS[key] = _lmdb().open(db, readonly=True, lock=False, readahead=False, meminit=False, max_readers=1)
    return _ENVS[key]


def find_databases(path: str) -> list[Path]:
    """PATH itself when it holds data.mdb, else the database folders directly inside it."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise GanforgeError(f"lsun:{path}: no such folder")
    if (root / "data.mdb").is_file():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / "data.mdb").is_file())
    if not found:
        raise GanforgeError(f"lsun:{path}: no LMDB database here (data.mdb); point at a database folder such as "
                            "bedroom_train_lmdb/, as LSUN distributes them, or at a folder of several")
    return found


def list_lsun(path: str) -> Listing:
    databases = find_databases(path)
    items, labels, h = [], [], hashlib.sha256(f"lsun {DECODER}".encode())
    for label, db in enumerate(databases):
        try:
            with _open(str(db)).begin() as txn:
                count = txn.stat()["entries"]
                keys = txn.cursor().iternext(keys=True, values=False)
                items += [(label, k) for k in tqdm(keys, total=count, desc=f"listing {db.name}", unit="key",
                                                    leave=False, disable=count < 100_000)]
        except _lmdb().Error as e:
            raise GanforgeError(f"lsun:{path}: cannot read the LMDB database {db} ({type(e).__name__}: {e})") from None
        labels += [label] * count
        st = (db / "data.mdb").stat()
        h.update(f"{db.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{count}\n".encode())
    if not items:
        raise GanforgeError(f"lsun:{path}: the database is empty")
    classes = [db.name.removesuffix("_lmdb") for db in databases]
    return Listing(f"lsun:{path}", items, partial(decode_lmdb, [str(db) for db in databases]), h.hexdigest(),
                   labels=np.array(labels, dtype=np.int64) if len(databases) > 1 else None,
                   classes=classes if len(databases) > 1 else None)


def decode_lmdb(databases: list[str], items: list[tuple[int, bytes]], size: int, channels: int):
    """A prepared set's `decode` for LMDB entries: (database index, key) -> the decoded image."""
    images = np.empty((len(items), channels, size, size), dtype=np.uint8)
    kept, skipped = [], []
    for i, (db, key) in enumerate(items):
        try:
            with _open(databases[db]).begin(buffers=False) as txn:
                value = txn.get(key)
            if value is None:
                raise ValueError("the key is listed but holds no value")
            images[len(kept)] = decode(bytes(value), size, channels)
        except Exception as e:  # noqa: BLE001 - as folder.decode_paths: skip the entry, never crash
            skipped.append(f"{databases[db]}:{key.decode('ascii', 'replace')} ({_reason(e)[:240]})")
            continue
        kept.append(i)
    return images[:len(kept)], kept, skipped


def load_lsun(path: str, size: int = 64, channels: int = 3) -> ImageData:
    listing = list_lsun(path)
    data = prepare_cached(listing, size, channels)
    report_skipped(f"lsun:{path}", data.skipped, f"{len(listing.items)} entries that could not be decoded")
    return data
