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
    CHAPTER_ANALOGIES,
    Analogy,
    Concept,
    analogy_rates,
    around,
    at_typical_length,
    combine,
    concept_from,
    invert,
    latent_spread,
    lerp,
    parse_expression,
    parse_query,
    path,
    query_concept,
    query_scores,
    sample_pool,
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


class ScaledTanh(nn.Module):
    """A non-linear mapping network: w = 3 tanh(z) + 1."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))

    def forward(self, z):
        return self.scale * torch.tanh(z) + 1


class MappedG(nn.Module):
    """G(z) = synthesis(mapping(z)): a non-linear mapping in front of a linear synthesis, so that sums of w draw
    sums of images exactly and sums of z do not."""

    def __init__(self, z_dim=6):
        super().__init__()
        self.z_dim, self.w_dim, self.image_size, self.channels = z_dim, z_dim, 4, 1
        self.mapping, self.synthesis = ScaledTanh(), LinearG(z_dim)

    def forward(self, z):
        return self.synthesis(self.mapping(z))


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
    image = G(around(G, result, 9, 0.25)[:1])[0]
    mean_image = {n: G(c.latent).mean(0) for n, c in concepts.items()}
    assert torch.allclose(image, mean_image["A"] - mean_image["B"] + mean_image["C"], atol=1e-5)
    with pytest.raises(GanforgeError, match="no concept given for D"):
        combine(parse_expression("A - D"), concepts)


def test_a_generator_with_a_mapping_network_adds_up_in_w():
    G = Generator(MappedG())
    assert G.latent_space == "w"
    scorer = None
    concepts = {name: concept_from(G, f"{name}={seeds}", scorer) for name, seeds in
                {"A": "1,2,3", "B": "4,5,6", "C": "7,8,9"}.items()}
    z = {name: seed_noise(c.seeds, G.z_dim) for name, c in concepts.items()}
    assert torch.allclose(concepts["A"].latent, G.net.mapping(z["A"]))  # the exemplars are kept as w
    result = combine(parse_expression("A - B + C"), concepts)
    image = G.draw_latent(result.unsqueeze(0))[0]
    mean_image = {n: G(z[n]).mean(0) for n in concepts}
    wanted = mean_image["A"] - mean_image["B"] + mean_image["C"]
    assert torch.allclose(image, wanted, atol=1e-5)
    in_z = G((z["A"].mean(0) - z["B"].mean(0) + z["C"].mean(0)).unsqueeze(0))[0]
    assert not torch.allclose(in_z, wanted, atol=1e-2)  # the same sum in z draws something else


def test_noise_around_the_result_is_small_seeded_and_in_the_latents_units():
    z = torch.randn(6)
    G = Generator(LinearG())
    grid = around(G, z, 200, 0.25, seed=3)
    assert torch.equal(grid[0], z) and torch.equal(grid, around(G, z, 200, 0.25, seed=3))
    assert 0.2 < (grid[1:] - z).std() < 0.3
    M = Generator(MappedG())
    w = M.to_latent(z.unsqueeze(0))[0]
    spread = latent_spread(M)[1]
    assert 1.5 < spread.mean() < 2.5  # 3 tanh(z) of z ~ N(0, 1)
    steps = (around(M, w, 200, 0.25, seed=3)[1:] - w) / spread
    assert 0.2 < steps.std() < 0.3


def test_query_concept_returns_samples_that_satisfy_the_query():
    G = Generator(LinearG())
    names = ["bright", "top_heavy"]

    def classify(images):  # attributes read off the pixels: mean brightness, top half brighter than bottom
        return torch.stack([images.mean((1, 2, 3)) * 10, (images[:, :, :2].mean((1, 2, 3))
                                                          - images[:, :, 2:].mean((1, 2, 3))) * 10], 1)

    concept = query_concept(G, classify, names, "bright&!top_heavy", k=5, pool=300, name="A")
    assert len(concept.latent) == 5 and len(set(concept.seeds)) == 5
    logits = classify(G(concept.latent))
    assert (logits[:, 0] > 0).all() and (logits[:, 1] < 0).all()
    assert concept.scores == sorted(concept.scores, reverse=True)
    assert torch.equal(concept.latent, seed_noise(concept.seeds, G.z_dim))  # the seeds name the vectors
    with pytest.raises(GanforgeError, match="unknown attribute 'smiling'"):
        parse_query("smiling", names)
    with pytest.raises(GanforgeError, match="fewer than 5"):
        query_concept(G, classify, names, "bright&!bright", k=5, pool=100)


class CodeG(nn.Module):
    """G(z) = z as a (1, 4, 4) image: its attributes (linear_code, below) are its first numbers."""

    def __init__(self):
        super().__init__()
        self.z_dim, self.image_size, self.channels = 16, 4, 1
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, z):
        return z.view(-1, 1, 4, 4)


NAMES = ["smiling", "long_hair", "beard", "glasses"]


def linear_code(images):  # an exact linear attribute code: attribute i is present when number i is positive
    return images.flatten(1)[:, :4]


def test_analogies_land_on_an_exact_linear_attribute_code_and_fail_on_a_code_that_does_not_add_up():
    G = Generator(CodeG())
    chapter = [CHAPTER_ANALOGIES["smile"]] * 10 + [CHAPTER_ANALOGIES["glasses"]] * 10
    pool = sample_pool(G, linear_code, 2000)
    rates, first, misses = analogy_rates(G, linear_code, NAMES, chapter, pool)
    assert rates[3] >= 0.8 and rates[10] >= rates[3]
    assert all(max(m.values(), default=0) <= 1 - rates[k] + 1e-9 <= sum(m.values()) + 1e-9 for k, m in misses.items())
    concepts, result = first[3]
    assert set(concepts) == {"A", "B", "C"} and len(concepts["A"].latent) == 3
    assert concepts["A"].source == "query smiling&long_hair&!beard"
    torch.testing.assert_close(result, concepts["A"].mean - concepts["B"].mean + concepts["C"].mean)
    magnitude = lambda images: images.flatten(1)[:, :4].abs() - 0.8  # present when far from 0, either way
    failing, _, missed = analogy_rates(G, magnitude, NAMES, chapter, sample_pool(G, magnitude, 2000))
    assert failing[3] < 0.8  # the 80% criterion can fail, and the misses say which attributes it missed
    assert max(missed[3].values()) <= 1 - failing[3] + 1e-9 <= sum(missed[3].values()) + 1e-9 and missed[3]
    # at random: k exemplars that satisfy each query, less confident than the k best, and the code still adds up
    random_rates, drawn, _ = analogy_rates(G, linear_code, NAMES, chapter, pool, at_random=True)
    for name, query in CHAPTER_ANALOGIES["smile"].queries.items():
        score, ok = query_scores(linear_code(G.draw_latent(drawn[3][0][name].latent)), parse_query(query, NAMES))
        best, _ = query_scores(linear_code(G.draw_latent(first[3][0][name].latent)), parse_query(query, NAMES))
        assert ok.all() and score.mean() < best.mean(), name
    assert random_rates[10] >= 0.8
    assert Analogy("smiling", "long_hair", "beard").intended == "smiling&beard&!long_hair"
    clean = CHAPTER_ANALOGIES["smile"].clean(NAMES)  # exemplars without the attributes it does not name
    assert clean.queries["C"] == "!smiling&beard&!long_hair&!glasses" and clean.intended == "smiling&beard&!long_hair"
    assert analogy_rates(G, linear_code, NAMES, [clean] * 10, sample_pool(G, linear_code, 2000))[0][3] >= 0.8


def test_at_typical_length_moves_a_latent_out_along_its_line_to_where_random_ones_lie():
    """A mean of k exemplars lies about sqrt(k) times nearer the latent's mean than a random draw does."""
    G = Generator(CodeG())
    z = 0.1 * torch.randn(5, 16)
    out = at_typical_length(G, z)
    torch.testing.assert_close(out.norm(dim=1), torch.full((5,), 4.0))
    torch.testing.assert_close(out / out.norm(dim=1, keepdim=True), z / z.norm(dim=1, keepdim=True))
    M = Generator(MappedG())
    mean, std = latent_spread(M)
    w = at_typical_length(M, mean + 0.01 * std * torch.randn(6))
    assert abs(((w - mean) / std).norm().item() - 6 ** 0.5) < 1e-4


def test_inversion_recovers_z_of_a_linear_generator():
    G = Generator(LinearG(z_dim=6))
    wanted = seed_noise([11], 6)[0]
    z, mse = invert(G, G(wanted.unsqueeze(0))[0], steps=600, restarts=3, lr=0.05, prior=0.0)
    assert mse < 1e-6
    assert torch.allclose(z, wanted, atol=1e-2)


def test_inversion_of_a_generator_with_a_mapping_network_finds_w():
    G = Generator(MappedG())
    wanted = G.to_latent(seed_noise([11], 6))[0]
    w, mse = invert(G, G.draw_latent(wanted.unsqueeze(0))[0], steps=600, restarts=3, lr=0.05, prior=0.0)
    assert mse < 1e-6 and torch.allclose(w, wanted, atol=2e-2)


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
    assert saved["concepts"]["B"]["seeds"] == [4, 5, 6] and saved["space"] == "z" and len(saved["result_latent"]) == 16
    assert main(["arithmetic", str(run), "A - B", "--concept", "A=1,2", "--concept", "B=4,5,6",
                 "--out", str(out)]) == 2
    assert main(["arithmetic", str(run), "A - B", "--concept", "A=1,2,3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "at least 3 latent vectors" in err and "no concept given for B" in err


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
