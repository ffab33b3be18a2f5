"""Any folder of images, prepared once into ganforge's cache (see prepared.py).

Images are found recursively, converted to RGB or grayscale, resized so the short side is the
model size and center-cropped. Files that cannot be decoded are skipped and reported. The decoded
images are prepared on disk (keyed by every file's path, size and modification time, and the size and
channels asked for), so a second run does not decode again; training reads them by memory map.
"""

from __future__ import annotations

import hashlib
import io
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ganforge.data.images import ImageData
from ganforge.data.prepared import Listing, prepare_cached
from ganforge.errors import GanforgeError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
# the version of decode(), part of every fingerprint: a change in decoding prepares the files again
# (v2: 16-bit images scaled, not clipped; v3: JPEG draft decoding, EXIF orientation)
DECODER = "v3"
REPORT_FIRST = 5


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


# What decode raises for a file it cannot use; decode_files turns any of them into a skip report.
DECODE_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


def decode(path: Path | bytes, size: int, channels: int) -> np.ndarray:
    """One file (or its bytes) -> uint8 (channels, size, size). Raises one of DECODE_ERRORS on anything it cannot use:
    OSError for a file that cannot be read or is not an image Pillow knows (PIL.UnidentifiedImageError) or is
    truncated; DecompressionBombError for one over Pillow's pixel limit (PIL.Image.MAX_IMAGE_PIXELS; its
    warning threshold counts as over); ValueError for an empty file or anything else Pillow's decoders raise."""
    try:
        if (len(path) if isinstance(path, bytes) else path.stat().st_size) == 0:
            raise ValueError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # too large: skip, never hang
            with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as img:
                # a JPEG photo decodes at 1/2, 1/4 or 1/8 scale while that still leaves twice the size needed: 
                # several times faster for camera photos (no-op for other formats)
                img.draft(img.mode, (2 * size, 2 * size))
                img.load()
                img = _to_8bit(ImageOps.exif_transpose(img), channels)  # upright, as a photo viewer shows it
    except Image.DecompressionBombWarning as e:
        raise Image.DecompressionBombError(str(e)) from None
    except DECODE_ERRORS:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow's decoders also raise SyntaxError, EOFError, struct.error...
        raise ValueError(f"cannot decode ({type(e).__name__}: {e})") from None
    width, height = img.size
    short = min(width, height)
    if max(width, height) > 2 * short:  # a long thin strip: resizing all of it could take minutes and gigabytes
        img = TF.center_crop(img, [min(height, 2 * short), min(width, 2 * short)])
    img = TF.center_crop(TF.resize(img, size, interpolation=InterpolationMode.BICUBIC, antialias=True), size)
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _to_8bit(img: Image.Image, channels: int) -> Image.Image:
    """Any mode -> RGB or L: transparency onto white, 16-bit gray scaled (Pillow's convert would clip it)."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")  # transparent pixels onto white, as a viewer shows them
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    elif img.mode.startswith("I"):  # I;16, I;16B, I (16-bit PNGs): 0..65535 -> 0..255
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    return img.convert("RGB" if channels == 3 else "L")  # also palette, CMYK, 1-bit, YCbCr


def _reason(e: Exception) -> str:
    """Why a file was skipped, in words."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can read (unknown format, or not an image at all)"
    if isinstance(e, PermissionError):
        return "cannot be read (permission denied)"
    if isinstance(e, Image.DecompressionBombError):
        return f"too large: {e}"
    return f"{type(e).__name__}: {e}"


def fingerprint_files(files: list[Path], *extra) -> str:
    """A hash of every file's path, size and modification time (and of `extra`): it changes when any file does."""
    h = hashlib.sha256(repr(extra).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def list_folder(path: str, labels: bool = False) -> Listing:
    """Every image file below PATH (sorted), with class labels from the first subfolder with `labels`."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise GanforgeError(f"folder:{path}: no such folder")
    files = list_images(root)
    if not files:
        raise GanforgeError(f"folder:{path}: no images found (looked recursively for {', '.join(sorted(EXTENSIONS))})")
    classes = label_ids = None
    if labels:
        top = [p.relative_to(root).parts for p in files]
        loose = [str(files[i]) for i, parts in enumerate(top) if len(parts) == 1]
        if loose:
            raise GanforgeError(f"folder:{path}: labels come from subfolders, but {len(loose)} image(s) lie "
                                f"directly in the folder (e.g. {loose[0]}); move them into a class subfolder")
        classes = sorted({parts[0] for parts in top})
        label_ids = np.array([classes.index(parts[0]) for parts in top], dtype=np.int64)
    return Listing(f"folder:{path}", [str(p) for p in files], decode_paths, fingerprint_files(files, DECODER, labels),
                   labels=label_ids, classes=classes)


def load_folder(path: str, size: int = 64, channels: int = 3, labels: bool = False) -> ImageData:
    listing = list_folder(path, labels)
    data = prepare_cached(listing, size, channels)
    report_skipped(f"folder:{path}", data.skipped, f"{len(listing.items)} file(s) that could not be decoded")
    return data


def decode_paths(items: list[str], size: int, channels: int) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode files -> (uint8 images (K, C, size, size), positions in items of the K decoded, skipped files with
    the reason). A prepared set's `decode` for files."""
    images = np.empty((len(items), channels, size, size), dtype=np.uint8)
    kept, skipped = [], []
    for i, p in enumerate(items):
        try:
            images[len(kept)] = decode(Path(p), size, channels)
        except Exception as e:  # noqa: BLE001 - DECODE_ERRORS, and whatever else: skip the file, never crash
            skipped.append(f"{p} ({_reason(e)[:240]})")
            continue
        kept.append(i)
    return images[:len(kept)], kept, skipped


def report_skipped(source: str, skipped: list[str], what: str) -> None:
    """Name the first few files that were skipped, on stderr."""
    if skipped:
        shown = "\n".join(f"  {p}" for p in skipped[:REPORT_FIRST])
        more = f"\n  ... and {len(skipped) - REPORT_FIRST} more" if len(skipped) > REPORT_FIRST else ""
        print(f"{source}: skipped {len(skipped)} of {what}:\n{shown}{more}", file=sys.stderr)
