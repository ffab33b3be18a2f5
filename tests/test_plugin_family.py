"""The shape check of the seams: a model family defined here, in the test file, with a mapping network (a W
space) and a regulariser phase with state of its own every 4 steps, trains, resumes bit-exactly (its state and
adaptive augmentation's p included), samples through the Sampler protocol, gets directions in W, exports to
ONNX and loads in the studio, without any library file naming it."""

import pytest
import torch
from conftest import skip_or_fail
from torch import nn

from ganforge import directions, load, train
from ganforge.checkpoint import load_checkpoint
from ganforge.config import TrainConfig
from ganforge.families import MODELS
from ganforge.families.image import Unconditional
from ganforge.phases import Phase
from ganforge.stats import read_stats


class MappedGenerator(nn.Module):
    """z -> w by a 2-layer mapping network, w -> a 28-px image by a linear layer and two upsampling convs."""

    def __init__(self, image_size: int = 28, channels: int = 1, z_dim: int = 8):
        super().__init__()
        self.image_size, self.channels, self.z_dim, self.w_dim = image_size, channels, z_dim, 12
        self.mapping = nn.Sequential(nn.Linear(z_dim, self.w_dim), nn.LeakyReLU(0.2), nn.Linear(self.w_dim, self.w_dim))
        self.synthesis = Synthesis(self.w_dim, channels)

    def latent_entry(self):
        return self.synthesis.project.weight, self.synthesis.net[0]

    def forward(self, z):
        return self.synthesis(self.mapping(z))


class Synthesis(nn.Module):
    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.project = nn.Linear(w_dim, 8 * 7 * 7)
        self.net = nn.Sequential(nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2), nn.Conv2d(8, 8, 3, padding=1),
                                 nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2), nn.Conv2d(8, channels, 3, padding=1),
                                 nn.Tanh())

    def forward(self, w):
        return self.net(self.project(w).unflatten(1, (8, 7, 7)))


class SmallDiscriminator(nn.Module):
    def __init__(self, image_size: int = 28, channels: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 8, 4, 2, 1),
                                 nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 7 * 7, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


class Mapped(Unconditional):
    generator, discriminator = MappedGenerator, SmallDiscriminator

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.w_norm = torch.zeros(())  # a running mean of |w|, as path-length regularisation keeps one
        self.runs = 0

    def phases(self, phases):
        return [*phases, Phase("G_reg", "G", self.regularise, interval=4)]

    def regularise(self, s, batch):
        w = s.G.mapping(torch.randn(len(batch.real), self.cfg.z_dim, device=s.device))
        norm = w.norm(dim=1)
        loss = 0.01 * (norm - self.w_norm).square().mean()
        self.w_norm = 0.9 * self.w_norm + 0.1 * norm.mean().detach()
        self.runs += 1
        return loss

    def state_dict(self):
        return {"w_norm": self.w_norm, "runs": self.runs}

    def load_state_dict(self, state):
        self.w_norm, self.runs = state["w_norm"].clone(), state["runs"]


@pytest.fixture(autouse=True, scope="module")
def registered():
    """The family is registered while this file's tests run, and only then (the registry lists stay as shipped)."""
    MODELS.register("test-mapped", "a test family: a mapping network and a lazy regulariser with state")(Mapped)
    yield
    MODELS.unregister("test-mapped")


def config(**changes) -> TrainConfig:
    values = {"model": "test-mapped", "data": "digits", "z_dim": 8, "batch_size": 64, "log_every": 2,
              "n_samples": 16, "steps": 12, "ada": True, "channels_last": False}
    return TrainConfig(**(values | changes)).validate()


def test_a_plugin_family_trains_and_resumes_bit_exactly_with_its_state(tmp_path):
    straight = train(config(), runs_dir=tmp_path / "a", progress=False)
    half = train(config(steps=6), runs_dir=tmp_path / "b", progress=False)
    meta, tensors = load_checkpoint(half)
    assert meta["parts"]["family"]["runs"] == 1  # the regulariser ran at step 4 only
    assert "part/augment/p" in tensors and "part/family/w_norm" in tensors
    resumed = train(resume=half, budget={"steps": 12}, progress=False)
    (meta_a, a), (meta_b, b) = load_checkpoint(straight), load_checkpoint(resumed)
    assert meta_a["parts"] == meta_b["parts"] and meta_b["parts"]["family"]["runs"] == 3
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert float(a["part/family/w_norm"]) > 0  # its state moved
    stats = read_stats(resumed).lines
    assert any("aug_p" in line for line in stats)  # adaptive augmentation's p, logged


def test_a_plugin_family_samples_gets_directions_in_w_and_loads_in_the_studio(tmp_path):
    run = train(config(steps=4), runs_dir=tmp_path, progress=False)
    sampler = load(run)
    assert sampler.takes("latent") and not sampler.takes("labels") and not sampler.takes("captions")
    z = torch.randn(3, 8)
    assert torch.allclose(sampler.draw(z), sampler.draw_latent(sampler.to_latent(z)), atol=1e-6)
    where = sampler.latent()
    assert where.space == "w" and where.length == where.dims == 12
    found = directions.find(sampler, "sefa", k=4)
    assert found.vectors.shape == (4, 12)
    pca = directions.find(sampler, "pca", k=2, samples=64)
    images = directions.walk(sampler, pca, z[:2], torch.tensor([-1.0, 0.0, 1.0]))
    assert images.shape == (2, 2, 3, 1, 28, 28)
    assert torch.allclose(images[:, :, 1], sampler.draw(z[:2]).expand(2, -1, -1, -1, -1), atol=1e-5)
    assert not torch.allclose(sampler.sample(2, shift=found.vector(0) * 3), sampler.sample(2))

    from ganforge.studio.app import load_model
    model = load_model(0, "mapped", run, load_attributes=False)
    assert model.directions["sefa"].vectors.shape == (10, 12)  # the studio's 10 sliders, in W


def test_a_plugin_family_exports_to_onnx(tmp_path):
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        skip_or_fail(f"ONNX export needs onnx, onnxruntime and onnxscript ({e})")
    from ganforge.export import export_onnx
    run = train(config(steps=2, ada=False), runs_dir=tmp_path, progress=False)
    out = export_onnx(run, tmp_path / "mapped.onnx")
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("ada", [False, True])
def test_ada_is_what_the_config_says_and_written_out(tmp_path, ada):
    run = train(config(steps=2, ada=ada), runs_dir=tmp_path, progress=False)
    meta, tensors = load_checkpoint(run)
    assert meta["config"]["ada"] is ada
    assert ("part/augment/p" in tensors) is ada
    assert meta["config"]["diffaugment"] == ("color,translation,cutout" if ada else "")
