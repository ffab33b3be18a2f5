"""Latent directions found without labels (ganforge/directions.py): SeFa and GANSpace against generators whose
answer is known, the record kept in the run, the figure, `sample --direction` and `t2i --direction`."""

import json

import pytest
import torch
from conftest import make_shapes_folder, tiny_config
from PIL import Image

from ganforge import directions, load, train
from ganforge.checkpoint import find_checkpoint
from ganforge.cli import main
from ganforge.config import TrainConfig
from ganforge.models.mlp import MLPGenerator
from ganforge.sampling import Generator


def linear_generator(singular: list[float], bias: float = 0.0, seed: int = 0) -> tuple[Generator, torch.Tensor]:
    """An MLP G whose first layer is A = U diag(singular) Vᵀ, V random orthonormal: SeFa's answer is V's columns."""
    torch.manual_seed(seed)
    z_dim = len(singular)
    net = MLPGenerator(image_size=4, channels=1, z_dim=z_dim, g_hidden=32).eval()
    U, _ = torch.linalg.qr(torch.randn(32, z_dim))
    V, _ = torch.linalg.qr(torch.randn(z_dim, z_dim))
    with torch.no_grad():
        net.net[0].weight.copy_(U @ torch.diag(torch.tensor(singular)) @ V.T)
        net.net[0].bias.fill_(bias)
    return Generator(net), V


def test_sefa_finds_the_top_right_singular_vectors_of_the_first_layer():
    singular = [10.0, 6.0, 3.0, 2.0, 1.0, 0.5]
    G, V = linear_generator(singular)
    found = directions.sefa(G, k=4)
    assert found.vectors.shape == (4, 6)
    cosines = (found.vectors @ V[:, :4]).diagonal().abs()
    assert cosines.min() > 0.9999, cosines  # each, in order, the known direction (up to its sign)
    assert torch.allclose(found.vectors.norm(dim=1), torch.ones(4))
    share = torch.tensor(singular) ** 2 / sum(s * s for s in singular)
    assert torch.allclose(found.strength, share[:4], atol=1e-6)
    largest = found.vectors.gather(1, found.vectors.abs().argmax(1, keepdim=True))
    assert (largest > 0).all()  # signs fixed: the largest entry is positive
    with pytest.raises(Exception, match="choose 1 to 6"):
        directions.sefa(G, k=7)


def test_pca_of_an_early_layer_maps_back_to_the_strongest_direction():
    # a bias that keeps every ReLU open: the early activations are A z + b, whose top principal component, regressed
    # onto z, is A's top right singular vector
    G, V = linear_generator([8.0, 4.0, 2.0, 1.0, 1.0, 1.0], bias=100.0)
    found = directions.pca(G, k=3, samples=2048)
    cosines = (found.vectors @ V[:, :3]).diagonal().abs()
    assert cosines.min() > 0.98, cosines
    assert found.strength[0] > found.strength[1] > found.strength[2]
    assert torch.equal(directions.pca(G, k=3, samples=2048).vectors, found.vectors)  # the same every time


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    shapes = make_shapes_folder(tmp_path_factory.getbasetemp() / "shapes")
    text = {"model": "stackgan1", "data": f"captions:{shapes}", "image_size": 32, "g_width": 8, "d_width": 8,
            "z_dim": 8, "c_dim": 8, "text_dim": 16, "text_pretrain_steps": 5, "batch_size": 16, "log_every": 2,
            "n_samples": 16, "steps": 2}
    return {"dcgan": train(tiny_config(steps=2), runs_dir=out, progress=False),
            "cgan": train(tiny_config(steps=2, model="cgan"), runs_dir=out, progress=False),
            "mlp": train(tiny_config(steps=2, model="mlp", mlp_g_hidden=32, mlp_d_hidden=16), runs_dir=out,
                         progress=False),
            "light": train(tiny_config(steps=2, model="light", image_size=32, g_width=4, d_width=4), runs_dir=out,
                           progress=False),
            "stackgan1": train(TrainConfig(**text).validate(), runs_dir=out, progress=False)}


@pytest.mark.parametrize("kind", ["dcgan", "cgan", "mlp", "light"])
def test_directions_of_every_image_model_are_kept_in_the_run(runs, kind, tmp_path):
    run = runs[kind]
    for method in ("sefa", "pca"):
        out, js = tmp_path / f"{method}.png", tmp_path / f"{method}.json"
        assert main(["directions", str(run), "--method", method, "--k", "5", "--samples", "3", "--steps", "5",
                     "--pca-samples", "256", "--out", str(out), "--json", str(js)]) == 0
        figure = Image.open(out)
        assert figure.width > 5 * 3 * 28 and figure.height > 5 * 28  # 5 rows of 3 strips of 5 images
        written = json.loads(js.read_text())
        vectors = torch.tensor(written["vectors"])
        assert vectors.shape == (5, 16) and torch.allclose(vectors.norm(dim=1), torch.ones(5), atol=1e-5)
        record = json.loads((run / "directions" / f"{method}.json").read_text())
        assert record["checkpoint_sha256"] == load(run).meta["sha256"] and record["k"] == 5
    assert (run / "directions" / "sefa.safetensors").is_file()


def test_kept_directions_are_used_and_found_again_for_another_checkpoint(runs, tmp_path):
    run = runs["dcgan"]
    G = load(run)
    ckpt = find_checkpoint(run)
    first = directions.for_checkpoint(ckpt, G, "sefa", 4)
    kept = run / "directions" / "sefa.safetensors"
    stamp = kept.stat().st_mtime_ns
    assert torch.equal(directions.for_checkpoint(ckpt, G, "sefa", 3).vectors, first.vectors[:3])
    assert kept.stat().st_mtime_ns == stamp  # read, not found again
    G.meta["sha256"] = "0" * 64  # as if the run had saved a newer checkpoint
    directions.for_checkpoint(ckpt, G, "sefa", 4)
    assert json.loads(kept.with_suffix(".json").read_text())["checkpoint_sha256"] == "0" * 64


def test_sample_moves_every_z_along_a_direction(runs, tmp_path):
    run = runs["dcgan"]
    G = load(run)
    found = directions.for_checkpoint(find_checkpoint(run), G, "sefa", 10)
    out = tmp_path / "moved.npy"
    assert main(["sample", str(run), "--n", "6", "--seed", "4", "--direction", "2", "--amount", "1.5",
                 "--out", str(out)]) == 0
    import numpy as np

    moved = np.load(out)
    assert np.array_equal(moved, G.sample(6, 4, output="uint8", shift=1.5 * found.vectors[2])[:, 0].numpy())
    assert not np.array_equal(moved, G.sample(6, 4, output="uint8")[:, 0].numpy())
    z = torch.randn(6, 16)  # a direction moves z by a unit vector times the amount
    assert torch.allclose(z + found.shift({2: 1.5}) - z, 1.5 * found.vectors[2])


@pytest.mark.parametrize("argv, words", [
    (["--direction", "16"], "numbered 0 to 15"),
    (["--direction", "-1"], "numbered 0 to 15"),
    (["--grid-by-class", "--direction", "0"], "leave out --direction"),
])
def test_sample_refuses_a_direction_it_does_not_have(runs, tmp_path, capsys, argv, words):
    run = runs["cgan"] if "--grid-by-class" in argv else runs["dcgan"]
    assert main(["sample", str(run), "--out", str(tmp_path / "x.png"), *argv]) == 2
    assert words in capsys.readouterr().err


def test_text_to_image_directions_move_its_noise_z_only(runs, tmp_path, capsys):
    run = runs["stackgan1"]
    pipe = load(run)
    found = directions.sefa(pipe, k=4)
    assert found.vectors.shape == (4, pipe.noise_dim)
    assert not found.vectors[:, 8:].any()  # Conditioning Augmentation's noise is left alone
    captions = (run / "samples" / "captions.txt").read_text().splitlines()
    assert main(["directions", str(run), "--k", "3", "--samples", "2", "--steps", "3",
                 "--out", str(tmp_path / "d.png")]) == 0  # the run's first panel caption by default
    assert main(["directions", str(run), "--method", "pca", "--k", "3", "--samples", "2", "--steps", "3",
                 "--pca-samples", "64", "--caption", captions[0], "--out", str(tmp_path / "p.png")]) == 0
    out = tmp_path / "t.npy"
    assert main(["t2i", str(run), captions[0], "--n", "3", "--direction", "0", "--amount", "2", "--out", str(out)]) == 0
    import numpy as np

    kept = directions.for_checkpoint(find_checkpoint(run), pipe, "sefa", 8)  # z has 8 numbers
    coarse, _ = pipe([captions[0]], 3, 0, shift=2 * kept.vectors[0])
    from ganforge.data import to_uint8
    assert np.array_equal(np.load(out), to_uint8(coarse).permute(0, 2, 3, 1).numpy())
    assert main(["directions", str(runs["dcgan"]), "--caption", "a red disc"]) == 2
    assert "--caption is for text-to-image models" in capsys.readouterr().err
