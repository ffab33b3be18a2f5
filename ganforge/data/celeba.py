"""CelebA in torchvision's layout: PATH/celeba/list_attr_celeba.txt and PATH/celeba/img_align_celeba/*.jpg.

PATH may also be the celeba folder itself. The attribute file's first line is the image count, the
second the 40 attribute names, then a line per image: its file name and a value of -1 or 1 per
attribute. Images are decoded as folder.py does (short side resized, center-cropped) and prepared;
listed images that are missing or cannot be decoded are skipped and reported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ganforge.data.folder import DECODER, decode_paths, fingerprint_files, report_skipped
from ganforge.data.images import ImageData
from ganforge.data.prepared import Listing, prepare_cached
from ganforge.errors import GanforgeError
from ganforge.io import sha256_file

ATTRIBUTE_FILE = "list_attr_celeba.txt"
IMAGE_FOLDER = "img_align_celeba"


def find_root(path: str) -> Path:
    """The celeba folder: PATH/celeba if it holds the attribute file, else PATH itself."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise GanforgeError(f"celeba:{path}: no such folder")
    for folder in (root / "celeba", root):
        if (folder / ATTRIBUTE_FILE).is_file():
            return folder
    raise GanforgeError(f"celeba:{path}: no {ATTRIBUTE_FILE}; put CelebA's attribute file at "
                        f"{root / 'celeba' / ATTRIBUTE_FILE} and its aligned images in "
                        f"{root / 'celeba' / IMAGE_FOLDER}/ (torchvision's CelebA layout)")


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """list_attr_celeba.txt -> (attribute names, file names, bool (N, A) values)."""
    lines = path.read_text().splitlines()

    def malformed(number: int, why: str) -> GanforgeError:
        return GanforgeError(f"{path}, line {number}: {why} (CelebA's format: the image count, the attribute "
                             f"names, then a line per image: its file name and -1 or 1 per attribute)")

    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise malformed(1, "the first line is not the image count")
    names = lines[1].split()
    if not names:
        raise malformed(2, "no attribute names")
    files, values = [], []
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1 or not set(parts[1:]) <= {"-1", "1"}:
            got = line.strip() if len(line) < 200 else line.strip()[:200] + "..."
            raise malformed(number, f"expected a file name and {len(names)} values of -1 or 1, got {got!r}")
        files.append(parts[0])
        values.append([v == "1" for v in parts[1:]])
    if len(files) != int(lines[0]):
        raise GanforgeError(f"{path}: line 1 says {int(lines[0])} images, but {len(files)} are listed; "
                            f"is the file complete?")
    return names, files, np.array(values, dtype=bool).reshape(len(files), len(names))


def list_celeba(path: str) -> Listing:
    root = find_root(path)
    names, listed, values = read_attributes(root / ATTRIBUTE_FILE)
    files = [root / IMAGE_FOLDER / name for name in listed]
    present = [i for i, p in enumerate(files) if p.is_file()]
    if not present:
        raise GanforgeError(f"celeba:{path}: none of the {len(files)} images listed in {ATTRIBUTE_FILE} are in "
                            f"{root / IMAGE_FOLDER}")
    missing = [f"{files[i]} (missing)" for i in sorted(set(range(len(files))) - set(present))]
    return Listing(f"celeba:{path}", [str(files[i]) for i in present], decode_paths,
                   fingerprint_files([files[i] for i in present], DECODER, sha256_file(root / ATTRIBUTE_FILE)),
                   attributes=values[present], attribute_names=names, skipped=missing)


def load_celeba(path: str, size: int = 64, channels: int = 3) -> ImageData:
    listing = list_celeba(path)
    data = prepare_cached(listing, size, channels)
    report_skipped(f"celeba:{path}", data.skipped, f"{len(listing.items) + len(listing.skipped)} listed image(s) "
                   "that are missing or could not be decoded")
    return data
