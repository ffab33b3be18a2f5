import json
import os
import pickle
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from conftest import skip_or_fail
from PIL import Image

from ganforge.data import ImageData, load_data
from ganforge.data import faces as faces_module
from ganforge.data.captions import (
    FASHION_HELD_OUT_TEMPLATES,
    FASHION_NAMES,
    FASHION_TEMPLATES,
    HELD_OUT_COMBOS,
    face_caption,
    fashion_caption,
    has_held_out_combo,
    load_captions,
    load_faces_captions,
)
from ganforge.data.faces import ATTRIBUTES, draw_face
from ganforge.errors import GanforgeError


def image(path: Path, color=(200, 40, 40), size=(24, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_jsonl(root: Path, lines: list) -> None:
    """lines: dicts (written as JSON) or raw bytes."""
    raw = [line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines]
    (root / "captions.jsonl").write_bytes(b"\n".join(raw) + b"\n")


# ---- captions.jsonl ----

def test_jsonl_loads_images_with_normalised_captions(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "sub" / "b.jpg", (10, 200, 10))
    write_jsonl(tmp_path, [{"image": "a.png", "captions": ["  a red\tsquare ", "red\n\nblock"]}, b"",
                           {"image": "sub/b.jpg", "captions": ["a green one"]}])
    data = load_captions(str(tmp_path), size=16, channels=3)
    assert data.images.shape == (2, 3, 16, 16) and data.labels is None
    assert data.captions == [["a red square", "red block"], ["a green one"]]
    assert data.images[0, 0].float().mean() > 150 and data.images[1, 1].float().mean() > 150  # in file order


BAD_LINES = {
    "invalid JSON": (b'{"image": "a.png", ', "not valid JSON"),
    "invalid UTF-8": (b'{"image": "a.png", "captions": ["caf\xff"]}', "not valid UTF-8"),
    "not an object": (b'["a.png", "a caption"]', "not a JSON object"),
    "no image": ({"captions": ["a caption"]}, '"image"'),
    "image not a string": ({"image": 3, "captions": ["a caption"]}, '"image"'),
    "image missing": ({"image": "nope.png", "captions": ["a caption"]}, "not found"),
    "absolute path": ("ABSOLUTE", "outside the folder"),
    "path through ..": ({"image": "../outside.png", "captions": ["a caption"]}, "outside the folder"),
    "no captions": ({"image": "a.png"}, '"captions"'),
    "captions not a list": ({"image": "a.png", "captions": "a caption"}, '"captions"'),
    "a caption not a string": ({"image": "a.png", "captions": ["fine", 7]}, '"captions"'),
    "only blank captions": ({"image": "a.png", "captions": [" ", "\t\n", ""]}, "no usable caption"),
    "only over-long captions": ({"image": "a.png", "captions": ["x" * 1001]}, "no usable caption"),
}


@pytest.mark.parametrize("kind", BAD_LINES)
def test_jsonl_bad_lines_are_skipped_and_reported_by_line(tmp_path, capsys, kind):
    root = tmp_path / "data"
    image(root / "a.png")
    image(tmp_path / "outside.png")
    bad, why = BAD_LINES[kind]
    if bad == "ABSOLUTE":  # an existing file, refused only for being absolute
        bad = {"image": str(root / "a.png"), "captions": ["a caption"]}
    write_jsonl(root, [{"image": "a.png", "captions": ["good"]}, b"   ", bad, {"image": "a.png", "captions": ["ok"]}])
    data = load_captions(str(root), size=8)
    assert data.captions == [["good"], ["ok"]]
    err = capsys.readouterr().err
    assert "skipped 1 of 3 line(s) of captions.jsonl" in err
    assert "line 3: " in err and why in err.split("line 3: ")[1].splitlines()[0]


def test_jsonl_drops_blank_and_long_captions_and_undecodable_images(tmp_path, capsys):
    image(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    write_jsonl(tmp_path, [{"image": "a.png", "captions": ["  ", "kept", "y" * 1001]},
                           {"image": "broken.png", "captions": ["never decoded"]}])
    data = load_captions(str(tmp_path), size=8)
    assert data.captions == [["kept"]] and len(data.skipped) == 1 and "broken.png" in data.skipped[0]
    err = capsys.readouterr().err
    assert "line 1: caption 1" in err and "line 1: caption 3" in err and "broken.png" in err


def test_jsonl_without_usable_lines_says_what_is_expected(tmp_path, capsys):
    write_jsonl(tmp_path, [b"nonsense", {"image": "missing.png", "captions": ["x"]}])
    with pytest.raises(GanforgeError, match=r"captions\.jsonl: no usable line.*\{\"image\""):
        load_captions(str(tmp_path))
    assert "line 1:" in capsys.readouterr().err


def test_no_layout_describes_both(tmp_path):
    image(tmp_path / "a.png")
    with pytest.raises(GanforgeError, match=r"captions\.jsonl.*text/CLASS/NAME\.txt.*filenames"):
        load_captions(str(tmp_path))
    with pytest.raises(GanforgeError, match="no such folder"):
        load_captions(str(tmp_path / "nope"))


# ---- the StackGAN/CUB layout ----

STEMS = {"train": ["001.Albatross/alba_1", "002.Wren/wren_1"], "test": ["001.Albatross/alba_2"]}


def cub(root: Path, text: str = "text", image_root: Path | None = None) -> Path:
    """A tiny CUB tree: an image and a caption file per stem (captions name the stem), and one uncaptioned image."""
    images = (image_root or root) / "images"
    for k, stem in enumerate(STEMS["train"] + STEMS["test"]):
        image(images / f"{stem}{'.png' if k == 1 else '.jpg'}", (40 * k, 90, 200))
        (root / text / stem).parent.mkdir(parents=True, exist_ok=True)
        (root / text / f"{stem}.txt").write_text(f"a bird {stem.split('/')[1]}\n\n  small   bird \n")
    image(images / "002.Wren" / "wren_2.jpeg")  # no caption file
    return root


def stems_of(data: ImageData) -> list[str]:
    return [c[0].removeprefix("a bird ") for c in data.captions]


def test_cub_with_filenames_txt(tmp_path, capsys):
    root = cub(tmp_path)
    for split, stems in STEMS.items():
        (root / split).mkdir()
        (root / split / "filenames.txt").write_text("\n".join(stems + (["002.Wren/wren_2"] if split == "test" else [])))
    train = load_captions(str(root), size=8, split="train")
    assert stems_of(train) == ["alba_1", "wren_1"] and train.captions[0] == ["a bird alba_1", "small bird"]
    test = load_captions(str(root), size=8, split="test")
    assert stems_of(test) == ["alba_2"] and test.images.shape == (1, 3, 8, 8)
    assert "wren_2.jpeg (no caption file" in capsys.readouterr().err
    with pytest.raises(GanforgeError, match="unknown split"):
        load_captions(str(root), split="val")


def test_cub_with_stackgan_pickles_and_text_c10(tmp_path):
    root = cub(tmp_path, text="text_c10")
    for split, stems in STEMS.items():
        (root / split).mkdir()
        (root / split / "filenames.pickle").write_bytes(pickle.dumps(stems, protocol=2))
    assert stems_of(load_captions(str(root), size=8)) == ["alba_1", "wren_1"]
    assert stems_of(load_captions(str(root), size=8, split="test")) == ["alba_2"]


def test_cub_without_lists_uses_every_captioned_image(tmp_path, capsys):
    data = load_captions(str(cub(tmp_path)), size=8, split="test")
    assert stems_of(data) == ["alba_1", "alba_2", "wren_1"]
    assert "skipped 1 of 4" in capsys.readouterr().err


class Harmless:
    pass


@pytest.mark.parametrize("payload", ["instance", "global", "reduce"])
def test_pickles_with_anything_but_plain_data_are_refused(tmp_path, payload):
    root = cub(tmp_path)
    marker = tmp_path / "ran"
    content = {"instance": [Harmless()], "global": [PurePosixPath("001.Albatross/alba_1")], "reduce": None}[payload]
    if payload == "reduce":  # would create a folder if it were ever run
        class Boom:
            def __reduce__(self):
                return os.mkdir, (str(marker),)
        content = [Boom()]
    (root / "train").mkdir()
    (root / "train" / "filenames.pickle").write_bytes(pickle.dumps(content))
    with pytest.raises(GanforgeError, match="refusing to load"):
        load_captions(str(root))
    assert not marker.exists()
    (root / "train" / "filenames.pickle").write_bytes(pickle.dumps({"not": "a list"}))
    with pytest.raises(GanforgeError, match="expected a pickled list of strings"):
        load_captions(str(root))


def test_cub_200_2011_lists(tmp_path):
    root = cub(tmp_path, image_root=tmp_path / "CUB_200_2011")
    cub_root = root / "CUB_200_2011"
    (cub_root / "images.txt").write_text("1 001.Albatross/alba_1.jpg\n2 002.Wren/wren_1.png\n3 001.Albatross/alba_2.jpg\n")
    (cub_root / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n")
    assert stems_of(load_captions(str(root), size=8)) == ["alba_1", "alba_2"]
    assert stems_of(load_captions(str(root), size=8, split="test")) == ["wren_1"]


def test_load_data_with_captions_end_to_end(tmp_path):
    image(tmp_path / "a.png")
    image(tmp_path / "b.png", (0, 0, 0))
    write_jsonl(tmp_path, [{"image": "a.png", "captions": ["red"]}, {"image": "b.png", "captions": ["black", "dark"]}])
    data = load_data(f"captions:{tmp_path}", image_size=8, channels=1)
    assert data.images.shape == (2, 1, 8, 8) and data.captions == [["red"], ["black", "dark"]]
    again = load_data(f"captions:{tmp_path}", image_size=8, channels=1)  # from the cache
    assert torch.equal(again.images[:], data.images[:]) and again.captions == data.captions
    with pytest.raises(GanforgeError, match="faces-captions"):
        load_data("pictures-with-words")


def test_image_data_subset_keeps_captions():
    data = ImageData(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), labels=torch.arange(4),
                     captions=[["zero"], ["one"], ["two", "deux"], ["three"]])
    assert data.subset(torch.tensor([2, 0])).captions == [["two", "deux"], ["zero"]]
    part = data.subset(torch.tensor([False, True, True, False]))
    assert part.captions == [["one"], ["two", "deux"]] and part.labels.tolist() == [1, 2]
    with pytest.raises(ValueError, match="captions"):
        ImageData(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), captions=[["one"]])


# ---- faces ----

def read_back(caption: str) -> dict:
    """The attributes a face caption states, read from its words alone."""
    text = f" {caption.replace(',', '')} "

    def has(*phrases):
        return any(f" {p} " in text for p in phrases)

    colors = [c for c, words in {"black": ["black"], "brown": ["brown"], "blond": ["blond", "blonde"],
                                 "red": ["red"], "gray": ["gray", "grey"]}.items() if has(*words)]
    skins = [t for t, words in {"light": ["light", "fair", "pale"], "medium": ["medium", "tan", "olive"],
                                "dark": ["dark"]}.items() if has(*(f"{w} skin" for w in words))]
    assert len(colors) == 1 and len(skins) <= 1, caption
    frowning, smiling = has("not smiling", "straight face", "serious"), has("smiling", "grinning", "happy", "smile")
    assert frowning != smiling or has("not smiling"), caption  # one of the two, never both
    assert has("bald") + has("long") + has("short") == 1, caption  # the hair's length, or baldness
    found = {"smiling": not frowning, "glasses": has("glasses", "spectacles", "sunglasses", "shades"),
             "sunglasses": has("sunglasses", "shades"), "beard": has("beard"),
             "moustache": has("moustache", "mustache"), "long_hair": has("long"), "bald": has("bald"),
             "hat": has("hat"), f"hair_{colors[0]}": True}
    if skins:
        found[f"skin_{skins[0]}"] = True
    return found


def test_face_captions_can_be_read_back():
    captions = set()
    for seed in range(150):
        _, attributes = draw_face(np.random.default_rng([9, seed]))
        caption = face_caption(attributes, np.random.default_rng(seed))
        captions.add(caption)
        for name, value in read_back(caption).items():
            assert attributes[name] == value, (name, caption, attributes)
    assert len(captions) == 150  # varied wording
    attributes = {name: False for name in ATTRIBUTES} | {"smiling": True, "hat": True, "hair_red": True,
                                                          "skin_dark": True}
    rng = np.random.default_rng(0)
    assert face_caption(attributes, rng) != face_caption(attributes, rng)


def test_held_out_combos_split_the_faces(monkeypatch):
    monkeypatch.setattr(faces_module, "COUNT", 400)
    train, test = load_faces_captions("train", per_image=2), load_faces_captions("test", per_image=2)
    assert len(train) + len(test) == 400 and 0.1 < len(test) / 400 < 0.35
    assert not has_held_out_combo(train.attributes).any() and has_held_out_combo(test.attributes).all()
    assert train.attribute_names == ATTRIBUTES and train.labels is None
    assert all(len(c) == 2 for c in train.captions + test.captions)
    for first, second in HELD_OUT_COMBOS:  # each pair is in the test split, and never said in a train caption
        assert (test.attributes[:, ATTRIBUTES.index(first)] & test.attributes[:, ATTRIBUTES.index(second)]).sum() > 5
        said = [read_back(c) for cs in train.captions for c in cs]
        assert not any(found.get(first) and found.get(second) for found in said)
    assert load_faces_captions("test", per_image=2).captions == test.captions  # deterministic
    data = load_data("faces-captions", image_size=32, split="test")
    assert data.images.shape == (len(test), 3, 32, 32) and len(data.captions[0]) == 5
    with pytest.raises(GanforgeError, match="unknown split"):
        load_faces_captions("validation")


# ---- Fashion-MNIST ----

def named_classes(caption: str) -> set[int]:
    """The classes whose names appear in a caption as whole words."""
    text = f" {caption} "
    return {label for label, names in enumerate(FASHION_NAMES) if any(f" {n} " in text for n in names)}


def test_fashion_captions_name_their_class_and_hold_out_templates():
    rng = np.random.default_rng(0)
    for label in range(10):
        for held_out in (False, True):
            for _ in range(30):
                assert named_classes(fashion_caption(label, rng, held_out)) == {label}

    def every(templates):  # every caption the templates can make, with either article
        return {t.format(x=f"{a} {n}", name=n) for t in templates for ns in FASHION_NAMES for n in ns
                for a in ("a", "an")}

    held_out = {fashion_caption(label, rng, held_out=True) for label in range(10) for _ in range(100)}
    assert held_out <= every(FASHION_HELD_OUT_TEMPLATES) and not every(FASHION_HELD_OUT_TEMPLATES) & every(FASHION_TEMPLATES)
    assert not set(FASHION_HELD_OUT_TEMPLATES) & set(FASHION_TEMPLATES)
    articles = {fashion_caption(label, rng) for label in (4, 9) for _ in range(100)}
    assert any("an ankle boot" in c for c in articles) and any("an overcoat" in c for c in articles)
    assert not any(" a ankle" in f" {c}" or " a overcoat" in f" {c}" for c in articles | held_out)


def test_fashion_mnist_captions_from_the_debian_package():
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        skip_or_fail("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    data = load_data("fashion-mnist-captions", image_size=32, split="test")
    assert data.images.shape == (10_000, 1, 32, 32) and len(data.classes) == 10
    assert all(len(c) == 3 for c in data.captions)
    for label, captions in zip(data.labels[:200].tolist(), data.captions[:200]):
        assert all(named_classes(c) == {label} for c in captions)
