"""The data sources, registered: a config's `data` is a source's name (`digits`) or its name and a path
(`folder:~/photos`).

A source is a class registered in SOURCES (`@SOURCES.register("name", "what it is")`) that says how to load
its images, how to list them for `ganforge prepare` without decoding (where it can), the shape its images
come in, what they carry (class labels, attributes, captions), whether it has its own held-out files, and the
options its classifier loads it with. Validation, the command line's help, the native shape samples are compared at, the
classifier's split and the text models' check all ask the registry; nothing else names a source. A source
defined anywhere (a plug-in, a test) trains and evaluates like the built-in ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ganforge.data.images import ImageData, fit
from ganforge.data.prepared import Listing
from ganforge.errors import GanforgeError
from ganforge.registry import Registry


@dataclass(frozen=True)
class DataOptions:
    """What the command line can tell any source; each source reads the ones it needs."""

    data_dir: str | None = None  # where the IDX files are (mnist, fashion-mnist)
    download: bool = False  # fetch them with torchvision (mnist, fashion-mnist)
    folder_labels: bool = False  # class labels from subfolder names (folder:PATH)
    split: str = "train"  # "test": a source's held-out files (mnist, fashion-mnist, the captioned sets)


class Source:
    """A source of uint8 images (N, C, H, W) with optional labels, attributes or captions (an ImageData)."""

    name: str  # set by SOURCES.register
    takes_path = False  # spelt name:PATH (the user's own files)
    path_word = "PATH"  # how the help spells the path
    native = (28, 1)  # (size, channels) of its images: what a folder of samples is brought to when compared to it
    carries: frozenset[str] = frozenset()  # any of "labels", "attributes", "captions"
    held_out_files = False  # its classifier is checked on its own test files (split="test"), not a fixed 10%
    classify_with: ClassVar[dict] = {}  # the options its class-label classifier loads it with

    @classmethod
    def spelling(cls) -> str:
        return f"{cls.name}:{cls.path_word}" if cls.takes_path else cls.name

    @classmethod
    def native_shape(cls, path: str) -> tuple[int, int]:
        return cls.native

    @classmethod
    def load(cls, path: str, size: int | None, channels: int | None, options: DataOptions) -> ImageData:
        """Its images at `size` and `channels` (None: its own)."""
        data = cls.read(path, options)
        data.images = fit(data.images, size or data.images.shape[-1], channels or data.images.shape[1])
        return data

    @classmethod
    def read(cls, path: str, options: DataOptions) -> ImageData:
        """Its images as they come (a set small enough to hold in memory; `load` brings them to size)."""
        raise NotImplementedError

    @classmethod
    def listing(cls, path: str, options: DataOptions) -> Listing | None:
        """Its images listed without decoding, for `ganforge prepare`; None: loaded and listed from memory."""
        return None


SOURCES: Registry[type[Source]] = Registry("data source")


def source_problem(spec: str) -> str | None:
    """What is wrong with a config's `data` (None: it names a source)."""
    name, colon, path = spec.partition(":")
    if name not in SOURCES or SOURCES[name].takes_path != bool(colon):
        return f"unknown data; choose {spellings()}"
    source = SOURCES[name]
    if source.takes_path and not path.strip():
        return f"names no {source.path_word}; write {source.spelling()}"
    return None


def find_source(spec: str) -> tuple[type[Source], str]:
    """(the source, its path or "") that a config's `data` names; a clear error for anything else."""
    if why := source_problem(spec):
        raise GanforgeError(f"data {spec!r}: {why}")
    name, _, path = spec.partition(":")
    return SOURCES[name], path


def spellings(carrying: str | None = None) -> str:
    """'digits, mnist, ..., folder:PATH, ...': every source (or those that carry `carrying`), as given."""
    return ", ".join(SOURCES[n].spelling() for n in SOURCES if carrying is None or carrying in SOURCES[n].carries)


def sources_help() -> str:
    """'digits: ...; folder:PATH: ...' for the command line's help."""
    return "; ".join(f"{SOURCES[n].spelling()}: {SOURCES.description(n)}" for n in SOURCES)


# --- the built-in sets: small, drawn or read whole into memory

@SOURCES.register("digits", "10,000 MNIST digits bundled with ganforge, 28 px (the default)")
class Digits(Source):
    carries = frozenset({"labels"})

    @classmethod
    def read(cls, path, options):
        from ganforge.data.digits import load_digits
        return load_digits()


class _Idx(Source):
    """A set of IDX files, found in --data-dir or the system's dataset folders, or downloaded with --download."""
    carries = frozenset({"labels"})
    held_out_files = True

    @classmethod
    def read(cls, path, options):
        from ganforge.data.idx import load_idx
        return load_idx(cls.name, split=options.split, data_dir=options.data_dir, download=options.download)


@SOURCES.register("mnist", "MNIST's IDX files")
class Mnist(_Idx):
    pass


@SOURCES.register("fashion-mnist", "Fashion-MNIST's IDX files")
class FashionMnist(_Idx):
    pass


@SOURCES.register("faces", "procedural cartoon faces drawn here, 64 px colour, with 16 attributes")
class Faces(Source):
    native = (64, 3)
    carries = frozenset({"attributes"})

    @classmethod
    def read(cls, path, options):
        from ganforge.data.faces import load_faces
        return load_faces()


@SOURCES.register("faces-captions", "the procedural faces with captions written from their attributes")
class FacesCaptions(Source):
    native = (64, 3)
    carries = frozenset({"attributes", "captions"})

    @classmethod
    def read(cls, path, options):
        from ganforge.data.captions import load_faces_captions
        return load_faces_captions(split=options.split)


@SOURCES.register("fashion-mnist-captions", "Fashion-MNIST with captions written from its classes")
class FashionCaptions(_Idx):
    carries = frozenset({"labels", "captions"})
    held_out_files = False

    @classmethod
    def read(cls, path, options):
        from ganforge.data.captions import load_fashion_captions
        return load_fashion_captions(split=options.split, data_dir=options.data_dir, download=options.download)


# --- the user's own files: prepared into ganforge's cache on first use and read by memory map

class _Files(Source):
    takes_path = True
    native = (64, 3)

    @classmethod
    def load(cls, path, size, channels, options):
        return cls.load_files(path, size or 64, channels or 3, options)

    @classmethod
    def load_files(cls, path: str, size: int, channels: int, options: DataOptions) -> ImageData:
        raise NotImplementedError


@SOURCES.register("folder", "a folder of image files, searched recursively (subfolders as classes with "
                            "--folder-labels)")
class Folder(_Files):
    carries = frozenset({"labels"})
    classify_with: ClassVar[dict] = {"folder_labels": True}

    @classmethod
    def load_files(cls, path, size, channels, options):
        from ganforge.data.folder import load_folder
        return load_folder(path, size=size, channels=channels, labels=options.folder_labels)

    @classmethod
    def listing(cls, path, options):
        from ganforge.data.folder import list_folder
        return list_folder(path, options.folder_labels)


@SOURCES.register("celeba", "CelebA's img_align_celeba folder with list_attr_celeba.txt (40 attributes)")
class CelebA(_Files):
    carries = frozenset({"attributes"})

    @classmethod
    def load_files(cls, path, size, channels, options):
        from ganforge.data.celeba import load_celeba
        return load_celeba(path, size=size, channels=channels)

    @classmethod
    def listing(cls, path, options):
        from ganforge.data.celeba import list_celeba
        return list_celeba(path)


@SOURCES.register("lsun", "LSUN's LMDB folder (bedrooms, churches, ...), or a folder of them")
class Lsun(_Files):
    @classmethod
    def load_files(cls, path, size, channels, options):
        from ganforge.data.lsun import load_lsun
        return load_lsun(path, size=size, channels=channels)

    @classmethod
    def listing(cls, path, options):
        from ganforge.data.lsun import list_lsun
        return list_lsun(path)


@SOURCES.register("captions", "images with captions: a CUB/Oxford-style folder or a JSON-lines file "
                              "(see data/captions.py)")
class Captions(_Files):
    carries = frozenset({"captions"})

    @classmethod
    def load_files(cls, path, size, channels, options):
        from ganforge.data.captions import load_captions
        return load_captions(path, size=size, channels=channels, split=options.split)

    @classmethod
    def listing(cls, path, options):
        from ganforge.data.captions import list_captions
        return list_captions(path, options.split)


@SOURCES.register("prepared", "a set written by `ganforge prepare` (any size, read by memory map)")
class Prepared(Source):
    takes_path = True
    path_word = "DIR"
    carries = frozenset({"labels", "attributes", "captions"})  # whatever the set it was prepared from carried

    @classmethod
    def native_shape(cls, path):
        from ganforge.data.prepared import read_manifest
        channels, size, _ = read_manifest(Path(path).expanduser())["shape"]
        return size, channels

    @classmethod
    def load(cls, path, size, channels, options):
        from ganforge.data.prepared import load_prepared
        return load_prepared(path, size, channels)

    @classmethod
    def listing(cls, path, options):
        raise GanforgeError(f"prepared:{path} is prepared already")
