"""Training checkpoints: `checkpoints/step-XXXXXXXX.safetensors` + `step-XXXXXXXX.json`, records (io.py).

The JSON holds everything that is not a tensor: the format and its version, the step, the name and
SHA-256 of its tensors file, the model's constructor arguments (`model_spec`), the config, the
optimizers' settings, the RNG states and the counters; the safetensors file holds the networks, the
optimizers' moments and the RNG states that are tensors. `load_checkpoint` checks the JSON's structure
(naming the first key that is wrong) and the tensors' checksum before anything is built from them.
An exported model folder (export.py: `config.json` + `model.safetensors`, "format": "ganforge-model") is a
checkpoint that holds only what drawing needs; it loads the same way, and cannot be resumed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ganforge.errors import GanforgeError
from ganforge.io import read_json, read_tensors, save_record
from ganforge.version import __version__

FORMAT = "ganforge-checkpoint"
FORMAT_VERSION = 1
MODEL_FORMAT = "ganforge-model"  # an exported model folder's config.json
MODEL_FORMAT_VERSION = 1
MODEL_FILE = "config.json"
VERSIONS = {FORMAT: FORMAT_VERSION, MODEL_FORMAT: MODEL_FORMAT_VERSION}
_NAME = re.compile(r"step-(\d{8,})\.json$")


def save_checkpoint(folder: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict, keep: int = 2) -> Path:
    """Write one checkpoint, then delete all but the newest `keep`. Returns the JSON path."""
    stem = f"step-{step:08d}"
    save_record(folder / f"{stem}.safetensors", tensors,
                {"format": FORMAT, "format_version": FORMAT_VERSION, "ganforge_version": __version__, "step": step,
                 **meta})
    for old in list_checkpoints(folder)[:-keep]:
        old.with_suffix(".safetensors").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return folder / f"{stem}.json"


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete-looking checkpoint JSON files in a folder, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def is_model_folder(folder: str | Path) -> bool:
    """Whether a folder is an exported model folder: its config.json says "format": "ganforge-model". (A training
    run's config.json is its TrainConfig, which has no "format".)"""
    try:
        return json.loads((Path(folder) / MODEL_FILE).read_bytes()).get("format") == MODEL_FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):  # missing, not JSON, not an object
        return False


def home(checkpoint_json: Path) -> Path:
    """The folder a checkpoint belongs to: its run folder (for checkpoints/step-*.json), else the one it is in
    (a model folder's)."""
    return checkpoint_json.parent.parent if checkpoint_json.parent.name == "checkpoints" else checkpoint_json.parent


def find_checkpoint(path: str | Path) -> Path:
    """A run folder, its checkpoints folder, one checkpoint file, or an exported model folder (or its files)
    -> that checkpoint's JSON path."""
    path = Path(path).expanduser()
    if path.suffix.lower() in (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"):
        raise GanforgeError(f"{path}: ganforge loads only its own safetensors + JSON checkpoints; it never "
                            "unpickles files, since a pickle can run arbitrary code when loaded")
    if path.is_dir():
        found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
        if not found and is_model_folder(path):
            return path / MODEL_FILE
        if not found:
            raise GanforgeError(f"{path}: no checkpoint found (expected checkpoints/step-*.json)")
        return found[-1]
    if path.suffix == ".safetensors" and is_model_folder(path.parent):
        path = path.parent / MODEL_FILE
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise GanforgeError(f"{path}: no such checkpoint")
    return path


def load_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """-> (meta, tensors), after checking the JSON's structure and the tensors file's hash."""
    json_path = find_checkpoint(path)
    meta = read_json(json_path, "checkpoint", "use an earlier checkpoint")
    check_meta(json_path, meta)
    tensors_path = json_path.parent / meta["tensors"]
    if not tensors_path.is_file():
        raise GanforgeError(f"{json_path}: its tensors file {meta['tensors']!r} is missing")
    return meta, read_tensors(tensors_path, meta["sha256"], json_path.name, "use an earlier checkpoint")


def check_meta(json_path: Path, meta: dict) -> None:
    """A checkpoint JSON's structure: raises a GanforgeError naming the first key that is missing or wrong.
    (Whether its model is one this ganforge knows is checked where models are built: families/.)"""
    kind = meta.get("format")
    if not isinstance(kind, str) or kind not in VERSIONS:
        raise GanforgeError(f"{json_path}: not a ganforge checkpoint (\"format\" is {kind!r}, "
                            f"expected {FORMAT!r}, or {MODEL_FORMAT!r} for an exported model folder)")
    version = meta.get("format_version")
    if type(version) is not int or version != VERSIONS[kind]:
        raise GanforgeError(f"{json_path}: checkpoint format {version!r} is not supported "
                            f"by this ganforge ({__version__}, format {VERSIONS[kind]})")

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
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
        raise bad("model_spec", "an object whose \"model\" names the model")
    if not isinstance(meta.get("config"), dict):
        raise bad("config", "an object (the run's configuration)")


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
