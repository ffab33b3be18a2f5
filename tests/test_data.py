import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import skip_or_fail
from PIL import Image

from ganforge.data import fit, load_data, to_float, to_uint8
from ganforge.data import folder as folder_module
from ganforge.data.idx import read_idx
from ganforge.errors import GanforgeError


def test_digits_are_the_bundled_mnist_digits():
    data = load_data("digits")
    assert data.images.shape == (10_000, 1, 28, 28) and data.images.dtype == torch.uint8
    counts = torch.bincount(data.labels, minlength=10)
    assert counts.sum() == 10_000 and counts.min() > 800  # every class is there
    assert data.images.float().mean().item() == pytest.approx(33.3, abs=3)  # MNIST's mean pixel is ~33
    assert data.images.max() == 255 and data.images.min() == 0


@pytest.mark.parametrize("size,channels", [(32, 1), (64, 3), (28, 3)])
def test_digits_fit_any_model_size(size, channels):
    data = load_data("digits", size, channels)
    assert data.images.shape == (10_000, channels, size, size)
    if channels == 3:
        assert torch.equal(data.images[:, 0], data.images[:, 2])  # gray stays gray


def test_float_conversion_round_trips():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    f = to_float(x)
    assert f.min() == -1 and f.max() == 1
    assert torch.equal(to_uint8(f), x)


def test_fit_to_gray_uses_luma():
    red = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    red[:, 0] = 255
    assert fit(red, 4, 1).unique().tolist() == [76]  # 0.299 * 255


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_from_data_dir(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    ext = ".gz" if compress else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", images, compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", labels, compress)
    data = load_data("mnist", data_dir=str(tmp_path))
    assert data.images.shape == (7, 1, 28, 28)
    assert np.array_equal(data.images[:, 0].numpy(), images)
    assert data.labels.tolist() == list(range(7))


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    _write_idx(path, np.zeros((5, 28, 28)), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(GanforgeError, match="truncated"):
        read_idx(path)


def test_missing_mnist_lists_where_it_looked(tmp_path):
    with pytest.raises(GanforgeError) as err:
        load_data("mnist", data_dir=str(tmp_path / "nowhere"))
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "--download" in message and "train-images-idx3-ubyte" in message


def test_fashion_mnist_from_the_debian_package():
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        skip_or_fail("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    data = load_data("fashion-mnist")
    assert data.images.shape == (60_000, 1, 28, 28)
    assert torch.bincount(data.labels).tolist() == [6000] * 10
    assert data.classes[9] == "Ankle boot"
    assert len(load_data("fashion-mnist", split="test")) == 10_000


def _make_folder(root: Path) -> None:
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "deep").mkdir(parents=True)
    Image.new("RGB", (80, 60), (200, 10, 10)).save(root / "cats" / "red.jpg")
    Image.new("L", (64, 64), 128).save(root / "cats" / "gray.png")
    rgba = Image.new("RGBA", (40, 40), (0, 0, 255, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 40))  # left half transparent
    rgba.save(root / "dogs" / "alpha.png")
    Image.new("P", (30, 50)).save(root / "dogs" / "deep" / "palette.bmp")
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "notes.txt").write_text("not an image")


def test_folder_of_mixed_images(tmp_path, capsys):
    _make_folder(tmp_path / "imgs")
    data = load_data(f"folder:{tmp_path / 'imgs'}", 32, 3, folder_labels=True)
    assert data.images.shape == (4, 3, 32, 32)
    assert data.classes == ["cats", "dogs"]
    assert sorted(data.labels.tolist()) == [0, 0, 1, 1]
    assert len(data.skipped) == 1 and "broken.png" in data.skipped[0]
    assert "skipped 1 of 5" in capsys.readouterr().err
    red = data.images[data.labels == 0][0]  # files are sorted: cats/gray.png, cats/red.jpg
    assert red[:, 16, 16].tolist() == [128, 128, 128]
    assert data.images[data.labels == 0][1][:, 16, 16].tolist() == pytest.approx([200, 10, 10], abs=3)
    assert data.images[2][:, 16, 4].tolist() == [255, 255, 255]  # transparent -> white
    assert data.images[2][:, 16, 28].tolist() == [0, 0, 255]


def test_folder_grayscale_and_cache(tmp_path, monkeypatch):
    _make_folder(tmp_path / "imgs")
    first = load_data(f"folder:{tmp_path / 'imgs'}", 28, 1)
    assert first.images.shape == (4, 1, 28, 28) and first.labels is None

    def no_decoding(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(folder_module, "decode", no_decoding)
    again = load_data(f"folder:{tmp_path / 'imgs'}", 28, 1)
    assert torch.equal(first.images[:], again.images[:]) and again.skipped == first.skipped


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanforgeError, match="no images found"):
        load_data(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(GanforgeError, match="no such folder"):
        load_data(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(GanforgeError, match="none of the 1 image"):
        load_data(f"folder:{tmp_path / 'bad'}")


def test_folder_labels_need_subfolders(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(GanforgeError, match="subfolder"):
        load_data(f"folder:{tmp_path}", folder_labels=True)


def test_download_uses_torchvision_and_then_finds_the_files(tmp_path, monkeypatch):
    """--download: torchvision's downloader fills DIR/MNIST/raw, where the loader then looks."""
    import torchvision

    calls = []

    class FakeMNIST:  # stands in for the network: writes what torchvision's downloader would
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            prefix = "train" if train else "t10k"
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", np.zeros((3, 28, 28)), compress=False)
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.array([1, 2, 3]), compress=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    data = load_data("mnist", data_dir=str(tmp_path), download=True)
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert data.labels.tolist() == [1, 2, 3]


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(GanforgeError, match="download failed"):
        load_data("fashion-mnist", data_dir=str(tmp_path), download=True)
