"""The shape check of the data seam: a data source defined here, in the test file (a .npy array of images with
labels, spelt `test-array:FILE`), is validated, listed in the help, trains, prepares, gives its native shape
to `ganforge eval --samples` and is measured, without any library file naming it."""

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image

from ganforge import train
from ganforge.cli import build_parser, main
from ganforge.config import TrainConfig
from ganforge.data import SOURCES, ImageData, Source, find_source, load_data, prepare_source
from ganforge.data.prepared import load_prepared
from ganforge.errors import GanforgeError


class Array(Source):
    """uint8 images (N, C, H, W) in FILE.npy, labelled by their brightest half (0: top, 1: bottom)."""

    takes_path = True
    carries = frozenset({"labels"})

    @classmethod
    def native_shape(cls, path):
        _, channels, size, _ = np.load(path, mmap_mode="r").shape
        return size, channels

    @classmethod
    def read(cls, path, options):
        images = torch.from_numpy(np.load(path))
        half = images.shape[2] // 2
        labels = (images[:, :, half:].float().mean((1, 2, 3)) > images[:, :, :half].float().mean((1, 2, 3))).long()
        return ImageData(images, labels, ["top", "bottom"])


@pytest.fixture(autouse=True, scope="module")
def registered():
    SOURCES.register("test-array", "a test source: images in a .npy file")(Array)
    yield
    SOURCES.unregister("test-array")


@pytest.fixture
def array(tmp_path):
    """300 colour 20-px images, a bright bar in the top or the bottom half."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, (300, 3, 20, 20), dtype=np.uint8)
    for i in range(300):
        rows = slice(2, 8) if i % 2 else slice(12, 18)
        images[i, :, rows] = 230
    np.save(tmp_path / "bars.npy", images)
    return f"test-array:{tmp_path / 'bars.npy'}"


def test_the_registry_validates_and_lists_a_source_defined_here(array):
    assert find_source(array)[0] is Array and TrainConfig(data=array).validate().data == array
    with pytest.raises(GanforgeError, match="names no PATH"):
        TrainConfig(data="test-array:").validate()
    with pytest.raises(GanforgeError, match=r"unknown data.*test-array:PATH"):
        TrainConfig(data="test-array").validate()  # a path source without its path
    assert "test-array:PATH: a test source: images in a .npy file" in _train_help()


def _train_help() -> str:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    return " ".join(commands.choices["train"].format_help().split())


def test_a_source_defined_here_loads_trains_and_prepares(array, tmp_path):
    data = load_data(array, 28, 1)  # brought to the model's size and channels by the base class
    assert data.images.shape == (300, 1, 28, 28) and data.labels.tolist()[:4] == [1, 0, 1, 0]
    run = train(tiny_config(data=array, image_size=28, steps=3), runs_dir=tmp_path / "runs", progress=False)
    assert run.name.startswith("00000-dcgan-test-array") and (run / "samples" / "epoch_0000.png").is_file()
    prepared = prepare_source(array, tmp_path / "prepared", progress=False)  # listed from memory, at its own size
    assert load_prepared(str(prepared)).images.shape == (300, 3, 20, 20)


def test_eval_brings_a_folder_of_samples_to_the_sources_native_shape(array, tmp_path, capsys):
    samples = tmp_path / "samples"
    samples.mkdir()
    images = np.load(array.removeprefix("test-array:"))
    for i in range(40):  # written larger than the data: eval must bring them back to 20 px colour
        Image.fromarray(images[i].transpose(1, 2, 0)).resize((40, 40)).save(samples / f"{i:03d}.png")
    assert main(["eval", "--samples", str(samples), "--data", array, "--extractor", "pixels"]) == 0
    assert "40 fake vs 40 real" in capsys.readouterr().out
    assert Array.native_shape(array.removeprefix("test-array:")) == (20, 3)
