"""MNIST and Fashion-MNIST from their standard IDX files (gzipped or not)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from ganforge.data.images import ImageData
from ganforge.errors import GanforgeError
from ganforge.io import cache_dir

CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}
# where the Debian packages put the files (dataset-fashion-mnist)
SYSTEM_DIRS = {"mnist": ["/usr/share/datasets/mnist"], "fashion-mnist": ["/usr/share/datasets/fashion-mnist"]}
TORCHVISION_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
PREFIX = {"train": "train", "test": "t10k"}
_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file: magic (0, 0, dtype, ndim), big-endian int32 dims, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise GanforgeError(f"{path}: cannot read ({e}); is it a complete IDX file?") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise GanforgeError(f"{path}: not an IDX file of uint8 values")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise GanforgeError(f"{path}: header says {tuple(dims)} but holds {data.size} values; the file is truncated")
    return data.reshape(tuple(dims))


def candidate_dirs(name: str, data_dir: str | None) -> list[Path]:
    dirs = []
    if data_dir:
        dirs += [Path(data_dir), Path(data_dir) / TORCHVISION_NAMES[name] / "raw"]
    dirs.append(cache_dir() / "data" / TORCHVISION_NAMES[name] / "raw")  # where --download puts them
    return dirs + [Path(d) for d in SYSTEM_DIRS[name]]


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx(name: str, split: str = "train", data_dir: str | None = None, download: bool = False) -> ImageData:
    if split not in PREFIX:
        raise GanforgeError(f"unknown split {split!r}; choose train or test")
    stems = (f"{PREFIX[split]}-images-idx3-ubyte", f"{PREFIX[split]}-labels-idx1-ubyte")
    if download:
        _download(name, data_dir)
    searched = candidate_dirs(name, data_dir)
    for folder in searched:
        images_path, labels_path = (_find(folder, stem) for stem in stems)
        if images_path and labels_path:
            images, labels = read_idx(images_path), read_idx(labels_path)
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise GanforgeError(f"{folder}: images {images.shape} and labels {labels.shape} do not match")
            return ImageData(torch.from_numpy(images.copy())[:, None],
                             torch.from_numpy(labels.astype(np.int64)), CLASSES[name])
    looked = "\n".join(f"  {d}" for d in searched)
    debian = " or `apt-get install dataset-fashion-mnist`" if name == "fashion-mnist" else ""
    raise GanforgeError(
        f"{name}: no {stems[0]}[.gz] with {stems[1]}[.gz] found. Looked in:\n{looked}\n"
        f"Put the four IDX files in one of these folders (--data-dir DIR){debian}, "
        f"or pass --download to fetch them with torchvision (needs the network).")


def _download(name: str, data_dir: str | None) -> None:
    import torchvision

    root = Path(data_dir) if data_dir else cache_dir() / "data"
    dataset = getattr(torchvision.datasets, TORCHVISION_NAMES[name])
    try:
        for train in (True, False):
            dataset(root=str(root), train=train, download=True)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise GanforgeError(f"{name}: download failed ({e}). Put the IDX files in --data-dir instead.") from None
