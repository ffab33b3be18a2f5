"""The light networks (ganforge/models/light.py): shapes at every size, the W space, D's penalties, export."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from ganforge.errors import GanforgeError
from ganforge.models.light import SIZES, LightDiscriminator, LightGenerator, UpConv, init_light

TINY = {"g_width": 4, "z_dim": 8}


def tiny_pair(size: int = 32, channels: int = 3, **kw):
    torch.manual_seed(0)
    return LightGenerator(size, channels, **(TINY | kw)), LightDiscriminator(size, channels, d_width=4)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_at_every_size(size, channels):
    G, D = tiny_pair(size, channels)
    x = G(torch.randn(2, 8))
    assert x.shape == (2, channels, size, size)
    assert x.abs().max() <= 1
    assert D(x).shape == (2,)
    assert (G.image_size, G.channels, G.z_dim, G.w_dim) == (size, channels, 8, 8)


@pytest.mark.parametrize("size", [0, 16, 48, 28, 512])
def test_bad_size_is_a_clear_error(size):
    for make in (lambda: LightGenerator(size), lambda: LightDiscriminator(size)):
        with pytest.raises(ValueError, match="32, 64, 128, 256"):
            make()
        with pytest.raises(GanforgeError):  # the project's error type too: the CLI prints it without a traceback
            make()


def test_upconv_equals_upsample_then_conv():
    torch.manual_seed(0)
    up = UpConv(5, 7)
    x = torch.randn(2, 5, 6, 9)
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), up.weight, padding=1)
    torch.testing.assert_close(up(x), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(up(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("map_depth", [0, 2])
def test_mapping_then_synthesis_is_forward(map_depth):
    G, _ = tiny_pair(map_depth=map_depth)
    G.eval()
    z = torch.randn(3, 8)
    w = G.mapping(z)
    assert w.shape == (3, G.w_dim)
    torch.testing.assert_close(G.synthesis(w), G(z))
    if map_depth == 0:  # identity mapping: the normalised z
        torch.testing.assert_close(w, z / z.pow(2).mean(1, keepdim=True).sqrt())


@pytest.mark.parametrize("d_norm", ["batch", "layer", "none"])
def test_r1_double_backward_with_spectral_norm(d_norm):
    torch.manual_seed(0)
    D = LightDiscriminator(32, 3, d_width=4, d_norm=d_norm)
    for m in list(D.modules()):
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            spectral_norm(m)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    penalty = grad.pow(2).flatten(1).sum(1).mean()
    penalty.backward()
    # every weight gets a gradient from the penalty (the head's bias cannot: it does not change grad_x D)
    grads = {n: p.grad for n, p in D.named_parameters() if "weight" in n}
    assert penalty > 0 and grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert sum(g.abs().sum() for g in grads.values()) > 0


def test_bad_d_norm():
    with pytest.raises(ValueError, match="d_norm"):
        LightDiscriminator(32, d_norm="weird")


def test_deepcopy_and_eval_are_deterministic():
    G, D = tiny_pair()
    G(torch.randn(8, 8))  # a train-mode step moves the batch-norm statistics
    ema = copy.deepcopy(G).eval()
    z = torch.randn(4, 8)
    assert torch.equal(ema(z), ema(z))
    torch.testing.assert_close(ema(z)[:2], ema(z[:2]))  # eval mode: each image independent of the batch
    assert not any(p is q for p, q in zip(ema.parameters(), G.parameters()))
    D2 = copy.deepcopy(D).eval()
    assert torch.equal(D2(ema(z)), D2(ema(z)))


def test_channels_last_and_bf16_autocast():
    G, D = tiny_pair(64)
    G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", torch.bfloat16):
        x = G(torch.randn(2, 8))
        logits = D(x.contiguous(memory_format=torch.channels_last))
    assert x.shape == (2, 3, 64, 64) and logits.shape == (2,) and torch.isfinite(logits.float()).all()
    (logits.float().sum()).backward()
    assert all(p.grad is not None for p in D.parameters())


def test_init_light_and_the_paths_without_style_or_sle():
    torch.manual_seed(0)
    G = LightGenerator(64, 3, style=False, sle=False, **TINY)
    assert len(G.synthesis.sle) == 0 and all(b.style is None for b in G.synthesis.blocks.values())
    assert set(LightGenerator(64, 3, **TINY).synthesis.sle) == {"16", "32"}
    assert set(LightGenerator(256, 3, **TINY).synthesis.sle) == {"64", "128"}
    init_light(G)
    assert G(torch.randn(2, 8)).shape == (2, 3, 64, 64)
