"""Any folder of images, decoded once into a uint8 cache.

Images are found recursively, converted to RGB or grayscale, resized so the short side is the
model size and center-cropped. Files that cannot be decoded are skipped and reported. The decoded
array is cached on disk (keyed by every file's path, size and modification time, and the size and
channels asked for), so a second run does not decode again; within a run, epochs index the array.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from tqdm import tqdm

from ganforge.data import ImageData, cache_dir
from ganforge.errors import GanforgeError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
REPORT_FIRST = 5


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


def decode(path: Path, size: int, channels: int) -> np.ndarray:
    """One file -> uint8 (channels, size, size). Raises on anything Pillow cannot decode."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # too large: skip, never hang
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")  # transparent pixels onto white, as a viewer shows them
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            img = img.convert("RGB" if channels == 3 else "L")  # also palette, CMYK, 16-bit
    img = TF.center_crop(TF.resize(img, size, interpolation=InterpolationMode.BICUBIC, antialias=True), size)
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _cache_key(files: list[Path], size: int, channels: int, labels: bool) -> str:
    h = hashlib.sha256(f"v1 {size} {channels} {labels}".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_folder(path: str, size: int = 64, channels: int = 3, labels: bool = False) -> ImageData:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise GanforgeError(f"folder:{path}: no such folder")
    files = list_images(root)
    if not files:
        raise GanforgeError(f"folder:{path}: no images found (looked recursively for {', '.join(sorted(EXTENSIONS))})")
    classes = None
    if labels:
        top = [p.relative_to(root).parts for p in files]
        loose = [str(files[i]) for i, parts in enumerate(top) if len(parts) == 1]
        if loose:
            raise GanforgeError(f"folder:{path}: labels come from subfolders, but {len(loose)} image(s) lie "
                                f"directly in the folder (e.g. {loose[0]}); move them into a class subfolder")
        classes = sorted({parts[0] for parts in top})

    cache = cache_dir() / "folders" / f"{_cache_key(files, size, channels, labels)}.npz"
    if cache.is_file():
        with np.load(cache) as npz:
            images, label_ids, skipped = npz["images"], npz["labels"], list(npz["skipped"])
    else:
        images, label_ids, skipped = _decode_all(root, files, size, channels, classes)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, labels=label_ids, skipped=np.array(skipped, dtype=str))
        tmp.replace(cache)
    report_skipped(f"folder:{path}", skipped, f"{len(files)} file(s) that could not be decoded")
    if len(images) == 0:
        raise GanforgeError(f"folder:{path}: none of the {len(files)} image file(s) could be decoded")
    return ImageData(torch.from_numpy(images), torch.from_numpy(label_ids) if labels else None, classes,
                     skipped=[str(p) for p in skipped])


def decode_files(files: list[Path], size: int, channels: int, desc: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode files -> (uint8 images (K, C, size, size), indices into files of the K decoded, skipped files)."""
    images = np.empty((len(files), channels, size, size), dtype=np.uint8)
    kept, skipped = [], []
    for i, p in enumerate(tqdm(files, desc=desc, unit="img", leave=False, disable=len(files) < 200)):
        try:
            images[len(kept)] = decode(p, size, channels)
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken files
            skipped.append(f"{p} ({type(e).__name__}: {e})"[:300])
            continue
        kept.append(i)
    return images[:len(kept)].copy(), np.array(kept, dtype=np.int64), skipped


def report_skipped(source: str, skipped: list[str], what: str) -> None:
    """Name the first few files that were skipped, on stderr."""
    if skipped:
        shown = "\n".join(f"  {p}" for p in skipped[:REPORT_FIRST])
        more = f"\n  ... and {len(skipped) - REPORT_FIRST} more" if len(skipped) > REPORT_FIRST else ""
        print(f"{source}: skipped {len(skipped)} of {what}:\n{shown}{more}", file=sys.stderr)


def _decode_all(root: Path, files: list[Path], size: int, channels: int, classes: list[str] | None):
    images, kept, skipped = decode_files(files, size, channels, f"decoding {root.name}")
    label_ids = np.zeros(len(kept), dtype=np.int64)
    if classes is not None:
        label_ids[:] = [classes.index(files[i].relative_to(root).parts[0]) for i in kept]
    return images, label_ids, skipped
