"""The light model as a family: its sizes, its spec through a checkpoint, its W space for the latent tools, and
bit-exact resume after SIGKILLs with adaptive augmentation on (its p included)."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image
from test_reliability import check_kills

from ganforge import directions, load, train
from ganforge.augment import AdaptiveAugment
from ganforge.checkpoint import load_checkpoint
from ganforge.cli import main
from ganforge.data import load_data
from ganforge.errors import GanforgeError
from ganforge.families import build_generator
from ganforge.families.light import ADA_BELOW
from ganforge.state import TrainState

TINY = {"model": "light", "image_size": 32, "g_width": 4, "d_width": 4, "z_dim": 8, "batch_size": 16, "steps": 4,
        "log_every": 2}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(tiny_config(**TINY), runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_its_spec_goes_through_a_checkpoint_and_rebuilds_the_same_generator(run):
    meta, tensors = load_checkpoint(run)
    spec = meta["model_spec"]
    assert spec == {"model": "light", "image_size": 32, "channels": 1, "z_dim": 8, "spectral_norm": False,
                    "g_width": 4, "d_width": 4, "d_norm": "batch", "map_depth": 2}
    G = build_generator(spec)
    assert sum(p.numel() for p in G.parameters()) == sum(v.numel() for k, v in tensors.items()
                                                         if k.startswith("G/") and "running" not in k
                                                         and "num_batches" not in k)
    sampler = load(run)
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
    images = sampler.draw(z)
    assert images.shape == (5, 1, 32, 32) and torch.equal(images, load(run).draw(z))
    assert not torch.allclose(images[0], images[1])  # the noise matters


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_it_trains_at_every_size_it_declares(tmp_path, size):
    cfg = tiny_config(**TINY | {"image_size": size, "steps": 1, "batch_size": 4, "n_samples": 4, "channels": 3})
    meta, _ = load_checkpoint(train(cfg, runs_dir=tmp_path, progress=False))
    assert meta["model_spec"]["image_size"] == size and meta["step"] == 1
    assert load(tmp_path / next(p.name for p in tmp_path.iterdir())).sample(2).shape == (2, 3, size, size)


def test_sizes_it_does_not_draw_are_clear_errors(tmp_path, capsys):
    with pytest.raises(GanforgeError, match="--model light draws 32, 64, 128, 256 pixel images"):
        tiny_config(model="light", image_size=28)
    assert main(["train", "--model", "light", "--data", "digits", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "digits is 28 px: add --image-size 32" in capsys.readouterr().err
    assert tiny_config(model="dcgan", image_size=256).image_size == 256  # dcgan draws 256 too


def test_directions_and_the_latent_verbs_work_in_its_w_space(run, tmp_path):
    Image.new("L", (40, 40), 200).save(tmp_path / "grey.png")
    sampler = load(run)
    where = sampler.latent()
    assert where.space == "w" and where.length == 8
    # SeFa reads every weight that takes w: the 4x4 projection's rows and each block's style rows
    assert where.weight.shape[0] > sampler.net.synthesis.init.weight.shape[0]
    found = directions.find(sampler, "sefa", k=3)
    shifted = sampler.sample(4, seed=1, shift=found.vector(0) * 4)
    assert not torch.allclose(shifted, sampler.sample(4, seed=1))
    for argv in (["directions", str(run), "--k", "3", "--samples", "2", "--steps", "3", "--out", str(tmp_path / "d.png")],
                 ["interpolate", str(run), "--from", "1", "--to", "2", "--steps", "4", "--out", str(tmp_path / "i.png")],
                 ["arithmetic", str(run), "A - B + C", "--concept", "A=1,2,3", "--concept", "B=4,5,6", "--concept",
                  "C=7,8,9", "--out", str(tmp_path / "a.png"), "--json", str(tmp_path / "a.json")],
                 ["invert", str(run), str(tmp_path / "grey.png"), "--steps", "5", "--restarts", "1", "--out",
                  str(tmp_path / "v.png")]):
        assert main(argv) == 0, argv
        assert (tmp_path / argv[argv.index("--out") + 1].rsplit("/", 1)[1]).stat().st_size > 500
    assert json.loads((tmp_path / "a.json").read_text())["space"] == "w"  # arithmetic and inversion work in w
    assert np.load(tmp_path / "v.npy").shape == (where.length,)


def test_sigkill_at_random_moments_with_adaptive_augmentation_resumes_bit_exact(tmp_path):
    args = ["--model", "light", "--image-size", "32", "--set", "g_width=4", "--set", "d_width=4", "--set", "z_dim=8",
            "--set", "batch_size=32", "--set", "log_every=5", "--set", "n_samples=4", "--set", "checkpoint_every=1",
            "--set", "ada=true", "--quiet"]
    got = check_kills(tmp_path, steps=60, kills=3, seed=3, within=0.4, run_args=args)
    assert float(got["part/augment/p"]) > 0 and "part/augment/sign_sum" in got  # p moved, and came back exactly


@pytest.mark.parametrize("n, diffaugment, adaptive", [(200, "", True), (ADA_BELOW, "", False),
                                                       (200, "translation", False)])
def test_adaptive_augmentation_is_on_by_default_for_small_sets_only(tmp_path, n, diffaugment, adaptive):
    """Below ADA_BELOW images the light model adapts its augmentation unless a fixed policy is asked for;
    dcgan never does unless told."""
    data = load_data("digits", 32).subset(torch.arange(n))
    state = TrainState(tiny_config(**TINY | {"diffaugment": diffaugment}), tmp_path, data)
    assert state.cfg.ada is adaptive and isinstance(state.augment, AdaptiveAugment) is adaptive
    assert state.cfg.diffaugment == ("color,translation,cutout" if adaptive else diffaugment)
    assert TrainState(tiny_config(**TINY | {"model": "dcgan"}), tmp_path, data).cfg.ada is False
