"""Adaptive augmentation (ADA): the fixed pipeline keeps DiffAugment's outputs, p follows a stand-in D's
overfitting, the state survives a checkpoint bit for bit, and nothing in the step waits for the device."""

import math

import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ganforge.augment import (
    ADA_SPEED_IMAGES,
    AdaptiveAugment,
    Augment,
    augmenter,
    color,
    cutout,
    diff_augment,
    make_augment,
    translation,
)
from ganforge.stats import Collector, collecting


def images(n=8, seed=0, size=8):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def same_draws(fn, x, seed=1):
    torch.manual_seed(seed)
    return fn(x)


class Memoriser:
    """A D that has overfitted completely: +3 for an image of its training set, -3 for anything else."""

    def __init__(self, train):
        self.train = train

    def __call__(self, x):
        distance = (x[:, None] - self.train[None]).abs().flatten(2).amax(2)  # (batch, train)
        return torch.where(distance.amin(1) < 1e-4, 3.0, -3.0)[:, None]


# --- the fixed pipeline

def test_fixed_augment_is_diffaugment_bit_for_bit():
    x = images(16)
    composed = same_draws(lambda v: cutout(translation(color(v))), x)
    assert torch.equal(same_draws(Augment("color,translation,cutout"), x), composed)
    assert torch.equal(same_draws(augmenter("color, translation,cutout"), x), composed)
    assert torch.equal(same_draws(lambda v: diff_augment(v, "color,translation,cutout"), x), composed)
    assert torch.equal(same_draws(Augment("translation,color"), x), same_draws(lambda v: color(translation(v)), x))
    assert not torch.equal(composed, x)
    assert torch.equal(Augment("")(x), x)


def test_fixed_augment_has_no_state():
    aug = make_augment("color,cutout", adaptive=False)
    assert type(aug) is Augment and aug.probability == 1.0 and Augment("").probability == 0.0
    aug.observe(torch.ones(8, 1))
    assert aug.state_dict() == {}
    aug.load_state_dict({})


# --- applying p

def test_p_starts_at_zero_and_p_zero_is_the_identity():
    aug = AdaptiveAugment()
    assert aug.p.dtype == torch.float32 and aug.p.dim() == 0 and aug.p.item() == 0.0 and aug.probability == 0.0
    x = images(32)
    assert torch.equal(aug(x), x)


def test_p_one_is_the_fixed_policy_exactly():
    x = images(16)
    for policy in ("color,translation,cutout", "cutout,color", "translation"):
        ada = AdaptiveAugment(policy, initial_p=1.0)
        assert torch.equal(same_draws(ada, x), same_draws(Augment(policy), x)), policy


def test_each_image_is_chosen_on_its_own():
    x = images(256, size=4)
    fixed = same_draws(Augment("color"), x)
    out = same_draws(AdaptiveAugment("color", initial_p=0.3), x)
    unchanged = (out == x).flatten(1).all(1)
    augmented = (out == fixed).flatten(1).all(1)
    assert bool((unchanged ^ augmented).all())  # each image: exactly the input or exactly the fixed output
    assert 0.2 < augmented.float().mean() < 0.4  # about p of them
    # three stages, each image choosing for each: with p = 0.5, about 1/8 get none of them and 1/8 all
    x3 = images(512)
    fixed3 = same_draws(Augment("color,translation,cutout"), x3)
    out3 = same_draws(AdaptiveAugment("color,translation,cutout", initial_p=0.5), x3)
    none = (out3 == x3).flatten(1).all(1).float().mean()
    every = (out3 == fixed3).flatten(1).all(1).float().mean()
    assert 0.07 < none < 0.19 and 0.07 < every < 0.19


def test_gradients_flow_through_for_p_between_zero_and_one():
    x = images(64).requires_grad_(True)
    torch.manual_seed(0)
    out = AdaptiveAugment(initial_p=0.5)(x)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # images that passed every stage unchanged get the weights as their gradient; the others not
    unchanged = (out.detach() == x.detach()).flatten(1).all(1)
    assert 0 < unchanged.sum() < 64
    assert torch.equal(x.grad[unchanged], weights[unchanged])
    assert not torch.allclose(x.grad[~unchanged], weights[~unchanged])


# --- steering p

def test_p_rises_while_d_recognises_its_training_images():
    train = images(8, seed=3)
    D = Memoriser(train)
    ada = AdaptiveAugment(interval=4, speed_images=2000)
    for _ in range(200):  # D's scores of the unaugmented reals: r_t = 1 at every update
        ada.observe(D(train))
    # 50 updates of 4 * 8 = 32 images, each +32 / 2000
    assert ada.rt.item() == 1.0
    assert math.isclose(ada.p.item(), 50 * 32 / 2000, abs_tol=1e-5)
    for _ in range(200):
        ada.observe(D(train))
    assert ada.p.item() == 1.0  # clamped


def test_p_settles_where_the_memoriser_is_fooled_enough():
    """Closed loop: D sees the reals through the pipeline, so p rises only until augmented images stop
    matching often enough; with three stages r_t = 2 (1 - p)^3 - 1, which is 0.6 at p ~ 0.072."""
    torch.manual_seed(0)
    train = images(16, seed=4)
    D = Memoriser(train)
    ada = AdaptiveAugment(interval=4, speed_images=6400)  # 0.01 per update
    history = []
    for _ in range(400):
        ada.observe(D(ada(train)))
        history.append(ada.p.item())
    late = sum(history[200:]) / 200
    assert max(history) < 0.3 and 0.02 < late < 0.15, late


@pytest.mark.parametrize("scores", ["symmetric", "negative"])
def test_p_falls_to_zero_while_d_does_not_overfit(scores):
    torch.manual_seed(0)
    ada = AdaptiveAugment(interval=4, speed_images=2000, initial_p=0.5)
    for _ in range(200):
        ada.observe(torch.randn(8, 1) if scores == "symmetric" else torch.full((8,), -0.5))
    assert ada.p.item() == 0.0
    assert ada.rt.item() < 0.6


def test_observe_waits_for_interval_and_reports_its_statistics():
    ada = AdaptiveAugment(interval=3, speed_images=100)
    collector = Collector()
    with collecting(collector):
        for _ in range(2):
            ada.observe(torch.tensor([1.0, 2.0, -1.0, 4.0]))
        assert ada.p.item() == 0.0 and collector.read() == {}  # no update before the third
        ada.observe(torch.tensor([1.0, 2.0, -1.0, 4.0]))
        stats = collector.read()
    assert stats.keys() == {"aug_p", "aug_rt"}
    assert math.isclose(stats["aug_rt"], 0.5) and math.isclose(stats["aug_p"], 0.0)  # r_t 0.5 < 0.6: stays at 0
    ada.load_state_dict(ada.state_dict() | {"p": torch.tensor(0.5)})
    for _ in range(3):
        ada.observe(torch.tensor([[1.0], [2.0], [-1.0], [4.0], [5.0]]))  # r_t 0.6 exactly: holds...
    for _ in range(3):
        ada.observe(torch.ones(5, 1))  # ...then r_t 1: p + 15 / 100, outside a collector (a no-op)
    assert math.isclose(ada.p.item(), 0.65, abs_tol=1e-6) and ada.rt.item() == 1.0


def test_nothing_in_the_step_reads_the_device():
    """On the meta device any host sync (.item(), bool(), float()) raises: the step has none."""
    ada = AdaptiveAugment(interval=2)
    for _ in range(5):
        out = ada(torch.empty(4, 3, 8, 8, device="meta"))
        ada.observe(torch.empty(4, 1, device="meta"))
    assert out.device.type == "meta" and ada.p.device.type == "meta"


# --- checkpoints

def run(ada, steps, seed):
    """Augment a batch and observe a noisy, somewhat overfitting D on it, `steps` times."""
    outs, ps = [], []
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        outs.append(ada(images(8)))
        ada.observe(torch.randn(8, 1, generator=gen) + 1.0)  # r_t ~ 0.68, noisy
        ps.append(ada.p.clone())
    return outs, ps


def test_state_dict_round_trip_is_bit_exact():
    torch.manual_seed(0)
    a = AdaptiveAugment(interval=4, speed_images=200, initial_p=0.3)
    run(a, 10, seed=1)
    saved = a.state_dict()
    assert saved["observed"].item() == 2  # an unfinished interval travels too
    rng = torch.get_rng_state()
    kept = {k: v.clone() for k, v in saved.items()}
    outs_a, ps_a = run(a, 7, seed=2)
    assert all(torch.equal(saved[k], kept[k]) for k in saved)  # later steps do not write into the saved state
    # through the checkpoint's format (safetensors) into a fresh pipeline
    b = AdaptiveAugment(interval=4, speed_images=200)  # p 0 until loaded
    b.load_state_dict(load_tensors(save_tensors({k: v.contiguous() for k, v in saved.items()})))
    torch.set_rng_state(rng)
    outs_b, ps_b = run(b, 7, seed=2)
    assert all(torch.equal(oa, ob) for oa, ob in zip(outs_a, outs_b))
    assert all(torch.equal(pa, pb) for pa, pb in zip(ps_a, ps_b))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert len({p.item() for p in ps_a} | {saved["p"].item()}) > 1  # p moved in both, the same way


def test_load_state_dict_rejects_other_state():
    with pytest.raises(ValueError, match="lacks"):
        AdaptiveAugment().load_state_dict({"p": torch.tensor(0.2)})


# --- options

@pytest.mark.parametrize("kwargs, message", [
    ({"policy": ""}, "needs a policy"),
    ({"policy": "rotate"}, "unknown augmentation"),
    ({"target": 1.5}, "target"),
    ({"target": 0.0}, "target"),
    ({"interval": 0}, "interval"),
    ({"interval": 2.5}, "interval"),
    ({"speed_images": 0}, "speed_images"),
    ({"speed_images": float("inf")}, "speed_images"),
    ({"initial_p": -0.1}, "initial_p"),
])
def test_bad_options_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveAugment(**kwargs)


def test_make_augment_picks_the_pipeline():
    ada = make_augment("color,translation", adaptive=True, target=0.7, interval=2)
    assert type(ada) is AdaptiveAugment and ada.names == ["color", "translation"]
    assert (ada.target, ada.interval, ada.speed_images) == (0.7, 2, ADA_SPEED_IMAGES)
    assert type(make_augment("", adaptive=False)) is Augment
    with pytest.raises(ValueError, match="needs a policy"):
        make_augment("", adaptive=True)


def test_curves_show_the_signal_and_p_where_the_run_adapted(tmp_path):
    """curves.png grows a panel for r_t and p (with the target) when the train lines carry them."""
    from PIL import Image

    from ganforge.plots import plot_curves
    from ganforge.stats import RunStats

    plain = [{"step": s, "d_loss": 1.0, "g_loss": 1.0, "d_real": 0.6, "d_fake": 0.4} for s in range(0, 100, 10)]
    adapted = [line | {"aug_rt": 0.5 + s / 400, "aug_p": s / 200} for s, line in zip(range(0, 100, 10), plain)]
    plot_curves(RunStats(plain), tmp_path / "plain.png")
    plot_curves(RunStats(adapted), tmp_path / "adapted.png", ada_target=0.6)
    with Image.open(tmp_path / "plain.png") as a, Image.open(tmp_path / "adapted.png") as b:
        assert b.height > a.height * 1.3 and a.width == b.width
