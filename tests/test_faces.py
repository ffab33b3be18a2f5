from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.data import ImageData, load_data
from ganforge.data import faces as faces_module
from ganforge.data import folder as folder_module
from ganforge.data.faces import ATTRIBUTES, draw_face, draw_faces, face_mask
from ganforge.errors import GanforgeError
from ganforge.io import cache_dir
from ganforge.metrics.functions import group_spread

BINARY = ATTRIBUTES[:8]


def test_faces_are_deterministic_by_seed():
    images, attributes = draw_faces(48, seed=3)
    assert images.shape == (48, 3, 64, 64) and images.dtype == torch.uint8
    assert attributes.shape == (48, len(ATTRIBUTES)) and attributes.dtype == torch.bool
    again, same_attributes = draw_faces(48, seed=3)
    assert torch.equal(images, again) and torch.equal(attributes, same_attributes)
    other, _ = draw_faces(48, seed=4)
    assert (images != other).flatten(1).any(1).all()  # every face differs
    assert torch.equal(draw_faces(8, seed=3)[0], images[:8])  # face i does not depend on the count


def test_faces_are_cached_and_fit_any_model_size(monkeypatch):
    monkeypatch.setattr(faces_module, "COUNT", 96)
    first = load_data("faces")
    assert first.images.shape == (96, 3, 64, 64) and first.labels is None
    assert first.attribute_names == ATTRIBUTES and first.attributes.shape == (96, len(ATTRIBUTES))
    assert torch.equal(first.images, draw_faces(96, seed=0)[0])
    folder = cache_dir() / "faces"
    assert (folder / f"faces-v{faces_module.VERSION}-96-seed0-64px.safetensors").is_file()
    assert not list(folder.glob("*.tmp"))  # written atomically, no temp file left behind

    def no_drawing(*args, **kwargs):
        raise AssertionError("drew the faces again despite the cache")

    monkeypatch.setattr(faces_module, "draw_faces", no_drawing)
    again = load_data("faces")
    assert torch.equal(again.images, first.images) and torch.equal(again.attributes, first.attributes)
    for size, channels in [(32, 3), (28, 1), (64, 1)]:
        data = load_data("faces", size, channels)
        assert data.images.shape == (96, channels, size, size) and torch.equal(data.attributes, first.attributes)


def test_a_damaged_faces_cache_is_reported_and_drawn_again(monkeypatch, capsys):
    monkeypatch.setattr(faces_module, "COUNT", 12)
    first = load_data("faces")
    cache = cache_dir() / "faces" / f"faces-v{faces_module.VERSION}-12-seed0-64px.safetensors"
    cache.write_bytes(cache.read_bytes()[:1000])
    again = load_data("faces")
    assert torch.equal(again.images, first.images) and "damaged cache file" in capsys.readouterr().err
    assert load_data("faces").images.shape == (12, 3, 64, 64) and "damaged" not in capsys.readouterr().err


def test_attributes_are_balanced_and_consistent():
    _, attributes = draw_faces(500, seed=1)
    share = dict(zip(ATTRIBUTES, attributes.float().mean(0).tolist()))
    for name in BINARY:
        assert 0.2 <= share[name] <= 0.6, (name, share[name])
    for group, low, high in [("hair_", 0.12, 0.3), ("skin_", 0.22, 0.45)]:
        columns = [i for i, name in enumerate(ATTRIBUTES) if name.startswith(group)]
        assert (attributes[:, columns].sum(1) == 1).all()  # one-hot
        assert all(low <= share[ATTRIBUTES[i]] <= high for i in columns), share
    a = {name: attributes[:, i] for i, name in enumerate(ATTRIBUTES)}
    assert not (a["bald"] & a["long_hair"]).any() and not (a["bald"] & a["hat"]).any()
    assert not (a["sunglasses"] & ~a["glasses"]).any()
    # The DCGAN paper's arithmetic needs smiling, glasses, beard and long hair to vary independently.
    arithmetic = torch.stack([a["smiling"], a["glasses"], a["beard"], a["long_hair"]], 1)
    assert len({tuple(row) for row in arithmetic.tolist()}) == 16


def test_fixed_attributes_are_kept_and_consistent():
    _, a = draw_face(np.random.default_rng(0), {"bald": True, "hair_red": True, "smiling": False})
    assert a["bald"] and not a["hat"] and not a["long_hair"] and a["hair_red"] and not a["smiling"]
    assert sum(a[name] for name in ATTRIBUTES if name.startswith("hair_")) == 1
    _, a = draw_face(np.random.default_rng(0), {"sunglasses": True})
    assert a["sunglasses"] and a["glasses"]
    for bad in [{"bald": True, "long_hair": True}, {"hat": True, "bald": True}, {"glasses": False, "sunglasses": True},
                {"hair_red": True, "hair_gray": True}, {"freckles": True}]:
        with pytest.raises(ValueError):
            draw_face(np.random.default_rng(0), bad)


def _changed(seed: int, before: dict, after: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same face drawn twice, with different attributes: both images and where they differ."""
    one, _ = draw_face(np.random.default_rng(seed), before)
    two, _ = draw_face(np.random.default_rng(seed), after)
    return one, two, (one != two).any(-1)


@pytest.mark.parametrize("seed", range(12))
def test_each_attribute_changes_its_own_part_of_the_face(seed):
    base = {"hat": False, "bald": False, "long_hair": False, "glasses": False, "sunglasses": False, "smiling": False,
            "beard": False, "moustache": False}
    _, _, glasses = _changed(seed, base, base | {"glasses": True})
    _, dark, sunglasses = _changed(seed, base, base | {"glasses": True, "sunglasses": True})
    _, _, smiling = _changed(seed, base, base | {"smiling": True})
    _, _, hat = _changed(seed, base, base | {"hat": True})
    _, _, bald = _changed(seed, base, base | {"bald": True})
    _, _, beard = _changed(seed, base, base | {"beard": True})
    rows = {name: np.nonzero(mask.any(1))[0] for name, mask in
            [("glasses", glasses), ("smiling", smiling), ("hat", hat), ("bald", bald), ("beard", beard)]}
    assert all(len(r) for r in rows.values())  # every attribute shows
    eyes = rows["glasses"].mean()
    assert np.ptp(rows["glasses"]) < 16  # a band across the eyes
    assert rows["smiling"].min() > rows["glasses"].max() and np.ptp(rows["smiling"]) < 12  # below them, small
    assert np.ptp(np.nonzero(smiling.any(0))[0]) < 24
    assert rows["hat"].max() < eyes and rows["hat"].min() < rows["bald"].mean()  # above the forehead
    assert rows["bald"].mean() < eyes and rows["bald"].max() < rows["smiling"].min()  # the top of the head
    assert rows["beard"].mean() > rows["smiling"].min()  # the jaw and chin
    # sunglasses: the same band, with dark lenses where the clear glasses show the eyes
    _, clear, _ = _changed(seed, base, base | {"glasses": True})
    assert abs(np.nonzero(sunglasses.any(1))[0].mean() - eyes) < 3
    dark_pixels = (dark[sunglasses].max(-1) < 70).sum()
    assert dark_pixels >= 20 and dark_pixels > (clear[sunglasses].max(-1) < 70).sum() + 8


def test_the_face_mask_holds_face_and_never_background_so_a_background_alone_does_not_count_as_variety():
    images, _ = draw_faces(300, seed=3)
    inside = face_mask(64)
    background = images[:, :, :1, :1].int()  # a corner is always background
    near = (images.int() - background).abs().sum(1) < 20  # pixels of about the background's colour
    assert near[:, inside].sum() == 0 and near[:, ~inside].float().mean() > 0.5 and inside.float().mean() > 0.05
    one = images[:1].repeat(8, 1, 1, 1)  # one face on eight backgrounds
    colours = torch.randint(0, 256, (8, 3, 1, 1), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    recoloured = torch.where(near[:1, None].expand(8, 3, -1, -1), colours.expand_as(one), one)
    assert group_spread(recoloured.float()[None]) > 0  # all pixels: the backgrounds differ
    assert group_spread(recoloured.float()[..., inside][None]) == 0  # inside the mask: one face
    assert group_spread(images[:8].float()[..., inside][None]) > 0  # eight faces
    assert face_mask(32).sum() < inside.sum() < face_mask(128).sum()


def test_image_data_checks_attribute_length():
    with pytest.raises(ValueError, match="attributes"):
        ImageData(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), attributes=torch.zeros(2, 5, dtype=torch.bool))


CELEBA_NAMES = ["5_o_Clock_Shadow", "Eyeglasses", "Smiling"]


def _make_celeba(root: Path, count: int = 4) -> Path:
    """A tiny CelebA in torchvision's layout; image i has attribute k when bit k of i is set."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    lines = [str(count), " ".join(CELEBA_NAMES)]
    for i in range(count):
        name = f"{i + 1:06d}.jpg"
        Image.new("RGB", (36, 44), (60 * i, 100, 200)).save(folder / "img_align_celeba" / name)
        lines.append(name + " " + " ".join(f"{1 if i >> k & 1 else -1:2d}" for k in range(len(CELEBA_NAMES))))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return folder


def _expected(indices) -> torch.Tensor:
    return torch.tensor([[bool(i >> k & 1) for k in range(len(CELEBA_NAMES))] for i in indices])


def test_celeba_layout(tmp_path, monkeypatch):
    folder = _make_celeba(tmp_path)
    data = load_data(f"celeba:{tmp_path}", 32)
    assert data.images.shape == (4, 3, 32, 32) and data.labels is None and data.skipped == []
    assert data.attribute_names == CELEBA_NAMES and torch.equal(data.attributes, _expected(range(4)))
    assert data.images[3][:, 16, 16].tolist() == pytest.approx([180, 100, 200], abs=6)

    def no_decoding(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(folder_module, "decode", no_decoding)
    again = load_data(f"celeba:{folder}", 32)  # the celeba folder itself also works
    assert torch.equal(again.images[:], data.images[:]) and torch.equal(again.attributes, data.attributes)


def test_celeba_skips_missing_images(tmp_path, capsys):
    folder = _make_celeba(tmp_path, count=5)
    (folder / "img_align_celeba" / "000002.jpg").unlink()
    data = load_data(f"celeba:{tmp_path}", 28, 1)
    assert data.images.shape == (4, 1, 28, 28)
    assert torch.equal(data.attributes, _expected([0, 2, 3, 4]))  # rows stay with their images
    assert len(data.skipped) == 1 and "000002.jpg (missing)" in data.skipped[0]
    assert "skipped 1 of 5" in capsys.readouterr().err


def test_celeba_errors_say_what_to_fix(tmp_path):
    with pytest.raises(GanforgeError, match=r"list_attr_celeba.txt.*img_align_celeba"):
        load_data(f"celeba:{tmp_path}")
    folder = _make_celeba(tmp_path)
    attribute_file = folder / "list_attr_celeba.txt"
    lines = attribute_file.read_text().splitlines()
    attribute_file.write_text("\n".join(lines[:4] + ["000003.jpg 1 -1"] + lines[5:]) + "\n")
    with pytest.raises(GanforgeError, match=r"list_attr_celeba.txt, line 5: expected a file name and 3 values"):
        load_data(f"celeba:{tmp_path}")
    attribute_file.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(GanforgeError, match="says 4 images, but 3 are listed"):
        load_data(f"celeba:{tmp_path}")
    for image in (folder / "img_align_celeba").iterdir():
        image.unlink()
    attribute_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(GanforgeError, match="none of the 4 images"):
        load_data(f"celeba:{tmp_path}")
