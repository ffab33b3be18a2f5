"""Captioned images for text-to-image models (StackGAN and the like): each image has one or more captions.

Three sources:
- `load_captions(PATH)`: a folder with a captions.jsonl, or in StackGAN's CUB birds layout (see its docstring).
  Images are decoded as folder.py does (short side resized, center-cropped) and prepared; images that are
  missing, lack captions or cannot be decoded are skipped and reported.
- `load_faces_captions()`: the procedural faces of faces.py, with captions generated from their attributes.
  Faces with one of the attribute pairs in HELD_OUT_COMBOS are held out of the train split and make up the
  test split, to test whether a model can compose attributes it never saw together.
- `load_fashion_captions()`: Fashion-MNIST with captions generated from its class. Captions for training use
  FASHION_TEMPLATES; FASHION_HELD_OUT_TEMPLATES are paraphrases that never occur in training captions.
Generated captions are deterministic: those of image i come from a generator seeded with i.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from ganforge.data.folder import DECODER, decode_paths, fingerprint_files, report_skipped
from ganforge.data.images import ImageData
from ganforge.data.prepared import Listing, prepare_cached
from ganforge.errors import GanforgeError

CAPTIONS_FILE = "captions.jsonl"
CUB_EXTENSIONS = (".jpg", ".jpeg", ".png")
TEXT_FOLDERS = ("text", "text_c10")  # StackGAN calls the caption folder text_c10
MAX_CAPTION = 1000  # characters; longer captions are dropped
SPLITS = ("train", "test")
LAYOUTS = (f"either {CAPTIONS_FILE}, one JSON object per line such as "
           '{"image": "relative/path.png", "captions": ["a caption", "another"]}, '
           "or the StackGAN/CUB layout: images/CLASS/NAME.jpg with text/CLASS/NAME.txt (or text_c10/), one caption "
           "per line, and optional train/filenames.txt and test/filenames.txt (or filenames.pickle) listing CLASS/NAME")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_caption(text: str) -> str | None:
    """Control characters made spaces, whitespace stripped and collapsed; None when nothing is left, it is
    longer than MAX_CAPTION or it is not valid Unicode (a lone surrogate, which JSON's \\ud800 can give)."""
    text = " ".join(_CONTROL.sub(" ", text).split())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text if text and len(text) <= MAX_CAPTION else None


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, or a GanforgeError naming it."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise GanforgeError(f"{path}: cannot read ({e.strerror or e})") from None


def _read_text(path: Path) -> str:
    """A whole UTF-8 text file (a list of file names), or a GanforgeError naming it."""
    try:
        return _read_bytes(path).removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as e:
        raise GanforgeError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _text_lines(path: Path) -> tuple[list[tuple[int, str]], list[str]]:
    """A text file -> ((line number, line) for its UTF-8 lines, "PATH line N: not valid UTF-8" for the rest).
    A byte-order mark at its start is ignored."""
    good, bad = [], []
    for number, raw in enumerate(_read_bytes(path).removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        try:
            good.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            bad.append(f"{path} line {number}: not valid UTF-8 ({e.reason} at byte {e.start})")
    return good, bad


def load_captions(path: str, size: int = 64, channels: int = 3, split: str = "train") -> ImageData:
    """Captioned images from a folder, in one of two layouts.

    PATH/captions.jsonl: one JSON object per line, {"image": "relative/path.png", "captions": ["...", ...]}, the
    image path relative to PATH. Blank lines are ignored; bad lines (not JSON or UTF-8, a missing image, a path
    outside PATH, no usable caption) are skipped and reported with their line numbers. `split` is ignored: the
    file is one split; make a folder per split.

    Else StackGAN's CUB birds layout: PATH/images/CLASS/NAME.jpg (.jpeg, .png; also under
    PATH/CUB_200_2011/images/) with its captions, one per line, in PATH/text/CLASS/NAME.txt (or text_c10/). The
    split's images are listed, as CLASS/NAME, by PATH/SPLIT/filenames.txt (one per line) or StackGAN's
    PATH/SPLIT/filenames.pickle (a list of strings), else by CUB-200-2011's images.txt and train_test_split.txt;
    without any list, every image is used whatever the split.

    Captions are stripped and their whitespace collapsed; empty ones and those over MAX_CAPTION characters are
    dropped.
    """
    listing = list_captions(path, split)
    data = prepare_cached(listing, size, channels)
    report_skipped(listing.source, data.skipped, f"{len(listing.items)} image(s) that could not be decoded")
    return data


def list_captions(path: str, split: str = "train") -> Listing:
    """The captioned images of load_captions, before decoding."""
    if split not in SPLITS:
        raise GanforgeError(f"unknown split {split!r}; choose train or test")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise GanforgeError(f"captions:{path}: no such folder")
    source = f"captions:{path}"
    if (root / CAPTIONS_FILE).is_file():
        files, captions = _read_jsonl(source, root)
    else:
        files, captions = _read_cub(source, root, split)
    return Listing(source, [str(p) for p in files], decode_paths,
                   fingerprint_files(files, DECODER, split, hashlib.sha256(json.dumps(captions).encode()).hexdigest()),
                   captions=captions)


def _read_jsonl(source: str, root: Path) -> tuple[list[Path], list[list[str]]]:
    """captions.jsonl -> (image files, their captions); bad lines are reported and skipped."""
    jsonl = root / CAPTIONS_FILE
    files, captions, bad, dropped, lines = [], [], [], [], 0
    for number, raw in enumerate(_read_bytes(jsonl).removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        if not raw.strip():
            continue
        lines += 1
        try:
            entry = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append(f"line {number}: not valid UTF-8")
            continue
        except (ValueError, RecursionError) as e:  # RecursionError: nested thousands of levels deep
            bad.append(f"line {number}: not valid JSON ({type(e).__name__}: {e})"[:300])
            continue
        why = _bad_entry(root, entry)
        if why is None:
            cleaned = [clean_caption(t) for t in entry["captions"]]
            dropped += [f"line {number}: caption {k + 1}" for k, t in enumerate(cleaned) if t is None]
            if any(cleaned):
                files.append(root / entry["image"])
                captions.append([t for t in cleaned if t])
                continue
            why = f"no usable caption (all empty, over {MAX_CAPTION} characters or not valid Unicode)"
        bad.append(f"line {number}: {why}"[:300])
    report_skipped(source, bad, f"{lines} line(s) of {CAPTIONS_FILE}")
    report_skipped(source, dropped, f"the captions: empty, over {MAX_CAPTION} characters or not valid Unicode")
    if not files:
        raise GanforgeError(f"{jsonl}: no usable line among {lines}; expected one JSON object per line such as "
                            '{"image": "relative/path.png", "captions": ["a caption", "another"]}')
    return files, captions


def _bad_entry(root: Path, entry) -> str | None:
    """What is wrong with one parsed line of captions.jsonl, or None."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    image, texts = entry.get("image"), entry.get("captions")
    if not isinstance(image, str) or not image:
        return 'no "image" path (a string)'
    if Path(image).is_absolute() or ".." in Path(image).parts:
        return f"image {image!r} is outside the folder (give a path relative to it)"
    try:
        if not (root / image).is_file():
            return f"image {image!r} not found"
    except OSError as e:  # a name too long, ...
        return f"image {image[:100]!r}: {e.strerror or e}"
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return '"captions" missing or not a list of strings'
    return None


class _ListUnpickler(pickle.Unpickler):
    """Loads only plain data (lists, strings): any class or function in the file is refused, never imported."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only a list of strings is expected")


def read_filenames_pickle(path: Path) -> list[str]:
    """StackGAN's filenames.pickle: a pickled list of CLASS/NAME strings, loaded without running any code."""
    try:
        names = _ListUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as e:  # noqa: BLE001 - a broken pickle raises many types
        raise GanforgeError(f"{path}: cannot read ({type(e).__name__}: {e}); it must be a pickled list of "
                            f"strings, or replace it by filenames.txt with one CLASS/NAME per line") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise GanforgeError(f"{path}: expected a pickled list of strings, got {type(names).__name__}; "
                            f"replace it by filenames.txt with one CLASS/NAME per line")
    return names


def _split_list(base: Path, image_root: Path, split: str) -> list[str] | None:
    """The CLASS/NAME stems of the split, from whichever list file exists; None without one."""
    if (base / split / "filenames.txt").is_file():
        return [s.strip() for s in _read_text(base / split / "filenames.txt").splitlines() if s.strip()]
    if (base / split / "filenames.pickle").is_file():
        return read_filenames_pickle(base / split / "filenames.pickle")
    listing, split_file = image_root / "images.txt", image_root / "train_test_split.txt"
    if listing.is_file() and split_file.is_file():  # CUB-200-2011: "id relpath" and "id is_train"
        try:
            paths = dict(line.split(maxsplit=1) for line in _read_text(listing).splitlines() if line.strip())
            is_train = dict(line.split() for line in _read_text(split_file).splitlines() if line.strip())
        except ValueError:
            raise GanforgeError(f"{listing}, {split_file}: expected lines 'ID RELATIVE/PATH.jpg' and 'ID 1|0' "
                                f"(CUB-200-2011's format)") from None
        wanted = "1" if split == "train" else "0"
        return [str(Path(paths[i].strip()).with_suffix("")) for i in paths if is_train.get(i) == wanted]
    return None


def _read_cub(source: str, root: Path, split: str) -> tuple[list[Path], list[list[str]]]:
    """StackGAN/CUB layout -> (image files, their captions); images without captions are reported and skipped."""
    image_root = next((r for r in (root, root / "CUB_200_2011") if (r / "images").is_dir()), None)
    text_root = next((root / t for t in TEXT_FOLDERS if (root / t).is_dir()), None)
    if image_root is None or text_root is None:
        raise GanforgeError(f"{source}: no {CAPTIONS_FILE} and no images/ with text/ folders; expected {LAYOUTS}")
    images = image_root / "images"
    stems = _split_list(root, image_root, split)
    if stems is None:  # no split lists: every image
        stems = sorted(str(p.relative_to(images).with_suffix("")) for p in images.rglob("*")
                       if p.suffix.lower() in CUB_EXTENSIONS and p.is_file())
    files, captions, skipped, invalid = [], [], [], []
    for stem in stems:
        if Path(stem).is_absolute() or ".." in Path(stem).parts:
            skipped.append(f"{stem} (outside the folder)")
            continue
        image = next((images / f"{stem}{e}" for e in CUB_EXTENSIONS if (images / f"{stem}{e}").is_file()), None)
        text = text_root / f"{stem}.txt"
        if image is None:
            skipped.append(f"{images / stem}.jpg (missing)")
        elif not text.is_file():
            skipped.append(f"{image} (no caption file {text})")
        else:
            lines, bad = _text_lines(text)
            invalid += bad
            cleaned = [c for c in (clean_caption(line) for _, line in lines) if c]
            if cleaned:
                files.append(image)
                captions.append(cleaned)
            else:
                skipped.append(f"{image} (no usable caption in {text})")
    report_skipped(source, invalid, "the caption lines: not valid UTF-8")
    report_skipped(source, skipped, f"{len(stems)} image(s) that are missing or have no captions")
    if not files:
        raise GanforgeError(f"{source}: none of the {len(stems)} {split} image(s) has both an image and a caption "
                            f"file; expected {LAYOUTS}")
    return files, captions


# ---- procedural faces ----------------------------------------------------------------------------------------

# Pairs of attributes never seen together in the train split; each covers 7-8% of the faces (22% in all).
HELD_OUT_COMBOS = (("beard", "hair_red"), ("hat", "sunglasses"), ("long_hair", "hair_blond"))

# Words for each attribute. They never overlap, so an attribute can be read back from a caption: "sunglasses"
# and "shades" mean sunglasses; "glasses" and "spectacles" as words of their own mean clear glasses.
SMILE_BEFORE = {True: ["smiling", "grinning", "happy"], False: ["serious"]}  # before the noun
SMILE_AFTER = {True: ["smiling", "grinning", "with a smile"], False: ["not smiling", "with a straight face",
                                                                        "looking serious"]}
HAIR_WORDS = {"black": ["black"], "brown": ["brown"], "blond": ["blond", "blonde"], "red": ["red"],
              "gray": ["gray", "grey"]}
SKIN_WORDS = {"light": ["light", "fair", "pale"], "medium": ["medium", "tan", "olive"], "dark": ["dark"]}
FEATURE_WORDS = {"glasses": ["glasses", "spectacles"], "sunglasses": ["sunglasses", "shades"], "beard": ["a beard"],
                 "moustache": ["a moustache", "a mustache"], "hat": ["a hat"]}
FACE_NOUNS = ["person", "face", "character"]  # and "man" for faces with a beard or a moustache
FACE_TEMPLATES = [
    "a {before} {noun} with {features}",
    "{subject} with {features}, {after}",
    "a portrait of a {before} {noun} with {features}",
    "a picture of {subject} {after}, with {features}",
    "a drawing of {subject} with {features}, {after}",
]


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[rng.integers(len(words))]


def _join(items: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def face_caption(attributes: dict[str, bool], rng: np.random.Generator) -> str:
    """One caption of a face from its attributes (faces.ATTRIBUTES): whether it smiles and its hair always,
    its glasses or sunglasses, beard, moustache and hat when it has them, its skin tone half of the time."""
    def which(group: str, words: dict) -> str:
        return next(k for k in words if attributes[f"{group}_{k}"])

    color = _pick(rng, HAIR_WORDS[which("hair", HAIR_WORDS)])
    if attributes["bald"]:  # the side tufts show the hair colour
        hair = _pick(rng, [f"a bald head with {color} tufts at the sides", f"a bald head with {color} side tufts"])
    else:
        hair = f"{'long' if attributes['long_hair'] else 'short'} {color} hair"
    features = [hair]
    for name in ("sunglasses" if attributes["sunglasses"] else "glasses", "beard", "moustache", "hat"):
        if attributes[name]:
            features.append(_pick(rng, FEATURE_WORDS[name]))
    if rng.random() < 0.5:
        features.append(f"{_pick(rng, SKIN_WORDS[which('skin', SKIN_WORDS)])} skin")
    features = [features[i] for i in rng.permutation(len(features))]
    noun = _pick(rng, FACE_NOUNS + ["man"] * (attributes["beard"] or attributes["moustache"]))
    smiling = attributes["smiling"]
    return _pick(rng, FACE_TEMPLATES).format(
        before=_pick(rng, SMILE_BEFORE[smiling]), after=_pick(rng, SMILE_AFTER[smiling]), noun=noun,
        subject=_pick(rng, ["someone", f"a {noun}"]), features=_join(features))


def has_held_out_combo(attributes: torch.Tensor) -> torch.Tensor:
    """bool (N, A) face attributes (in faces.ATTRIBUTES order) -> bool (N,): which have a HELD_OUT_COMBOS pair."""
    from ganforge.data.faces import ATTRIBUTES

    held = torch.zeros(len(attributes), dtype=torch.bool)
    for first, second in HELD_OUT_COMBOS:
        held |= attributes[:, ATTRIBUTES.index(first)] & attributes[:, ATTRIBUTES.index(second)]
    return held


def _check(split: str, per_image: int) -> None:
    if split not in SPLITS:
        raise GanforgeError(f"unknown split {split!r}; choose train or test")
    if per_image < 1:
        raise GanforgeError(f"captions per image must be at least 1, got {per_image}")


def load_faces_captions(split: str = "train", per_image: int = 5) -> ImageData:
    """The procedural faces with their attributes and per_image captions each. The train split leaves out the
    faces with a HELD_OUT_COMBOS pair of attributes; the test split holds only those."""
    from ganforge.data.faces import load_faces

    _check(split, per_image)
    faces = load_faces()
    keep = has_held_out_combo(faces.attributes) == (split == "test")
    names = faces.attribute_names
    captions = []
    for i in keep.nonzero().flatten().tolist():  # seeded by the index among all faces: the same in any split
        rng = np.random.default_rng([1, i])
        attributes = dict(zip(names, faces.attributes[i].tolist()))
        captions.append([face_caption(attributes, rng) for _ in range(per_image)])
    data = faces.subset(keep)
    data.captions = captions
    return data


# ---- Fashion-MNIST -------------------------------------------------------------------------------------------

# Per class (in Fashion-MNIST's order: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag,
# Ankle boot) the words for it. No name of one class is a name of another or a word of one: "t-shirt" and
# "shirt" are different words, and tops are never called "shirt" alone.
FASHION_NAMES = [
    ["t-shirt", "tee", "short-sleeved top"],
    ["pair of trousers", "pair of pants", "pair of slacks"],
    ["pullover", "sweater", "jumper"],
    ["dress", "frock"],
    ["coat", "jacket", "overcoat"],
    ["sandal", "strappy sandal"],
    ["shirt", "button-up shirt", "blouse"],
    ["sneaker", "trainer", "running shoe"],
    ["bag", "handbag", "purse"],
    ["ankle boot", "boot", "short boot"],
]
# {x} is the name with its article ("an overcoat"), {name} the bare name.
FASHION_TEMPLATES = ["a photo of {x}", "a black and white picture of {x}", "{x}", "a grayscale image of {x}",
                     "this is {x}"]
FASHION_HELD_OUT_TEMPLATES = ["an image showing {x}", "here is {x} in black and white",
                              "a small picture of one {name}"]


def fashion_caption(label: int, rng: np.random.Generator, held_out: bool = False) -> str:
    """One caption of a Fashion-MNIST class, from the training templates or (held_out) the held-out ones."""
    name = _pick(rng, FASHION_NAMES[label])
    article = "an" if name[0] in "aeiou" else "a"
    template = _pick(rng, FASHION_HELD_OUT_TEMPLATES if held_out else FASHION_TEMPLATES)
    return template.format(x=f"{article} {name}", name=name)


def load_fashion_captions(split: str = "train", data_dir: str | None = None, download: bool = False,
                          per_image: int = 3) -> ImageData:
    """Fashion-MNIST (see idx.py) with its labels and per_image training-template captions per image."""
    from ganforge.data.idx import load_idx

    _check(split, per_image)
    data = load_idx("fashion-mnist", split=split, data_dir=data_dir, download=download)
    seed = SPLITS.index(split) + 2  # the train and test images differ: so do their seeds
    data.captions = []
    for i, label in enumerate(data.labels.tolist()):
        rng = np.random.default_rng([seed, i])
        data.captions.append([fashion_caption(label, rng) for _ in range(per_image)])
    return data
