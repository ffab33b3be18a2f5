"""Hostile or broken inputs: images, checkpoints, captions and configs that are damaged, foreign or malicious.

Each kind of input has its own test or parametrized case; what ganforge does is: convert it (images in any
mode), skip it with a report on stderr that names the file and why (undecodable images, bad caption lines), or
raise a GanforgeError that names the input (checkpoints, configs), which the CLI prints without a traceback.
"""

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from ganforge import cli, load, train
from ganforge.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from ganforge.config import TrainConfig, apply_overrides, make_config
from ganforge.data import folder as folder_module
from ganforge.data.captions import load_captions
from ganforge.data.folder import DECODE_ERRORS, decode, load_folder
from ganforge.errors import GanforgeError
from ganforge.stats import read_stats

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False

# ---- images -----------------------------------------------------------------------------------------------------


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _noise(size=(40, 30)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height 8-bit gray pixels: a decompression bomb's header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + _png_chunk(b"IEND", b""))


def _palette(transparent: bool) -> Image.Image:
    """Left half palette index 0 (red, or transparent), right half index 1 (blue)."""
    img = Image.new("P", (40, 40), 1)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(0, (0, 0, 20, 40))
    if transparent:
        img.info["transparency"] = 0
    return img


def _half_transparent(mode: str, color) -> Image.Image:
    img = Image.new(mode, (40, 40), color)
    img.paste((0,) * len(color), (0, 0, 20, 40))  # left half fully transparent
    return img


# name -> (file bytes, expected RGB at the left-centre pixel, at the right-centre pixel) of a 28x28 decode
GOOD_IMAGES = {
    "cmyk.jpg": (_encoded(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95), (255, 0, 0), (255, 0, 0)),
    "gray16.png": (_encoded(Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)), "PNG"), (156,) * 3, (156,) * 3),
    "palette.png": (_encoded(_palette(False), "PNG"), (255, 0, 0), (0, 0, 255)),
    "palette_transparent.png": (_encoded(_palette(True), "PNG", transparency=0), (255, 255, 255), (0, 0, 255)),
    "rgba.png": (_encoded(_half_transparent("RGBA", (0, 0, 255, 128)), "PNG"), (255, 255, 255), (127, 127, 255)),
    "la.png": (_encoded(_half_transparent("LA", (100, 255)), "PNG"), (255, 255, 255), (100, 100, 100)),
    "one_pixel.png": (_encoded(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"), (10, 20, 30), (10, 20, 30)),
    "thin_strip.png": (_encoded(Image.new("L", (100_000, 1), 90), "PNG"), (90,) * 3, (90,) * 3),
    "plain.jpg": (_encoded(Image.new("RGB", (50, 40), (20, 200, 20)), "JPEG", quality=95), (20, 200, 20), (20, 200, 20)),
}

_PNG, _JPEG = _encoded(_noise(), "PNG"), _encoded(_noise(), "JPEG")
# name -> (file bytes, what the skip report says)
BAD_IMAGES = {
    "truncated.png": (_PNG[: len(_PNG) // 2], "truncated"),
    "truncated.jpg": (_JPEG[: len(_JPEG) // 2], "truncated"),
    "random_bytes.png": (np.random.default_rng(1).bytes(2000), "not an image Pillow can read"),
    "random_bytes.jpg": (np.random.default_rng(2).bytes(2000), "not an image Pillow can read"),
    "zero_bytes.png": (b"", "empty file (0 bytes)"),
    "bomb_header.png": (_png_claiming(100_000, 100_000), "too large"),
}


def _write(root: Path, files: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, (blob, *_) in files.items():
        (root / name).write_bytes(blob)
    return root


@pytest.mark.parametrize("name", GOOD_IMAGES)
@pytest.mark.parametrize("channels", [3, 1])
def test_images_in_any_mode_are_converted(tmp_path, name, channels):
    """CMYK, 16-bit gray, palette with and without transparency, RGBA, LA, 1x1, a 100000x1 strip."""
    blob, left, right = GOOD_IMAGES[name]
    (tmp_path / name).write_bytes(blob)
    array = decode(tmp_path / name, 28, channels)
    assert array.shape == (channels, 28, 28) and array.dtype == np.uint8
    if channels == 3:
        assert array[:, 14, 3].tolist() == pytest.approx(list(left), abs=3)
        assert array[:, 14, 24].tolist() == pytest.approx(list(right), abs=3)
    else:  # luma
        luma = round(0.299 * right[0] + 0.587 * right[1] + 0.114 * right[2])
        assert array[0, 14, 24] == pytest.approx(luma, abs=3)


def test_16_bit_gray_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16)[None].repeat(64, 0)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode.startswith("I")
    row = decode(tmp_path / "ramp.png", 64, 1)[0, 32]
    assert row[0] <= 2 and row[-1] >= 253 and np.all(np.diff(row.astype(int)) >= 0)  # a ramp, not a white wall


def test_long_thin_strip_is_cropped_before_resizing(tmp_path):
    """A 1 x 300000 image: resizing its short side to 64 first would make 64 x 19.2M pixels (36 s, gigabytes)."""
    Image.new("L", (1, 300_000), 77).save(tmp_path / "strip.png")
    start = time.perf_counter()
    assert decode(tmp_path / "strip.png", 64, 3)[:, 32, 32].tolist() == [77, 77, 77]
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_broken_images_are_skipped_with_a_report(tmp_path, capsys, name):
    blob, why = BAD_IMAGES[name]
    root = _write(tmp_path / "imgs", {"good.png": (_PNG,), name: (blob,)})
    with pytest.raises(DECODE_ERRORS):
        decode(root / name, 28, 3)
    data = load_folder(str(root), 28, 3)
    assert data.images.shape == (1, 3, 28, 28)
    assert len(data.skipped) == 1 and name in data.skipped[0] and why in data.skipped[0]
    err = capsys.readouterr().err
    assert "skipped 1 of 2 file(s)" in err and f"{root / name} (" in err and why in err


@pytest.mark.parametrize("limit,pixels", [(1000, 40 * 30), (100, 40 * 30)])  # over the warning; over twice it
def test_decompression_bomb_over_pillows_limit_is_skipped(tmp_path, monkeypatch, capsys, limit, pixels):
    """Pillow warns over MAX_IMAGE_PIXELS and refuses over twice that; ganforge skips both."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    root = _write(tmp_path / "imgs", {"big.png": (_PNG,), "small.png": (_encoded(Image.new("RGB", (8, 8)), "PNG"),)})
    with pytest.raises(Image.DecompressionBombError):
        decode(root / "big.png", 28, 3)
    data = load_folder(str(root), 28, 3)
    assert len(data) == 1 and "big.png (too large" in data.skipped[0]
    assert f"{pixels} pixels" in capsys.readouterr().err


@pytest.mark.skipif(ROOT, reason="root reads files whatever their permissions (the test below simulates it)")
def test_unreadable_file_is_skipped(tmp_path, capsys):
    root = _write(tmp_path / "imgs", {"good.png": (_PNG,), "locked.png": (_PNG,)})
    (root / "locked.png").chmod(0)
    try:
        data = load_folder(str(root), 28, 3)
    finally:
        (root / "locked.png").chmod(0o644)
    assert len(data) == 1 and "locked.png (cannot be read (permission denied))" in data.skipped[0]
    assert "locked.png" in capsys.readouterr().err


def test_unreadable_file_is_skipped_simulated(tmp_path, monkeypatch, capsys):
    """As the test above, for root: Pillow's open raises PermissionError as it would for another user."""
    root = _write(tmp_path / "imgs", {"good.png": (_PNG,), "locked.png": (_PNG,)})
    real_open = Image.open

    def open_(path, *args, **kwargs):
        if Path(path).name == "locked.png":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(folder_module.Image, "open", open_)
    data = load_folder(str(root), 28, 3)
    assert len(data) == 1 and "locked.png (cannot be read (permission denied))" in data.skipped[0]
    assert "locked.png" in capsys.readouterr().err


def test_directory_named_like_an_image_is_a_folder_not_a_file(tmp_path, capsys):
    root = _write(tmp_path / "imgs", {"good.png": (_PNG,)})
    (root / "x.png").mkdir()
    (root / "x.png" / "inner.jpg").write_bytes(_JPEG)
    data = load_folder(str(root), 28, 3)
    assert len(data) == 2 and data.skipped == []
    with pytest.raises(OSError):  # decode itself says why, should anyone hand it the folder
        decode(root / "x.png", 28, 3)


def test_folder_of_every_kind_loads_and_trains(tmp_path, capsys):
    """Every good kind converted, every bad kind skipped and named, then a few training steps on the rest."""
    root = _write(tmp_path / "imgs", {**GOOD_IMAGES, **BAD_IMAGES})
    (root / "dir.png").mkdir()
    data = load_folder(str(root), 28, 3)
    assert data.images.shape == (len(GOOD_IMAGES), 3, 28, 28) and data.images.dtype == torch.uint8
    assert sorted(Path(s.split(" (")[0]).name for s in data.skipped) == sorted(BAD_IMAGES)
    assert f"skipped {len(BAD_IMAGES)} of {len(GOOD_IMAGES) + len(BAD_IMAGES)} file(s)" in capsys.readouterr().err
    run = train(tiny_config(data=f"folder:{root}", image_size=28, batch_size=4, steps=6), runs_dir=tmp_path / "runs",
                progress=False)
    assert find_checkpoint(run).name == "step-00000006.json"
    stats = read_stats(run).lines
    assert stats and all(np.isfinite(s["d_loss"]) for s in stats)


def test_folder_with_only_broken_images_is_a_clear_error(tmp_path):
    root = _write(tmp_path / "imgs", BAD_IMAGES)
    with pytest.raises(GanforgeError, match=f"none of the {len(BAD_IMAGES)} image file"):
        load_folder(str(root), 28, 3)


# ---- checkpoints ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny trained run, copied by each test that damages it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return train(tiny_config(steps=2), runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def _edit_json(run: Path, change) -> Path:
    path = find_checkpoint(run)
    meta = json.loads(path.read_text())
    new = change(meta)
    path.write_bytes(new if isinstance(new, bytes) else json.dumps(new if new is not None else meta).encode())
    return path


def _set(key, value):
    def change(meta):
        meta[key] = value
    return change


def _drop(key):
    return lambda meta: meta.pop(key) and None


BAD_JSON = {
    "a list": (lambda meta: [meta], "a JSON list, not an object"),
    "a number": (lambda meta: 3, "a JSON int, not an object"),
    "not JSON": (lambda meta: b"\x80\x81 garbage", "not a valid checkpoint JSON"),
    "nested 100000 deep": (lambda meta: b"[" * 100_000, "not a valid checkpoint JSON"),
    "no format": (_drop("format"), "not a ganforge checkpoint"),
    "other format": (_set("format", "other-tool"), "not a ganforge checkpoint"),
    "format_version 2": (_set("format_version", 2), "format 2 is not supported"),
    "format_version a string": (_set("format_version", "1"), "format '1' is not supported"),
    "no step": (_drop("step"), '"step" is missing; expected a whole number'),
    "negative step": (_set("step", -1), '"step" is -1'),
    "step a string": (_set("step", "2"), "\"step\" is '2'"),
    "step a float": (_set("step", 2.5), '"step" is 2.5'),
    "no tensors": (_drop("tensors"), '"tensors" is missing'),
    "tensors outside the folder": (_set("tensors", "../x.safetensors"), "\"tensors\" is '../x.safetensors'"),
    "tensors an absolute path": (_set("tensors", "/etc/x.safetensors"), '"tensors" is'),
    "tensors in a subfolder": (_set("tensors", "sub/x.safetensors"), '"tensors" is'),
    "tensors not a string": (_set("tensors", ["x.safetensors"]), '"tensors" is'),
    "tensors not safetensors": (_set("tensors", "step-00000002.pt"), '"tensors" is'),
    "tensors file missing": (_set("tensors", "step-00000009.safetensors"), "tensors file .* is missing"),
    "no sha256": (_drop("sha256"), '"sha256" is missing; expected 64 hexadecimal digits'),
    "sha256 too short": (_set("sha256", "abc123"), '"sha256" is'),
    "sha256 a number": (_set("sha256", 12345), '"sha256" is 12345'),
    "no model_spec": (_drop("model_spec"), '"model_spec" is missing'),
    "model_spec a string": (_set("model_spec", "dcgan"), "\"model_spec\" is 'dcgan'"),
    "no config": (_drop("config"), '"config" is missing'),
    "config a list": (_set("config", []), '"config" is \\[\\]'),
}


@pytest.mark.parametrize("kind", BAD_JSON)
def test_checkpoint_json_is_validated(run, kind):
    change, message = BAD_JSON[kind]
    path = _edit_json(run, change)
    with pytest.raises(GanforgeError, match=message) as err:
        load_checkpoint(run)
    assert str(path) in str(err.value)
    with pytest.raises(GanforgeError):
        load(run)


def test_a_checkpoint_of_an_unknown_model_is_refused_naming_it(run):
    path = _edit_json(run, lambda meta: meta["model_spec"].update(model="vae"))
    with pytest.raises(GanforgeError, match='"model_spec" is .*vae') as err:
        load(run)
    assert str(path) in str(err.value)
    assert cli.main(["train", "--resume", str(run)]) == 2


@pytest.mark.parametrize("change,message", [
    ({"g_width": "wide"}, "no usable model_spec"), ({"image_size": None}, "no usable model_spec"),
    ({"g_width": -8}, "no usable model_spec"), ({"g_width": 4}, r"tensor '[\w.]+' has shape"),
])
def test_unusable_model_spec_is_a_clear_error(run, change, message):
    _edit_json(run, lambda meta: meta["model_spec"].update(change))
    with pytest.raises(GanforgeError, match=message):
        load(run)


def test_tensors_file_that_is_not_safetensors_is_refused(run):
    """Garbage with its own (matching) hash in the JSON: the hash check passes, the format check does not."""
    garbage = b"\x00\x01 definitely not safetensors" * 10
    path = _edit_json(run, lambda meta: None)
    meta = json.loads(path.read_text())
    (path.parent / meta["tensors"]).write_bytes(garbage)
    _edit_json(run, _set("sha256", hashlib.sha256(garbage).hexdigest().upper()))  # any case of hex digits
    with pytest.raises(GanforgeError, match=r"\.safetensors: damaged, not a safetensors file"):
        load_checkpoint(run)


def test_tensor_of_the_wrong_shape_or_missing_names_it(run):
    meta, tensors = load_checkpoint(run)
    keep = {k: v for k, v in meta.items() if k not in ("format", "format_version", "ganforge_version", "step",
                                                       "tensors", "sha256")}
    wrong = dict(tensors)
    wrong["G_ema/project.weight"] = torch.zeros(3, 5)
    save_checkpoint(run / "checkpoints", 7, wrong, keep)
    with pytest.raises(GanforgeError, match=r"G_ema: tensor 'project.weight' has shape \(3, 5\), the model expects"):
        load(run)
    del wrong["G_ema/project.weight"]
    save_checkpoint(run / "checkpoints", 8, wrong, keep)
    with pytest.raises(GanforgeError, match=r"G_ema: checkpoint does not fit the model \(missing \['project.weight'\]"):
        load(run)


class _Evil:
    """Unpickling this would create a file: the proof that a loader ran the pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".PT"])
def test_pickled_checkpoints_are_refused_unread(tmp_path, capsys, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(GanforgeError, match="never unpickles"):
        load_checkpoint(path)
    assert cli.main(["sample", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "never unpickles" in err and "Traceback" not in err
    assert not marker.exists()


def test_resume_with_a_damaged_config_names_the_key(run):
    _edit_json(run, lambda meta: meta["config"].update(lr_g=float("nan")))  # JSON's NaN, which Python reads
    with pytest.raises(GanforgeError, match="config lr_g=nan: expected float"):
        train(resume=run, budget={"steps": 4}, progress=False)


# ---- captions ---------------------------------------------------------------------------------------------------


def _captioned(root: Path, jsonl: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), (1, 2, 3)).save(root / "a.png")
    (root / "captions.jsonl").write_bytes(jsonl)
    return root


GOOD_LINE = b'{"image": "a.png", "captions": ["a good caption"]}\n'
# hostile line -> (what load_captions keeps from it, what the report says); captions.jsonl cases not in test_captions
JSONL_LINES = {
    "10000-character caption": (b'{"image": "a.png", "captions": ["' + b"x" * 10_000 + b'", "short"]}',
                                [["a good caption"], ["short"]], "caption 1"),
    "empty caption": (b'{"image": "a.png", "captions": ["", "short"]}', [["a good caption"], ["short"]], "caption 1"),
    "lone surrogate": (b'{"image": "a.png", "captions": ["\\ud800 bird"]}', [["a good caption"]], "no usable caption"),
    "control characters": (b'{"image": "a.png", "captions": ["a\\u0000b\\tc\\u009fd"]}',
                           [["a good caption"], ["a b c d"]], None),
    "nested 100000 deep": (b"[" * 100_000, [["a good caption"]], "not valid JSON (RecursionError"),
    "image name too long": (json.dumps({"image": "x" * 5000 + ".png", "captions": ["c"]}).encode(),
                            [["a good caption"]], "File name too long"),
    "image name with NUL": (b'{"image": "a.png\\u0000", "captions": ["c"]}', [["a good caption"]], "not found"),
    "invalid UTF-8 in a caption": (b'{"image": "a.png", "captions": ["caf\xc3\x28"]}', [["a good caption"]],
                                   "not valid UTF-8"),
}


@pytest.mark.parametrize("kind", JSONL_LINES)
def test_hostile_caption_lines(tmp_path, capsys, kind):
    line, kept, why = JSONL_LINES[kind]
    root = _captioned(tmp_path / "data", GOOD_LINE + line + b"\n")
    data = load_captions(str(root), size=8)
    assert data.captions == kept
    err = capsys.readouterr().err
    if why:
        assert why in err and "line 2" in err


def test_byte_order_mark_is_ignored(tmp_path):
    root = _captioned(tmp_path / "data", b"\xef\xbb\xbf" + GOOD_LINE)
    assert load_captions(str(root), size=8).captions == [["a good caption"]]


@pytest.mark.parametrize("content", [np.random.default_rng(3).bytes(3000), b"\xff\xfe" * 100, b"\n\n \n", b""])
def test_entirely_invalid_captions_file_names_it(tmp_path, content):
    root = _captioned(tmp_path / "data", content)
    with pytest.raises(GanforgeError, match=r"captions\.jsonl: no usable line"):
        load_captions(str(root), size=8)


def _cub(root: Path, caption_bytes: bytes) -> Path:
    (root / "images" / "001.Bird").mkdir(parents=True)
    (root / "text" / "001.Bird").mkdir(parents=True)
    for name in ("a", "b"):
        Image.new("RGB", (20, 20)).save(root / "images" / "001.Bird" / f"{name}.jpg")
    (root / "text" / "001.Bird" / "a.txt").write_bytes(caption_bytes)
    (root / "text" / "001.Bird" / "b.txt").write_bytes(b"a fine bird\n")
    return root


def test_cub_invalid_utf8_lines_are_skipped_and_named(tmp_path, capsys):
    root = _cub(tmp_path / "cub", b"a red bird\ncaf\xe9 au lait\n\xff\xfe\nsmall bird\n")
    data = load_captions(str(root), size=8)
    assert data.captions == [["a red bird", "small bird"], ["a fine bird"]]  # no U+FFFD replacement characters
    err = capsys.readouterr().err
    assert "skipped 2 of the caption lines: not valid UTF-8" in err
    assert f"{root / 'text' / '001.Bird' / 'a.txt'} line 2: not valid UTF-8" in err and "a.txt line 3" in err


def test_cub_caption_file_entirely_invalid_skips_its_image(tmp_path, capsys):
    root = _cub(tmp_path / "cub", np.random.default_rng(4).bytes(500).replace(b"\n", b"\xff"))
    data = load_captions(str(root), size=8)
    assert data.captions == [["a fine bird"]]
    err = capsys.readouterr().err
    assert "a.txt line 1: not valid UTF-8" in err and "a.jpg (no usable caption in" in err


def test_cub_filenames_list_with_invalid_utf8_names_it(tmp_path):
    root = _cub(tmp_path / "cub", b"a bird\n")
    (root / "train").mkdir()
    (root / "train" / "filenames.txt").write_bytes(b"001.Bird/a\n001.Bird/\xff\n")
    with pytest.raises(GanforgeError, match=r"filenames\.txt: not valid UTF-8"):
        load_captions(str(root), size=8)


# ---- config -----------------------------------------------------------------------------------------------------

BAD_SETS = {
    "unknown key": ("bach_size=8", "unknown key 'bach_size'; did you mean batch_size?"),
    "no '='": ("lr_g", "--set 'lr_g': expected key=value"),
    "empty key": ("=3", "unknown key ''"),
    "int from text": ("batch_size=abc", "--set batch_size='abc': expected int"),
    "int from a float": ("batch_size=1e3", "--set batch_size='1e3': expected int"),
    "huge int": ("seed=" + "9" * 30, "--set seed='9{30}': expected int"),
    "float cut short": ("lr_g=1e", "--set lr_g='1e': expected float"),
    "float from a list": ("ema_decay=[1]", r"--set ema_decay='\[1\]': expected float"),
    "nan": ("lr_g=nan", "--set lr_g='nan': expected float \\(a finite number\\)"),
    "inf": ("lr_g=inf", "--set lr_g='inf': expected float \\(a finite number\\)"),
    "-inf budget": ("minutes=-inf", "--set minutes='-inf': expected float"),
    "bool from text": ("tensorboard=maybe", "--set tensorboard='maybe': expected bool"),
    "batch_size=0": ("batch_size=0", "^batch_size=0: must be at least 1"),
    "negative lr": ("lr_g=-1", "^lr_g=-1.0: must be positive"),
    "beta1=1.5": ("beta1=1.5", r"^beta1=1.5: must be in \[0, 1\)"),
    "image_size=33": ("image_size=33", "^image_size=33: --model dcgan draws 28, 32, 56, 64, 128, 256 pixel images"),
    "n_critic=0": ("n_critic=0", "^n_critic=0: must be at least 1"),
}


@pytest.mark.parametrize("kind", BAD_SETS)
def test_bad_set_values_name_the_key_and_value(kind):
    pair, message = BAD_SETS[kind]
    with pytest.raises(GanforgeError, match=message):
        make_config(pairs=[pair])


@pytest.mark.parametrize("kind", BAD_SETS)
def test_cli_exits_2_with_the_message_and_no_traceback(tmp_path, capsys, kind):
    pair, message = BAD_SETS[kind]
    assert cli.main(["train", "--out", str(tmp_path), "--steps", "1", "--set", pair]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ganforge train: error: ") and "Traceback" not in err
    assert re.search(message.removeprefix("^"), err.removeprefix("ganforge train: error: "), re.MULTILINE)
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_a_key_given_twice_the_last_wins():
    assert make_config(pairs=["batch_size=8", "batch_size=16"]).batch_size == 16


def test_none_is_a_choice_of_d_norm_not_its_default():
    assert make_config(pairs=["d_norm=none"]).d_norm == "none"  # not the derived default (batch)
    assert make_config(pairs=["d_norm="]).d_norm == "batch"
    assert make_config(pairs=["ema_decay=none"]).ema_decay is None


@pytest.mark.parametrize("values,message", [
    ([], "must be a JSON object"), ({"batch_size": "8"}, "config batch_size='8': expected int"),
    ({"batch_size": None}, "config batch_size=None: expected int"), ({"steps": True}, "config steps=True"),
    ({"lr_g": float("inf")}, "config lr_g=inf: expected float"), ({"model": 3}, "config model=3: expected str"),
    ({"image_size": 64.0}, "config image_size=64.0: expected int"), ({"bogus": 1}, "unknown config key"),
])
def test_config_dicts_are_type_checked(values, message):
    with pytest.raises(GanforgeError, match=message):
        TrainConfig.from_dict(values)


def test_config_dicts_round_trip():
    cfg = tiny_config(epochs=2, lr_g=1e-3)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert apply_overrides(TrainConfig(), ["epochs=1"]).epochs == 1.0
