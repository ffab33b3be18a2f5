import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ganforge.data import load_data, to_float
from ganforge.errors import GanforgeError
from ganforge.io import sha256_file
from ganforge.metrics import ssl
from ganforge.metrics.features import extract, get_extractor
from ganforge.metrics.ssl import (
    FEATURES,
    NOISE,
    SelfSupervised,
    SSLEncoder,
    add_noise,
    augment,
    color_jitter,
    default_steps,
    load_ssl,
    nt_xent,
    random_resized_crop,
    ssl_path,
    train_ssl,
)

STEPS, LIMIT = 4, 200  # a few steps on 200 digits: about a second


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny extractor of the digits, trained once for the module."""
    root = tmp_path_factory.mktemp("ssl")
    path = train_ssl("digits", root, steps=STEPS, limit=LIMIT, progress=False)
    return root, path, json.loads(path.with_suffix(".json").read_text())


def copy_cache(root, to):
    shutil.copytree(root / "extractors", to / "extractors")
    return to


def test_training_writes_weights_and_json_with_their_sha(trained):
    root, path, meta = trained
    assert path == ssl_path("digits", root) == root / "extractors" / "ssl-digits.safetensors"
    assert meta["sha256"] == sha256_file(path)
    assert meta["data"] == "digits" and meta["steps"] == STEPS and meta["images"] == LIMIT
    assert meta["channels"] == 1 and meta["image_size"] == 28 and meta["work_size"] == ssl.WORK_SIZE
    assert math.isfinite(meta["final_loss"]) and meta["seconds"] >= 0
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_training_is_deterministic_and_other_steps_change_the_weights(tmp_path, trained):
    _, _, meta = trained
    torch.manual_seed(123)
    state = torch.get_rng_state()
    again = train_ssl("digits", tmp_path / "a", steps=STEPS, limit=LIMIT, progress=False)
    assert json.loads(again.with_suffix(".json").read_text())["sha256"] == meta["sha256"]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
    other = train_ssl("digits", tmp_path / "b", steps=STEPS + 1, limit=LIMIT, progress=False)
    assert json.loads(other.with_suffix(".json").read_text())["sha256"] != meta["sha256"]


def test_reloaded_extractor_gives_identical_features(trained):
    root, _, meta = trained
    images = load_data("digits").images[:300]
    first = SelfSupervised("digits", root, train_if_missing=False)
    second = get_extractor("ssl:digits", root)
    assert first.name == second.name == "ssl:digits" and first.classes is None
    assert first.sha256 == second.sha256 == meta["sha256"]
    a, probs = extract(first, images, batch=64)
    b, _ = extract(second, images, batch=300)
    assert a.shape == (300, FEATURES) and probs is None
    assert torch.allclose(a, b, atol=1e-5)
    assert a.std(0).mean() > 0  # features that vary between images
    gray = to_float(images[:4])  # RGB samples of gray data are read as their luma: the same features
    assert torch.allclose(first.features(gray.expand(-1, 3, -1, -1)), first.features(gray), atol=1e-5)


def test_missing_extractor_says_how_to_train_it(tmp_path):
    with pytest.raises(GanforgeError, match="no self-supervised extractor for digits.*train_ssl"):
        load_ssl("digits", tmp_path)
    with pytest.raises(GanforgeError, match="no self-supervised extractor"):
        SelfSupervised("digits", tmp_path, train_if_missing=False)


def test_missing_extractor_is_trained_on_first_use(tmp_path, trained, capsys):
    extractor = SelfSupervised("digits", tmp_path, steps=STEPS, limit=LIMIT)
    assert "training it now (once)" in capsys.readouterr().err
    assert extractor.sha256 == trained[2]["sha256"] and ssl_path("digits", tmp_path).is_file()


def test_damaged_weights_are_detected_and_rebuilt(tmp_path, trained, capsys):
    root = copy_cache(trained[0], tmp_path)
    path = ssl_path("digits", root)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(GanforgeError, match=rf"{path}: damaged.*checksum"):
        load_ssl("digits", root)
    with pytest.raises(GanforgeError, match="damaged"):
        SelfSupervised("digits", root, train_if_missing=False)
    extractor = SelfSupervised("digits", root, steps=STEPS, limit=LIMIT)
    err = capsys.readouterr().err
    assert f"{path}: damaged" in err and "training it again" in err
    assert extractor.sha256 == trained[2]["sha256"] == sha256_file(path)  # rebuilt, the same weights
    load_ssl("digits", root)


@pytest.mark.parametrize("content", [b'{"sha256": "00', b"\xff\xfe", b"[1, 2]", b'{"sha256": "ab", "channels": 2}'])
def test_damaged_json_is_detected(tmp_path, trained, content):
    root = copy_cache(trained[0], tmp_path)
    meta_path = ssl_path("digits", root).with_suffix(".json")
    meta_path.write_bytes(content)
    with pytest.raises(GanforgeError, match=rf"{meta_path}: damaged"):
        load_ssl("digits", root)


def test_damaged_json_is_rebuilt(tmp_path, trained, capsys):
    root = copy_cache(trained[0], tmp_path)
    meta_path = ssl_path("digits", root).with_suffix(".json")
    meta_path.write_text("{")
    extractor = SelfSupervised("digits", root, steps=STEPS, limit=LIMIT)
    assert f"{meta_path}: damaged" in capsys.readouterr().err
    assert extractor.sha256 == trained[2]["sha256"]
    assert json.loads(meta_path.read_text())["sha256"] == trained[2]["sha256"]


def test_json_with_another_sha_is_damaged(tmp_path, trained):
    root = copy_cache(trained[0], tmp_path)
    meta_path = ssl_path("digits", root).with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "sha256": "0" * 64}))
    with pytest.raises(GanforgeError, match="damaged"):
        load_ssl("digits", root)


class OnlyIndexing:
    """What a memory-mapped image store offers: images[int tensor], images[a:b], len() and .shape."""

    def __init__(self, images: torch.Tensor):
        self._images = images
        self.shape = images.shape

    def __len__(self):
        return len(self._images)

    def __getitem__(self, index):
        assert isinstance(index, slice) or (torch.is_tensor(index) and index.dtype == torch.int64), index
        return self._images[index].clone()


def test_rgb_data_of_another_size_read_only_by_indexing(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (100, 3, 64, 64), dtype=torch.uint8, generator=gen)
    monkeypatch.setattr(ssl, "load_data", lambda spec, *a, **kw: SimpleNamespace(images=OnlyIndexing(images)))
    path = train_ssl("folder:/some/where", tmp_path, steps=3, progress=False)
    assert path.name == "ssl-folder_some_where.safetensors"
    extractor = SelfSupervised("folder:/some/where", tmp_path, train_if_missing=False)
    assert extractor.meta["channels"] == 3 and extractor.meta["image_size"] == 64
    assert extractor.meta["batch_size"] == extractor.meta["images"] == 100
    features, _ = extract(extractor, images[:10])
    assert features.shape == (10, FEATURES) and torch.isfinite(features).all()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64, 128])
def test_features_shape_for_any_size(channels, size):
    encoder = SSLEncoder(channels).eval()
    with torch.no_grad():
        features = encoder(torch.rand(5, channels, size, size) * 2 - 1)
    assert features.shape == (5, FEATURES) and torch.isfinite(features).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_augmentations_keep_shape_and_range_and_vary(channels):
    x = torch.rand(64, channels, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for f in (random_resized_crop, color_jitter, add_noise, augment):
        a, b = f(x, torch.Generator().manual_seed(0)), f(x, torch.Generator().manual_seed(0))
        c = f(x, torch.Generator().manual_seed(1))
        assert a.shape == x.shape and a.dtype == x.dtype
        assert a.min() >= -1 and a.max() <= 1
        assert torch.equal(a, b)  # seeded
        assert not torch.allclose(a, c) and not torch.allclose(a, x)
        changed = (a - x).flatten(1).abs().amax(1).gt(1e-3).float().mean()
        assert changed > (0.3 if f is add_noise else 0.6)  # most images change (half of them get noise)


def test_augmentations_with_nothing_random_are_the_identity():
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    same = random_resized_crop(x, area=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(same, x, atol=1e-5)
    assert torch.allclose(color_jitter(x, p=0.0, grayscale=0.0), x, atol=1e-5)
    assert torch.equal(add_noise(x, p=0.0), x)
    noisy = add_noise(torch.zeros(400, 1, 32, 32), p=1.0)
    assert 0.8 * NOISE / 2 < noisy.flatten(1).std(1).mean() < 1.2 * NOISE / 2  # std uniform in [0, NOISE]
    gray = color_jitter(x, p=0.0, grayscale=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    flipped = random_resized_crop(x[:1].expand(64, -1, -1, -1), torch.Generator().manual_seed(0), area=(1.0, 1.0),
                                  ratio=(1.0, 1.0))
    mirrored = torch.isclose(flipped, x[:1].flip(-1), atol=1e-5).flatten(1).all(1)
    assert 10 < mirrored.sum() < 54  # about half the images mirrored, the rest unchanged
    assert torch.isclose(flipped[~mirrored], x[:1], atol=1e-5).all()


def test_nt_xent_is_lower_for_matched_pairs():
    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(64, 16, generator=gen)
    z2 = z1 + 0.1 * torch.randn(64, 16, generator=gen)
    matched = nt_xent(z1, z2)
    shuffled = nt_xent(z1, z2[torch.randperm(64, generator=gen)])
    assert matched < 0.5 * shuffled
    assert matched > 0
    same = torch.ones(8, 4)  # every view alike: the partner is one of 15 equals
    assert nt_xent(same, same).item() == pytest.approx(math.log(15), rel=1e-5)


def test_default_steps_scale_with_the_data():
    assert default_steps(60_000) == ssl.MAX_STEPS
    assert default_steps(100) == default_steps(2) == ssl.MIN_STEPS
    assert ssl.MIN_STEPS <= default_steps(10_000) <= ssl.MAX_STEPS
    counts = [50, 200, 1000, 5000, 10_000, 30_000, 60_000, 1_000_000]
    assert [default_steps(n) for n in counts] == sorted(default_steps(n) for n in counts)


def test_too_few_images(tmp_path):
    with pytest.raises(GanforgeError, match="at least 2 images"):
        train_ssl("digits", tmp_path, steps=1, limit=1, progress=False)


@pytest.mark.slow
def test_trained_features_separate_the_digits(tmp_path):
    """Default training on the 10,000 digits, labels unseen: a cosine k-NN on its features, fitted on
    a random 9,000 of them, recognises the other 1,000."""
    data = load_data("digits")
    train_ssl("digits", tmp_path, progress=False)
    extractor = SelfSupervised("digits", tmp_path, train_if_missing=False)
    features = F.normalize(extract(extractor, data.images, batch=1000)[0], dim=1)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    train, test = order[:9000], order[9000:]

    def knn(features):
        neighbours = (features[test] @ features[train].T).topk(10, dim=1).indices
        return (data.labels[train][neighbours].mode(1).values == data.labels[test]).double().mean().item()

    pixels = knn(F.normalize(to_float(data.images).flatten(1), dim=1))  # 0.941: digits are easy for pixels
    accuracy = knn(features)
    print(f"k-NN: features {accuracy:.3f}, pixels {pixels:.3f}")
    # measured: 0.928 trained against 0.941 for pixels; an extractor trained 1 step gets 0.906 (the old bar was 0.9)
    assert accuracy > pixels - 0.025, (accuracy, pixels)
