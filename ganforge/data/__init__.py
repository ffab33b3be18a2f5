"""Image sources. Each gives uint8 images (N, C, H, W) plus optional integer labels, boolean attributes or
captions (text describing each image, for text-to-image models), as an ImageData (images.py).

`load_data(spec)` picks the source named by `spec` (a config's `data`), brings the images to the model's
size and channel count once, and returns its ImageData; `to_float` turns a batch into floats in [-1, 1].
`prepare_source(spec)` is `ganforge prepare`: any source decoded once into a prepared set (prepared.py).
Each source is one module here; this one picks among them, and prepared.py knows none of them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ganforge.data.images import ImageData, fit, to_float, to_uint8
from ganforge.data.prepared import Listing, cached_folder, prepare
from ganforge.errors import GanforgeError

__all__ = ["ImageData", "fit", "list_source", "load_data", "prepare_source", "to_float", "to_uint8"]


def load_data(spec: str, image_size: int | None = None, channels: int | None = None, *,
              data_dir: str | None = None, download: bool = False, folder_labels: bool = False,
              split: str = "train") -> ImageData:
    """Load a source by name: digits, mnist, fashion-mnist, faces, folder:PATH, celeba:PATH, lsun:PATH (an LMDB
    folder) or prepared:DIR (see prepared.py), or a captioned one for text-to-image models: captions:PATH (see
    captions.py), faces-captions or fashion-mnist-captions. folder:, celeba:, lsun: and captions: are prepared
    into ganforge's cache on first use and read by memory map; the built-in sets are small and held in memory.
    """
    if spec == "digits":
        from ganforge.data.digits import load_digits
        data = load_digits()
    elif spec in ("mnist", "fashion-mnist"):
        from ganforge.data.idx import load_idx
        data = load_idx(spec, split=split, data_dir=data_dir, download=download)
    elif spec == "faces":
        from ganforge.data.faces import load_faces
        data = load_faces()
    elif spec == "faces-captions":
        from ganforge.data.captions import load_faces_captions
        data = load_faces_captions(split=split)
    elif spec == "fashion-mnist-captions":
        from ganforge.data.captions import load_fashion_captions
        data = load_fashion_captions(split=split, data_dir=data_dir, download=download)
    elif spec.startswith("folder:"):
        from ganforge.data.folder import load_folder
        return load_folder(spec.removeprefix("folder:"), size=image_size or 64, channels=channels or 3,
                           labels=folder_labels)
    elif spec.startswith("celeba:"):
        from ganforge.data.celeba import load_celeba
        return load_celeba(spec.removeprefix("celeba:"), size=image_size or 64, channels=channels or 3)
    elif spec.startswith("prepared:"):
        from ganforge.data.prepared import load_prepared
        return load_prepared(spec.removeprefix("prepared:"), image_size, channels)
    elif spec.startswith("lsun:"):
        from ganforge.data.lsun import load_lsun
        return load_lsun(spec.removeprefix("lsun:"), size=image_size or 64, channels=channels or 3)
    elif spec.startswith("captions:"):
        from ganforge.data.captions import load_captions
        return load_captions(spec.removeprefix("captions:"), size=image_size or 64, channels=channels or 3,
                             split=split)
    else:
        raise GanforgeError(f"unknown data {spec!r}; choose digits, mnist, fashion-mnist, faces, folder:PATH, "
                            f"celeba:PATH, lsun:PATH, prepared:DIR, or with captions: captions:PATH, faces-captions "
                            f"or fashion-mnist-captions")
    size = image_size or data.images.shape[-1]
    data.images = fit(data.images, size, channels or data.images.shape[1])
    return data


def list_source(spec: str, folder_labels: bool = False, split: str = "train", data_dir: str | None = None,
                download: bool = False, image_size: int | None = None, channels: int | None = None) -> Listing:
    """Any source's Listing. Files and databases are listed without decoding; a built-in set (digits,
    fashion-mnist, faces, ...) is loaded at the size asked for and listed from memory."""
    kind, _, path = spec.partition(":")
    if kind == "folder":
        from ganforge.data.folder import list_folder
        return list_folder(path, folder_labels)
    if kind == "celeba":
        from ganforge.data.celeba import list_celeba
        return list_celeba(path)
    if kind == "lsun":
        from ganforge.data.lsun import list_lsun
        return list_lsun(path)
    if kind == "captions":
        from ganforge.data.captions import list_captions
        return list_captions(path, split)
    if kind == "prepared":
        raise GanforgeError(f"{spec} is prepared already")
    data = load_data(spec, image_size, channels, data_dir=data_dir, download=download, split=split)
    images = data.images.numpy()
    return Listing(spec, list(range(len(data))), partial(_take, images), data.content_sha256(),
                   labels=None if data.labels is None else data.labels.numpy(), classes=data.classes,
                   attributes=None if data.attributes is None else data.attributes.numpy(),
                   attribute_names=data.attribute_names, captions=data.captions)


def _take(images: np.ndarray, items: list[int], size: int, channels: int):
    """A prepared set's `decode` for images already in memory (at the size asked for)."""
    return images[items], list(range(len(items))), []


def prepare_source(spec: str, out: str | Path | None = None, image_size: int | None = None,
                   channels: int | None = None, workers: int | None = None, progress: bool = True,
                   **options) -> Path:
    """`ganforge prepare`: list a source and prepare it into `out` (default: ganforge's cache, where folder:,
    celeba:, lsun: and captions: go on first use); returns the prepared folder."""
    listing = list_source(spec, image_size=image_size, channels=channels, **options)
    in_memory = isinstance(listing.decode, partial) and listing.decode.func is _take
    if in_memory:  # already at its size: the size and channels are the loaded images'
        first = listing.decode(listing.items[:1], 0, 0)[0]
        channels, image_size = first.shape[1], first.shape[-1]
    size, channels = image_size or 64, channels or 3
    if out is None:
        out = cached_folder(listing, size, channels)
    prepare(listing, Path(out), size, channels, workers=1 if in_memory else workers, progress=progress)
    return Path(out)
