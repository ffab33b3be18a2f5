"""R3GAN's regularised relativistic loss: its terms and penalties in closed form, its place in the registry,
and training with it (bit-exact resume, a matching-aware D)."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_shapes_folder, tiny_config

from ganforge import train
from ganforge.checkpoint import load_checkpoint
from ganforge.cli import build_parser
from ganforge.config import TrainConfig, make_config
from ganforge.errors import GanforgeError
from ganforge.losses import LOSSES, Critic
from ganforge.stats import Collector, collecting, read_stats


def _loss(**changes):
    return LOSSES["r3gan"](TrainConfig(loss="r3gan", **changes).validate())


class LinearD(torch.nn.Module):
    """D(x) = <w, x> + b: its input gradient is w at every image, so ||grad D||^2 = ||w||^2."""

    def __init__(self, dim=12):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(dim, generator=torch.Generator().manual_seed(0)))
        self.b = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return x.flatten(1) @ self.w + self.b


def test_the_terms_and_penalties_in_closed_form():
    D = LinearD()
    critic = Critic(D, D)
    real, fake = torch.randn(8, 3, 2, 2), torch.randn(8, 3, 2, 2)
    collector = Collector()
    with collecting(collector):
        d = _loss(r3gan_gamma=0.5).discriminator(critic, real, fake)
        g = _loss().generator(critic, real, fake)
    with torch.no_grad():
        pairs = D(real) - D(fake)  # each real image beside its forgery
        w2 = D.w.square().sum()
    expected_d = F.softplus(-pairs).mean() + 0.5 / 2 * (w2 + w2)  # R1 and R2 are both ||w||^2 here
    assert d.item() == pytest.approx(expected_d.item(), rel=1e-5)
    assert g.item() == pytest.approx(F.softplus(pairs).mean().item(), rel=1e-5)  # G asks the opposite
    stats = collector.read()
    assert stats["d_loss/r1"] == pytest.approx(w2.item(), rel=1e-5) == stats["d_loss/r2"]
    assert stats["d_loss"] == pytest.approx(F.softplus(-pairs).mean().item(), rel=1e-5)
    assert stats["d_real"] == pytest.approx(D(real).mean().item(), rel=1e-5)  # raw scores, not sigmoids
    d.backward()  # the penalties train D: gamma / 2 (R1 + R2) = 0.5 ||w||^2 adds w to the pairing term's gradient
    with_penalties, D.w.grad = D.w.grad.clone(), None
    _loss(r3gan_gamma=0.0).discriminator(critic, real, fake).backward()
    assert torch.allclose(with_penalties - D.w.grad, D.w.detach(), atol=1e-5)
    assert _loss(r3gan_gamma=0.0).discriminator(critic, real, fake).item() == pytest.approx(
        F.softplus(-pairs).mean().item(), rel=1e-5)  # gamma 0: the pairing term alone


def test_a_d_step_ranks_real_above_fake_and_a_g_step_closes_the_gap():
    D = LinearD()
    critic, loss = Critic(D, D), _loss()
    real, fake = torch.randn(64, 12) + 0.5, torch.randn(64, 12) - 0.5
    gap = lambda: (D(real) - D(fake)).mean().item()
    before = gap()
    opt = torch.optim.SGD(D.parameters(), lr=0.05)
    loss.discriminator(critic, real, fake).backward()
    opt.step()
    assert gap() > before
    fake = fake.clone().requires_grad_()
    loss.generator(critic, real, fake).backward()
    with torch.no_grad():
        moved = fake - 0.5 * fake.grad
        assert (D(real) - D(moved)).mean() < (D(real) - D(fake)).mean()


def test_matching_aware_negatives_pair_each_real_image_twice():
    D = LinearD()

    class Conditioned(torch.nn.Module):  # D(x, c) = <w, x> + c
        def forward(self, x, c):
            return D(x) + c

    net = Conditioned()
    critic = Critic(net, net, mismatch=lambda c: c.roll(1, dims=0))
    real, fake, cond = torch.randn(4, 12), torch.randn(4, 12), torch.arange(4.0)
    got = _loss(r3gan_gamma=0.0).discriminator(critic, real, fake, cond)
    with torch.no_grad():
        real_out = D(real) + cond
        negatives = torch.cat([D(fake) + cond, D(real) + cond.roll(1)])
    assert got.item() == pytest.approx(F.softplus(-(real_out.repeat(2) - negatives)).mean().item(), rel=1e-5)


def test_it_is_registered_with_its_option_and_defaults():
    assert "r3gan" in LOSSES and "r3gan" in next(
        a for a in next(a for a in build_parser()._actions if a.dest == "command").choices["train"]._actions
        if "--loss" in a.option_strings).choices
    cfg = make_config(overrides={"loss": "r3gan"}, pairs=["r3gan_gamma=0.2"])
    assert cfg.r3gan_gamma == 0.2 and cfg.d_norm == "layer" and cfg.n_critic == 1
    assert not LOSSES["r3gan"](cfg).compiles_d  # a double backward through D
    with pytest.raises(GanforgeError, match="r3gan has its own R1 and R2"):
        make_config(overrides={"loss": "r3gan"}, pairs=["r1_gamma=1"])
    with pytest.raises(GanforgeError, match="r3gan_gamma=-1.0: must be 0 or more"):
        make_config(overrides={"loss": "r3gan"}, pairs=["r3gan_gamma=-1"])
    with pytest.raises(GanforgeError, match="has no targets"):
        make_config(overrides={"loss": "r3gan"}, pairs=["label_smoothing=0.1"])


def test_it_trains_and_resumes_bit_exact(tmp_path):
    extra = {"loss": "r3gan", "diffaugment": "color,translation", "model": "cgan", "batch_size": 64}
    straight = train(tiny_config(steps=12, **extra), runs_dir=tmp_path / "a", progress=False)
    half = train(tiny_config(steps=6, **extra), runs_dir=tmp_path / "b", progress=False)
    resumed = train(resume=half, budget={"steps": 12}, progress=False)
    a, b = load_checkpoint(straight)[1], load_checkpoint(resumed)[1]
    for key in a:
        if key.startswith(("G/", "G_ema/", "D/", "opt_")):
            assert torch.equal(a[key], b[key]), key
    lines = read_stats(straight).train
    assert {"d_loss", "g_loss", "d_real", "d_fake", "d_loss/r1", "d_loss/r2"} <= lines[-1].keys()
    assert all(math.isfinite(v) for line in lines for k, v in line.items() if k.startswith(("d_", "g_")))


def test_it_trains_a_matching_aware_text_model(tmp_path):
    shapes = make_shapes_folder(tmp_path / "shapes")
    cfg = TrainConfig(model="stackgan1", data=f"captions:{shapes}", loss="r3gan", image_size=32, g_width=8,
                      d_width=8, z_dim=8, c_dim=8, text_dim=16, text_pretrain_steps=5, batch_size=16, log_every=2,
                      n_samples=16, steps=4).validate()
    run = train(cfg, runs_dir=tmp_path / "runs", progress=False)
    last = read_stats(run).train[-1]
    assert last["step"] == 4 and {"d_loss/r2", "g_loss/kl"} <= last.keys()
