"""Interpolation, concept arithmetic, attribute queries and inversion."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image
from torch import nn

from ganforge import train
from ganforge.cli import main
from ganforge.errors import GanforgeError
from ganforge.latent import (
    Concept,
    around,
    combine,
    invert,
    lerp,
    parse_expression,
    parse_query,
    path,
    query_concept,
    seed_noise,
    slerp,
)
from ganforge.sampling import Generator


class LinearG(nn.Module):
    """G(z) = W z as a (1, 4, 4) image: every output is known in closed form."""

    def __init__(self, z_dim=6):
        super().__init__()
        self.z_dim, self.image_size, self.channels = z_dim, 4, 1
        self.W = nn.Parameter(torch.randn(16, z_dim, generator=torch.Generator().manual_seed(0)) / 4)

    def forward(self, z):
        return (z @ self.W.T).view(-1, 1, 4, 4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(tiny_config(steps=4), runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_lerp_and_slerp_end_points_and_norms():
    a, b = torch.randn(2, 50, generator=torch.Generator().manual_seed(1))
    b = b / b.norm() * a.norm()  # equal norms
    for f in (lerp, slerp):
        assert torch.allclose(f(a, b, 0.0), a, atol=1e-6) and torch.allclose(f(a, b, 1.0), b, atol=1e-6)
    walk = path(a, b, 7, spherical=True)
    assert walk.shape == (7, 50)
    assert torch.allclose(walk.norm(dim=1), a.norm().expand(7), rtol=1e-5)  # on the sphere all the way
    assert (path(a, b, 7).norm(dim=1)[3] < 0.9 * a.norm())  # a straight line cuts through the inside
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid / mid.norm(), (a + b) / (a + b).norm(), atol=1e-5)  # halfway round the arc
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel vectors: lerp


def test_parse_expression():
    assert parse_expression("A - B + C") == [(1, "A"), (-1, "B"), (1, "C")]
    assert parse_expression("-smile+x_2") == [(-1, "smile"), (1, "x_2")]
    for bad in ("A -", "A B", "A * B", "", "A -- B"):
        with pytest.raises(GanforgeError, match="concept names joined by"):
            parse_expression(bad)


def test_arithmetic_on_a_linear_generator_is_exact():
    G = Generator(LinearG())
    concepts = {name: Concept(name, seed_noise(seeds, G.z_dim), "seeds", seeds)
                for name, seeds in {"A": [1, 2, 3], "B": [4, 5, 6], "C": [7, 8, 9]}.items()}
    result = combine(parse_expression("A - B + C"), concepts)
    image = G(around(result, 9, 0.25)[:1])[0]
    mean_image = {n: G(c.z).mean(0) for n, c in concepts.items()}
    assert torch.allclose(image, mean_image["A"] - mean_image["B"] + mean_image["C"], atol=1e-5)
    with pytest.raises(GanforgeError, match="no concept given for D"):
        combine(parse_expression("A - D"), concepts)


def test_noise_around_the_result_is_small_and_seeded():
    z = torch.randn(100)
    grid = around(z, 9, 0.25, seed=3)
    assert torch.equal(grid[0], z) and torch.equal(grid, around(z, 9, 0.25, seed=3))
    assert 0.15 < (grid[1:] - z).std() < 0.35


def test_query_concept_returns_samples_that_satisfy_the_query():
    G = Generator(LinearG())
    names = ["bright", "top_heavy"]

    def classify(images):  # attributes read off the pixels: mean brightness, top half brighter than bottom
        return torch.stack([images.mean((1, 2, 3)) * 10, (images[:, :, :2].mean((1, 2, 3))
                                                          - images[:, :, 2:].mean((1, 2, 3))) * 10], 1)

    concept = query_concept(G, classify, names, "bright&!top_heavy", k=5, pool=300, name="A")
    assert len(concept.z) == 5 and len(set(concept.seeds)) == 5
    logits = classify(G(concept.z))
    assert (logits[:, 0] > 0).all() and (logits[:, 1] < 0).all()
    assert concept.scores == sorted(concept.scores, reverse=True)
    assert torch.equal(concept.z, seed_noise(concept.seeds, G.z_dim))  # the seeds name the vectors
    with pytest.raises(GanforgeError, match="unknown attribute 'smiling'"):
        parse_query("smiling", names)
    with pytest.raises(GanforgeError, match="fewer than 5"):
        query_concept(G, classify, names, "bright&!bright", k=5, pool=100)


def test_inversion_recovers_z_of_a_linear_generator():
    G = Generator(LinearG(z_dim=6))
    wanted = seed_noise([11], 6)[0]
    z, mse = invert(G, G(wanted.unsqueeze(0))[0], steps=600, restarts=3, lr=0.05, prior=0.0)
    assert mse < 1e-6
    assert torch.allclose(z, wanted, atol=1e-2)


def test_interpolate_command_writes_a_strip_and_a_gif(run, tmp_path):
    assert main(["interpolate", str(run), "--from", "1", "--to", "2", "--steps", "5", "--out",
                 str(tmp_path / "strip.png")]) == 0
    with Image.open(tmp_path / "strip.png") as img:
        assert img.size[0] > 4 * img.size[1]  # one row of 5
    assert main(["interpolate", str(run), "--from", "1", "--to", "2", "--steps", "5", "--slerp", "--out",
                 str(tmp_path / "walk.gif")]) == 0
    with Image.open(tmp_path / "walk.gif") as gif:
        assert gif.n_frames == 8  # forth and back


def test_arithmetic_command_with_seed_concepts(run, tmp_path, capsys):
    out, record = tmp_path / "sum.png", tmp_path / "sum.json"
    assert main(["arithmetic", str(run), "A - B + C", "--concept", "A=1,2,3", "--concept", "B=4,5,6",
                 "--concept", "C=7,8,9", "--out", str(out), "--json", str(record)]) == 0
    assert out.stat().st_size > 5000
    saved = json.loads(record.read_text())
    assert saved["concepts"]["B"]["seeds"] == [4, 5, 6] and len(saved["result_z"]) == 16
    assert main(["arithmetic", str(run), "A - B", "--concept", "A=1,2", "--concept", "B=4,5,6",
                 "--out", str(out)]) == 2
    assert main(["arithmetic", str(run), "A - B", "--concept", "A=1,2,3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "at least 3 z vectors" in err and "no concept given for B" in err


def test_invert_command_and_images_as_exemplars(run, tmp_path, capsys):
    image = tmp_path / "seven.png"
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(image)
    out = tmp_path / "inv.png"
    assert main(["invert", str(run), str(image), "--steps", "20", "--restarts", "2", "--out", str(out)]) == 0
    assert out.is_file() and np.load(tmp_path / "inv.npy").shape == (16,)
    assert main(["arithmetic", str(run), "A - B + C", "--concept", f"A=images:{image},{image},{image}",
                 "--concept", "B=4,5,6", "--concept", "C=7,8,9", "--out", str(tmp_path / "s.png")]) == 0
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert main(["invert", str(run), str(tmp_path / "broken.png"), "--out", str(out)]) == 2
    assert main(["invert", str(run), str(tmp_path / "missing.png"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not an image Pillow can read" in err and "no such file" in err
