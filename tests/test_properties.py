"""Property-based tests (hypothesis): whatever the input, the config parser, the caption reader and the image
loader either return a valid result or raise their documented error, never another exception and never hang.

Examples per property are kept small (EXAMPLES) for a slow shared CPU; the database is off so that nothing is
written into the repository, and derandomize makes every run try the same examples.
"""

import io
import json
import math
import string
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from ganforge.config import TrainConfig, apply_overrides, make_config
from ganforge.data import ImageData
from ganforge.data.captions import MAX_CAPTION, load_captions
from ganforge.data.folder import DECODE_ERRORS, decode, load_folder
from ganforge.errors import GanforgeError

EXAMPLES = {"config": 100, "config_dict": 100, "captions_bytes": 60, "captions_json": 60, "decode": 100,
            "folder": 30}
SLOW = 20  # seconds: one example taking longer counts as a hang


def _settings(name: str):
    return settings(max_examples=EXAMPLES[name], deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


# ---- the config parser ------------------------------------------------------------------------------------------

FIELD_NAMES = [f.name for f in fields(TrainConfig)]
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.sampled_from(FIELD_NAMES).map(lambda k: k.replace("_", "-")),
                 st.text(max_size=12))
values = st.one_of(
    st.text(max_size=20),
    st.integers(-10**15, 10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["none", "None", "null", "", "true", "false", "yes", "off", "nan", "inf", "-inf", "1e", "0x10",
                     "28", "32", "64", "0", "-1", "1.5", "0.5", "wgan-gp", "hinge", "cgan", "folder:/nowhere",
                     "color,translation", "cuda:0", "bf16", "layer"]),
)
DEFAULTS = TrainConfig().to_dict()
# a field with its default or a nearby value: most of these are valid, so that valid configs get tested too
plausible = st.sampled_from(FIELD_NAMES).flatmap(lambda k: st.sampled_from(
    [f"{k}={v}" for v in (DEFAULTS[k], "none", "1", "0.9", "true", "28")]))
defaults = st.sampled_from([f"{k}={v}" for k, v in DEFAULTS.items()])
pairs = st.one_of(defaults, plausible, st.tuples(keys, values).map("=".join), st.text(max_size=20))


@_settings("config")
@given(st.lists(pairs, max_size=3), st.sampled_from(["cpu", "gpu"]))
def test_config_parser_returns_a_valid_config_or_a_ganforge_error(pair_list, preset):
    try:
        cfg = make_config(preset, pairs=pair_list)
    except GanforgeError as e:
        assert str(e)
        event("GanforgeError")
        return
    event("valid config")
    assert isinstance(cfg, TrainConfig)
    cfg.validate()  # passes again
    for key in ("lr_g", "lr_d", "beta1", "beta2", "clip", "gp_weight", "kl_weight", "r1_gamma"):
        assert math.isfinite(getattr(cfg, key))


json_values = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=10),
                        st.lists(st.integers(), max_size=2), st.sampled_from(["dcgan", "hinge", "none", "64"]))


@_settings("config_dict")
@given(st.lists(st.one_of(st.sampled_from(list(DEFAULTS.items())),
                          st.tuples(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), json_values)),
                max_size=5).map(dict))
def test_config_dicts_give_a_valid_config_or_a_ganforge_error(values):
    try:
        cfg = TrainConfig.from_dict(values)
    except GanforgeError:
        event("GanforgeError")
        return
    event("valid config")
    cfg.validate()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # what it wrote, it reads back
    assert apply_overrides(cfg, []) == cfg


# ---- the caption reader -----------------------------------------------------------------------------------------


def _check_captions(root: Path) -> None:
    start = time.perf_counter()
    try:
        data = load_captions(str(root), size=8)
    except GanforgeError as e:
        assert str(e)
        event("GanforgeError")
    else:
        event("captioned images")
        assert isinstance(data, ImageData) and len(data.captions) == len(data) >= 1
        for captions in data.captions:
            assert captions
            for caption in captions:
                assert isinstance(caption, str) and caption == caption.strip() and 0 < len(caption) <= MAX_CAPTION
                caption.encode("utf-8")  # valid Unicode: no lone surrogates
    assert time.perf_counter() - start < SLOW


def _captions_folder(tmp: str, jsonl: bytes) -> Path:
    root = Path(tmp)
    Image.new("RGB", (12, 10), (30, 60, 90)).save(root / "a.png")
    (root / "b.png").write_bytes(b"not an image")
    (root / "captions.jsonl").write_bytes(jsonl)
    return root


@_settings("captions_bytes")
@given(st.binary(max_size=3000), st.booleans())
def test_caption_reader_on_random_bytes(blob, after_a_good_line):
    """Random bytes as captions.jsonl, alone or after one good line."""
    good = b'{"image": "a.png", "captions": ["a caption"]}\n' if after_a_good_line else b""
    with tempfile.TemporaryDirectory() as tmp:
        _check_captions(_captions_folder(tmp, good + blob))


captions = st.lists(st.one_of(st.text(max_size=30), st.text(string.whitespace, max_size=5),
                              st.text(min_size=990, max_size=1010, alphabet="ab "), st.integers()), max_size=4)
entries = st.one_of(
    st.fixed_dictionaries({"image": st.sampled_from(["a.png", "b.png"]),
                           "captions": st.lists(st.text(max_size=30), min_size=1, max_size=3)}),
    st.fixed_dictionaries({"image": st.sampled_from(["a.png", "b.png", "../a.png", "/a.png", "", "missing.png",
                                                     ".", "a.png/"]) | st.text(max_size=10),
                           "captions": captions | st.text(max_size=10)}),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=2),
    st.lists(st.text(max_size=5), max_size=2), st.none(), st.integers(),
)
lines = st.one_of(entries.map(lambda e: json.dumps(e).encode()), st.binary(max_size=60),
                  entries.map(lambda e: json.dumps(e, ensure_ascii=False).encode("utf-8", "surrogatepass")))


@_settings("captions_json")
@given(st.lists(lines, min_size=1, max_size=6), st.sampled_from([b"\n", b"\r\n"]))
def test_caption_reader_on_random_json_lines(line_list, newline):
    with tempfile.TemporaryDirectory() as tmp:
        _check_captions(_captions_folder(tmp, newline.join(line_list)))


# ---- the image loader -------------------------------------------------------------------------------------------


def _encoded(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


SEEDS = [_encoded("PNG", "RGB"), _encoded("PNG", "RGBA"), _encoded("PNG", "P"), _encoded("PNG", "L"),
         _encoded("JPEG", "RGB"), _encoded("JPEG", "L"), _encoded("BMP", "RGB"), _encoded("WEBP", "RGB")]


@st.composite
def image_bytes(draw) -> bytes:
    """Random bytes, or a real small image with a few bytes changed, cut short or both."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=2000))
    blob = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        blob[draw(st.integers(0, len(blob) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        blob = blob[:draw(st.integers(0, len(blob)))]
    return bytes(blob)


@_settings("decode")
@given(image_bytes(), st.sampled_from([(8, 1), (28, 3)]))
def test_decode_returns_an_image_or_a_documented_error(blob, shape):
    size, channels = shape
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        path.write_bytes(blob)
        start = time.perf_counter()
        try:
            array = decode(path, size, channels)
        except DECODE_ERRORS as e:
            event(f"raised {type(e).__name__}")
        else:
            event("decoded")
            assert array.shape == (channels, size, size) and array.dtype == np.uint8
        assert time.perf_counter() - start < SLOW


@_settings("folder")
@given(st.lists(image_bytes(), min_size=1, max_size=4))
def test_load_folder_returns_images_or_a_ganforge_error(blobs):
    with tempfile.TemporaryDirectory() as tmp:
        for i, blob in enumerate(blobs):
            (Path(tmp) / f"{i}.png").write_bytes(blob)
        try:
            data = load_folder(tmp, 8, 3)
        except GanforgeError as e:
            assert "none of the" in str(e)
            event("GanforgeError")
            return
        event(f"{len(data)} of {len(blobs)} decoded")
        assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (3, 8, 8)
        assert len(data) + len(data.skipped) == len(blobs)
