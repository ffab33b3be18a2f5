"""The inception extractor, exercised with random weights saved in pytorch-fid's file format."""

import json

import numpy as np
import pytest
import torch
from conftest import skip_or_fail

from ganforge.cli import main
from ganforge.data import load_data
from ganforge.errors import GanforgeError
from ganforge.io import cache_dir
from ganforge.metrics.features import extract, get_extractor
from ganforge.metrics.functions import feature_stats, fid_from_stats
from ganforge.metrics.inception import WEIGHTS_FILE, fid_inception


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A state dict of the FID Inception, randomly initialised so that activations keep their scale."""
    torch.manual_seed(0)
    net = fid_inception()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.bias.data.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def images():
    return load_data("digits").images[:12]  # uint8 (12, 1, 28, 28)


def test_missing_weights_name_the_file_and_where_to_put_it(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(GanforgeError) as err:
        get_extractor("inception")
    message = str(err.value)
    assert WEIGHTS_FILE in message and str(cache_dir() / "inception" / WEIGHTS_FILE) in message
    assert "--inception-weights" in message and "never downloads" in message

    np.save(tmp_path / "s.npy", np.zeros((4, 1, 28, 28), np.uint8))
    assert main(["eval", "--samples", str(tmp_path / "s.npy"), "--data", "digits", "--extractor", "inception",
                 "--inception-weights", str(tmp_path / "nowhere.pth")]) == 2
    assert f"{tmp_path / 'nowhere.pth'}" in capsys.readouterr().err


def test_environment_variable_points_at_the_file(weights, monkeypatch):
    monkeypatch.setenv("GANFORGE_INCEPTION_WEIGHTS", str(weights))
    extractor = get_extractor("inception")
    # not the standard file, so its numbers carry the file's hash and are never mistaken for standard FIDs
    assert extractor.name == f"inception[sha256:{extractor.sha256[:8]}]" and not extractor.standard


@pytest.mark.parametrize("content", [b"<html>not found</html>", "state dict of another network"])
def test_a_wrong_file_is_refused_clearly(tmp_path, content):
    path = tmp_path / WEIGHTS_FILE
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(GanforgeError, match="not a readable PyTorch weights file|not pytorch-fid's Inception"):
        get_extractor("inception", inception_weights=path)


def test_features_are_pool3_batch_independent_and_gray_is_rgb(weights, images):
    extractor = get_extractor("inception", inception_weights=weights)
    a, probs = extract(extractor, images, batch=12)
    b, _ = extract(extractor, images, batch=5)
    assert a.shape == (12, 2048) and probs is None and a.std() > 0.1
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    rgb, _ = extract(extractor, images.expand(-1, 3, -1, -1), batch=12)
    assert torch.allclose(a, rgb)


def test_matches_pytorch_fid_features_and_distance(weights, images, monkeypatch):
    try:
        import pytorch_fid.fid_score as reference_score
        import pytorch_fid.inception as reference
    except ImportError:
        skip_or_fail("pytorch-fid is not installed (pip install pytorch-fid); it is the reference we check against")
    # pytorch-fid fetches its weights by URL; hand it the same local file instead
    monkeypatch.setattr(reference, "load_state_dict_from_url", lambda *a, **k: torch.load(weights))
    net = reference.InceptionV3([reference.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    rgb = images.expand(-1, 3, -1, -1)
    with torch.no_grad():  # pytorch-fid reads image files as RGB floats in [0, 1]
        expected = net(rgb.float() / 255)[0].flatten(1).double()
    ours, _ = extract(get_extractor("inception", inception_weights=weights), images)
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-6)

    # and the distance itself, on features with well-conditioned covariances
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2000, 64)), rng.normal(0.1, 1.2, size=(2000, 64)) @ rng.normal(size=(64, 64)) / 8
    ref = reference_score.calculate_frechet_distance(*feature_stats(x), *feature_stats(y))
    assert fid_from_stats(*feature_stats(x), *feature_stats(y)) == pytest.approx(ref, rel=1e-6)


def test_eval_command_with_inception(weights, images, tmp_path):
    np.save(tmp_path / "s.npy", images[:, 0].numpy())
    out = tmp_path / "m.json"
    assert main(["eval", "--samples", str(tmp_path / "s.npy"), "--data", "digits", "--n", "12",
                 "--extractor", "inception", "--inception-weights", str(weights), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["extractor"].startswith("inception[sha256:") and result["n_fake"] == 12
    assert result["fid"] > 0 and "class_kl" not in result


def test_the_standard_file_is_known_by_its_whole_sha256():
    from ganforge.metrics.inception import STANDARD_SHA256, is_standard

    assert len(STANDARD_SHA256) == 64 and STANDARD_SHA256.startswith("6726825d")  # the digits its name carries
    assert is_standard(STANDARD_SHA256) and is_standard(STANDARD_SHA256.upper())
    assert not is_standard(STANDARD_SHA256[:8] + "0" * 56)  # the same 8 digits are not the same file
    assert not is_standard(STANDARD_SHA256[:-1] + "0")
