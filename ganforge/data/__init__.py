"""Image sources. Each gives uint8 images (N, C, H, W) plus optional integer labels, boolean attributes or
captions (text describing each image, for text-to-image models), as an ImageData (images.py).

`load_data(spec)` asks the registry (sources.py) for the source named by `spec` (a config's `data`), brings
its images to the model's size and channel count once, and returns its ImageData; `to_float` turns a batch
into floats in [-1, 1]. `prepare_source(spec)` is `ganforge prepare`: any source decoded once into a prepared
set (prepared.py). Each source's reading is one module here; prepared.py knows none of them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ganforge.data.images import ImageData, fit, to_float, to_uint8
from ganforge.data.prepared import Listing, cached_folder, prepare
from ganforge.data.sources import SOURCES, DataOptions, Source, find_source

__all__ = ["SOURCES", "ImageData", "Source", "find_source", "fit", "list_source", "load_data", "prepare_source",
           "to_float", "to_uint8"]


def load_data(spec: str, image_size: int | None = None, channels: int | None = None, *,
              data_dir: str | None = None, download: bool = False, folder_labels: bool = False,
              split: str = "train") -> ImageData:
    """Load the source `spec` names (sources.py lists them: digits, faces, folder:PATH, prepared:DIR, ...) at
    `image_size` and `channels` (None: its own). The user's files are prepared into ganforge's cache on first
    use and read by memory map; the built-in sets are small and held in memory."""
    source, path = find_source(spec)
    return source.load(path, image_size, channels, DataOptions(data_dir, download, folder_labels, split))


def list_source(spec: str, folder_labels: bool = False, split: str = "train", data_dir: str | None = None,
                download: bool = False, image_size: int | None = None, channels: int | None = None) -> Listing:
    """Any source's Listing. Files and databases are listed without decoding; a built-in set (digits,
    fashion-mnist, faces, ...) is loaded at the size asked for and listed from memory."""
    source, path = find_source(spec)
    options = DataOptions(data_dir, download, folder_labels, split)
    listing = source.listing(path, options)
    if listing is not None:
        return listing
    data = source.load(path, image_size, channels, options)
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
