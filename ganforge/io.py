"""The files ganforge writes: atomic writes, its cache folder, and records of tensors.

A *record* is a pair `NAME.safetensors` + `NAME.json`. The tensors are written first, then the JSON
object that describes them and vouches for them with their SHA-256: a JSON file on disk therefore
always describes a complete tensors file, and a crash leaves the previous pair intact. Checkpoints,
classifiers, the self-supervised extractor and the caches of features, faces and text embeddings are
all records; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ganforge.errors import GanforgeError


class DamagedRecord(GanforgeError):
    """A record whose files do not match (a checksum, JSON or safetensors that does not read): where ganforge
    made the record itself (a cache, a network it trained), it makes it again."""


def cache_dir() -> Path:
    """ganforge's cache folder: $GANFORGE_CACHE, else $XDG_CACHE_HOME/ganforge, else ~/.cache/ganforge."""
    if os.environ.get("GANFORGE_CACHE"):
        return Path(os.environ["GANFORGE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ganforge"


def unique_tmp(path: Path) -> Path:
    """A temp name beside `path` that no other process or thread writing the same file uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes so that `path` holds either its old content or all of the new one (a unique temp
    file, fsync, rename: two processes writing the same file leave one whole version)."""
    tmp = unique_tmp(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_record(path: Path, tensors: dict[str, torch.Tensor], meta: dict, json_path: Path | None = None) -> dict:
    """Write `path` (.safetensors), then its JSON beside it (`json_path`, by default the same name .json): `meta`
    plus the tensors file's name and SHA-256 under "tensors" and "sha256". Returns the JSON object written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    write_atomic(path, blob)
    record = {**meta, "tensors": path.name, "sha256": hashlib.sha256(blob).hexdigest()}
    write_atomic(json_path or path.with_suffix(".json"), json.dumps(record, indent=1).encode())
    return record


def read_json(path: Path, what: str, what_to_do: str) -> dict:
    """The JSON object of a record (a `what`: "checkpoint", "record"); a DamagedRecord that names the file and
    says what to do when it does not read as one."""
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DamagedRecord(f"{path}: damaged, not a valid {what} JSON ({type(e).__name__}: {e})"[:400]
                            + f"; {what_to_do}") from None
    except OSError as e:
        raise GanforgeError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(meta, dict):
        raise DamagedRecord(f"{path}: damaged, not a {what} (a JSON {type(meta).__name__}, not an object); "
                            f"{what_to_do}")
    return meta


def read_tensors(path: Path, sha256: str, record: str, what_to_do: str) -> dict[str, torch.Tensor]:
    """A safetensors file whose SHA-256 must be `sha256` (as written in the file named `record`); a
    DamagedRecord that says what to do otherwise."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DamagedRecord(f"{path}: missing, although {record} names it; {what_to_do}") from None
    if hashlib.sha256(blob).hexdigest() != str(sha256).lower():
        raise DamagedRecord(f"{path}: damaged, its content does not match the checksum in {record}; {what_to_do}")
    try:
        return load_tensors(blob)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError, and others
        raise DamagedRecord(f"{path}: damaged, not a safetensors file ({type(e).__name__}: {e})"[:400]) from None


def load_record(path: Path, what_to_do: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """-> (the JSON object, the tensors) of the record whose tensors file is `path` (.safetensors) or whose
    JSON is `path` (.json), after checking the checksum. A missing record is a GanforgeError; a damaged one
    a DamagedRecord; both say `what_to_do`."""
    json_path = path.with_suffix(".json")
    if not json_path.is_file():
        raise GanforgeError(f"{json_path}: no such file; {what_to_do}")
    meta = read_json(json_path, "record", what_to_do)
    if not isinstance(meta.get("sha256"), str):
        raise DamagedRecord(f"{json_path}: damaged, it holds no checksum; {what_to_do}")
    return meta, read_tensors(json_path.with_suffix(".safetensors"), meta["sha256"], json_path.name, what_to_do)


def read_cache(path: Path, again: str, check=None) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """A record that ganforge wrote itself as a cache: (meta, tensors), or None when it is missing, or
    damaged (said on stderr, with `again`: what is done instead, e.g. "computing the features again").
    `check(meta, tensors)` may raise ValueError (or KeyError) for content that does not fit."""
    if not path.with_suffix(".json").is_file():
        return None
    try:
        meta, tensors = load_record(path, again)
        if check is not None:
            check(meta, tensors)
        return meta, tensors
    except (GanforgeError, ValueError, KeyError) as e:
        print(f"{path}: damaged cache file ({e}); {again}", file=sys.stderr)
        return None


def load_or_train(name: str, cached: Path, load, train, train_if_missing: bool = True):
    """load() a network that ganforge trains itself and caches as a record at `cached`: trained first when
    missing, and again when load() finds the record damaged, each said on stderr (with train_if_missing)."""
    if train_if_missing and not (cached.is_file() and cached.with_suffix(".json").is_file()):
        print(f"{name}: not in the cache yet; training it now (once)", file=sys.stderr)
        train()
    try:
        return load()
    except DamagedRecord as e:
        if not train_if_missing:
            raise
        print(f"{name}: {e}; training it again now", file=sys.stderr)
        train()
        return load()


# --- modules' state in a record: prefixed names, and loading that says what does not fit
def pack_state(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in state.items()}


def unpack_state(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}


def load_module_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict with errors that name the tensor and say what was expected."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise GanforgeError(f"{what}: checkpoint does not fit the model (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    for name, tensor in sorted(state.items()):
        if tensor.shape != expected[name].shape:
            raise GanforgeError(f"{what}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                f"the model expects {tuple(expected[name].shape)}")
    module.load_state_dict(state)
