"""Checkpoints: tensors in safetensors, everything else in JSON; written atomically.

A checkpoint is a pair `checkpoints/step-XXXXXXXX.safetensors` + `step-XXXXXXXX.json`. The
tensors file is written first (temp file, fsync, rename), then the JSON, which names the tensors
file and its SHA-256: a JSON file on disk therefore always describes a complete checkpoint, and a
crash leaves the previous one intact. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from ganforge import __version__
from ganforge.errors import GanforgeError

FORMAT = "ganforge-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"step-(\d{8,})\.json$")


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


def save_checkpoint(folder: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict, keep: int = 2) -> Path:
    """Write one checkpoint, then delete all but the newest `keep`. Returns the JSON path."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = save_tensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    stem = f"step-{step:08d}"
    write_atomic(folder / f"{stem}.safetensors", blob)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "ganforge_version": __version__,
            "step": step, "tensors": f"{stem}.safetensors", "sha256": hashlib.sha256(blob).hexdigest(), **meta}
    path = folder / f"{stem}.json"
    write_atomic(path, json.dumps(meta, indent=1).encode())
    for old in list_checkpoints(folder)[:-keep]:
        old.with_suffix(".safetensors").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete-looking checkpoint JSON files in a folder, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def find_checkpoint(path: str | Path) -> Path:
    """A run folder, its checkpoints folder, or one checkpoint file -> that checkpoint's JSON path."""
    path = Path(path).expanduser()
    if path.suffix.lower() in (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"):
        raise GanforgeError(f"{path}: ganforge loads only its own safetensors + JSON checkpoints; it never "
                            "unpickles files, since a pickle can run arbitrary code when loaded")
    if path.is_dir():
        found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
        if not found:
            raise GanforgeError(f"{path}: no checkpoint found (expected checkpoints/step-*.json)")
        return found[-1]
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise GanforgeError(f"{path}: no such checkpoint")
    return path


def load_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """-> (meta, tensors), after checking the JSON's structure and the tensors file's hash."""
    json_path = find_checkpoint(path)
    try:
        meta = json.loads(json_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise GanforgeError(f"{json_path}: not a valid checkpoint JSON ({type(e).__name__}: {e})"[:400]) from None
    except OSError as e:
        raise GanforgeError(f"{json_path}: cannot read ({e.strerror or e})") from None
    check_meta(json_path, meta)
    tensors_path = json_path.parent / meta["tensors"]
    if not tensors_path.is_file():
        raise GanforgeError(f"{json_path}: its tensors file {meta['tensors']!r} is missing")
    return meta, read_tensors(tensors_path, meta["sha256"], json_path.name, "use an earlier checkpoint")


def read_tensors(path: Path, sha256: str, record: str, what_to_do: str) -> dict[str, torch.Tensor]:
    """A safetensors file whose SHA-256 must be `sha256` (as written in the file named `record`); a
    GanforgeError that calls it damaged, and says what to do, otherwise."""
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != sha256.lower():
        raise GanforgeError(f"{path}: damaged, its content does not match the checksum in {record}; {what_to_do}")
    try:
        return load_tensors(blob)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError, and others
        raise GanforgeError(f"{path}: damaged, not a safetensors file ({type(e).__name__}: {e})"[:400]) from None


def check_meta(json_path: Path, meta) -> None:
    """A checkpoint JSON's structure: raises a GanforgeError naming the first key that is missing or wrong."""
    from ganforge.config import MODELS

    if not isinstance(meta, dict):
        raise GanforgeError(f"{json_path}: not a ganforge checkpoint (a JSON {type(meta).__name__}, not an object)")
    if meta.get("format") != FORMAT:
        raise GanforgeError(f"{json_path}: not a ganforge checkpoint (\"format\" is {meta.get('format')!r}, "
                            f"expected {FORMAT!r})")
    version = meta.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise GanforgeError(f"{json_path}: checkpoint format {version!r} is not supported "
                            f"by this ganforge ({__version__}, format {FORMAT_VERSION})")

    def bad(key: str, expected: str) -> GanforgeError:
        value = repr(meta[key])[:80] if key in meta else "missing"
        return GanforgeError(f"{json_path}: \"{key}\" is {value}; expected {expected}")

    step = meta.get("step")
    if type(step) is not int or step < 0:
        raise bad("step", "a whole number >= 0")
    tensors = meta.get("tensors")
    if (not isinstance(tensors, str) or not tensors.endswith(".safetensors") or Path(tensors).name != tensors
            or "/" in tensors or "\\" in tensors or "\0" in tensors):
        raise bad("tensors", "the name of a .safetensors file beside the JSON (no folder in it)")
    if not isinstance(meta.get("sha256"), str) or not re.fullmatch(r"[0-9a-fA-F]{64}", meta["sha256"]):
        raise bad("sha256", "64 hexadecimal digits")
    spec = meta.get("model_spec")
    if not isinstance(spec, dict) or spec.get("model") not in MODELS:
        raise bad("model_spec", f"an object whose \"model\" is one of {', '.join(MODELS)}")
    if not isinstance(meta.get("config"), dict):
        raise bad("config", "an object (the run's configuration)")


def pack_state(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in state.items()}


def unpack_state(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
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


def optimizer_to_checkpoint(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state_dict into tensors and JSON (param groups, non-tensor values)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, values in sd["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}/{idx}/{key}"] = value
            else:
                scalars[f"{idx}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_checkpoint(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "/"):
            idx, name = key[len(prefix) + 1:].split("/", 1)
            param = params[int(idx)]
            if value.shape == param.shape:
                # in the parameter's memory layout (e.g. channels_last): fused optimizers walk
                # parameter and state memory side by side, so their layouts must agree
                value = torch.empty_like(param).copy_(value)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split("/", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def load_generator(path: str | Path, ema: bool = True) -> tuple[nn.Module, dict]:
    """Rebuild G from a checkpoint alone -> (G in eval mode, checkpoint meta). With `ema`, the
    exponential moving average of G's weights when the run kept one; otherwise the raw G."""
    from ganforge.config import TEXT_MODELS
    from ganforge.models import build_generator

    meta, tensors = load_checkpoint(path)
    if meta["model_spec"]["model"] in TEXT_MODELS:
        raise GanforgeError(f"{path}: a text-to-image checkpoint; draw from it with: ganforge t2i {path} \"a caption\"")
    try:
        G = build_generator(meta["model_spec"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a field missing, of the wrong type or range
        raise GanforgeError(f"{path}: checkpoint has no usable model_spec ({type(e).__name__}: {e})"[:400]) from None
    which = "G_ema" if ema and any(k.startswith("G_ema/") for k in tensors) else "G"
    load_module_state(G, unpack_state(which, tensors), which)
    meta["generator"] = which
    return G.eval(), meta
