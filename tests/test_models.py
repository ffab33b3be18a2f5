import pytest
import torch

from ganforge.errors import GanforgeError
from ganforge.families import build_discriminator, build_generator
from ganforge.models.dcgan import DCGANGenerator


@pytest.mark.parametrize("model", ["mlp", "dcgan"])
@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes(model, size, channels):
    spec = {"model": model, "image_size": size, "channels": channels, "z_dim": 12}
    spec |= {"g_width": 4, "d_width": 4} if model == "dcgan" else {"g_hidden": 16, "d_hidden": 8, "d_pieces": 2}
    G, D = build_generator(spec), build_discriminator(spec)
    x = G(torch.randn(3, 12))
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (3,)


def test_dcgan_initialisation_follows_the_paper():
    G = DCGANGenerator(64, 3, 100, 64)
    conv = G.net[2].weight  # a transposed convolution
    assert conv.mean().item() == pytest.approx(0, abs=1e-3)
    assert conv.std().item() == pytest.approx(0.02, rel=0.05)
    bn = G.net[0].weight
    assert bn.mean().item() == pytest.approx(1, abs=0.01)


def test_unsupported_size_is_a_clear_error():
    with pytest.raises(GanforgeError, match="28, 32, 56, 64 and 128"):
        DCGANGenerator(48, 1)


def test_depth_adds_3x3_convolutions_at_every_hidden_resolution():
    spec = {"model": "dcgan", "image_size": 28, "channels": 1, "z_dim": 12, "g_width": 4, "d_width": 4}
    sides = []

    def record(module, inputs, output):
        sides.append(output.shape[-1])

    for depth in (0, 2):
        G = build_generator(spec | ({"g_depth": depth} if depth else {}))
        D = build_discriminator(spec | ({"d_depth": depth} if depth else {}))
        refiners = [m for net in (G, D) for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(refiners) == 4 * depth  # G at 7 and 14 pixels, D at 14 and 7: `depth` each
        for m in refiners:
            m.register_forward_hook(record)
        D(G(torch.randn(2, 12)))
    assert sorted(sides) == [7, 7, 7, 7, 14, 14, 14, 14]


def test_dcgan_depth_defaults_to_one_at_28_pixels_only(tmp_path):
    """Measured better at 28 pixels (Fashion-MNIST); elsewhere the paper's 0. The spec records what was built."""
    from conftest import tiny_config

    from ganforge import train
    from ganforge.checkpoint import load_checkpoint

    defaults = {"g_depth": None, "d_depth": None}  # (tiny_config's are 0)
    for name, changes, depth in (("28", defaults, 1), ("32", defaults | {"image_size": 32}, None),
                                 ("off", defaults | {"g_depth": 0}, None)):
        run = train(tiny_config(steps=1, **changes), runs_dir=tmp_path / name, progress=False)
        spec = load_checkpoint(run)[0]["model_spec"]
        assert spec.get("g_depth") == depth, name
        assert spec.get("d_depth") == (None if name == "32" else 1), name
