import json

import numpy as np
import pytest
import torch
from conftest import tiny_config

from ganforge import train
from ganforge.checkpoint import load_checkpoint
from ganforge.cli import main
from ganforge.data import load_data
from ganforge.errors import GanforgeError
from ganforge.metrics import evaluate as evaluate_module
from ganforge.metrics.classifier import classifier_path, load_classifier, train_classifier
from ganforge.metrics.evaluate import evaluate
from ganforge.metrics.features import Pixels, extract, get_extractor
from ganforge.stats import read_stats


@pytest.fixture(scope="module")
def digits():
    data = load_data("digits")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(5))
    return data.images[order[:600]]


def test_pixels_features_are_batch_independent(digits):
    a, probs = extract(Pixels(), digits, batch=500)
    b, _ = extract(Pixels(), digits, batch=7)
    assert a.shape == (600, 64) and probs is None
    assert torch.allclose(a, b)


def test_real_digits_score_far_better_than_noise(tmp_path, digits):
    noise = torch.randint(0, 256, digits.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    real = evaluate(digits, "digits", "pixels", root=tmp_path)
    fake = evaluate(noise, "digits", "pixels", root=tmp_path)
    assert real["n_fake"] == real["n_real"] == 600 and real["extractor"] == "pixels"
    assert real["fid"] < 0.05 * fake["fid"]
    assert real["precision"] > 0.8 and real["recall"] > 0.8
    assert fake["precision"] == 0 and fake["coverage"] == 0
    assert abs(real["kid"]) < 3 * real["kid_std"] + 1e-3 < fake["kid"]


def test_real_features_are_cached(tmp_path, digits, monkeypatch):
    evaluate(digits[:100], "digits", "pixels", root=tmp_path)
    calls = []
    real_extract = evaluate_module.extract
    monkeypatch.setattr(evaluate_module, "extract", lambda *a, **k: calls.append(1) or real_extract(*a, **k))
    evaluate(digits[:100], "digits", "pixels", root=tmp_path)
    assert len(calls) == 1  # the samples only; the real set came from the cache


def test_classifier_is_trained_stored_and_checked(tmp_path, digits):
    path = train_classifier("digits", tmp_path, epochs=2, limit=4000, progress=False)
    assert path == classifier_path("digits", tmp_path) and path.with_suffix(".json").is_file()
    _, meta = load_classifier("digits", tmp_path)
    assert meta["data"] == "digits" and meta["test_accuracy"] > 0.8 and len(meta["sha256"]) == 64
    result = evaluate(digits, "digits", "classifier:digits", root=tmp_path)
    assert result["classes_covered"] == 10 and result["class_kl"] < 0.05
    assert result["classifier_score"] > 5
    assert result["fid"] < 5
    labelled = load_data("digits")  # a conditional G's samples: each class's real images, under their labels ...
    order = torch.randperm(len(labelled), generator=torch.Generator().manual_seed(6))[:600]
    images, labels = labelled.images[order], labelled.labels[order]
    varied = evaluate(images, "digits", "classifier:digits", root=tmp_path, requested_labels=labels)
    first = torch.stack([torch.nonzero(labels == c)[0, 0] for c in range(10)])
    one = evaluate(images[first[labels]], "digits", "classifier:digits", root=tmp_path, requested_labels=labels)
    assert varied["label_accuracy"] > 0.8 and varied["recall_within_class"] > 0.5  # ... or one image per class
    assert one["recall_within_class"] < 0.05 and set(one["recall_per_class"]) == set(meta["classes"])
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(GanforgeError, match="checksum"):
        load_classifier("digits", tmp_path)


def test_missing_classifier_and_unknown_extractor(tmp_path):
    with pytest.raises(GanforgeError, match="ganforge classifier train --data mnist"):
        load_classifier("mnist", tmp_path)
    with pytest.raises(GanforgeError, match="unknown feature extractor"):
        get_extractor("inception-v9", tmp_path)


def test_eval_command_on_samples_and_on_a_run(tmp_path, capsys, digits):
    samples = tmp_path / "s.npy"
    np.save(samples, digits[:, 0].numpy())
    out_json = tmp_path / "m.json"
    assert main(["eval", "--samples", str(samples), "--data", "digits", "--extractor", "pixels",
                 "--json", str(out_json)]) == 0
    table = capsys.readouterr().out
    assert "[pixels, 600 fake vs 600 real, data digits]" in table
    result = json.loads(out_json.read_text())
    assert {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "extractor", "n_fake"} <= result.keys()
    run = train(tiny_config(steps=3), runs_dir=tmp_path, progress=False)
    assert main(["eval", str(run), "--n", "200", "--extractor", "pixels"]) == 0
    assert "200 fake vs 200 real" in capsys.readouterr().out
    assert main(["eval", "--extractor", "pixels"]) == 2
    assert "either a checkpoint" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 5), dtype=np.float32))
    assert main(["eval", "--samples", str(bad), "--data", "digits"]) == 2
    assert "expected uint8" in capsys.readouterr().err


def test_eval_every_measures_during_training_and_stays_exact(tmp_path):
    cfg = tiny_config(steps=80, eval_every=1, eval_n=200, eval_extractor="pixels")  # 39 steps an epoch
    run = train(cfg, runs_dir=tmp_path / "a", progress=False)
    lines = read_stats(run).lines
    measured = [s for s in lines if "fid" in s]
    assert [s["step"] for s in measured] == [39, 78]
    assert all(s["extractor"] == "pixels" and s["n_fake"] == 200 and s["fid"] > 0 for s in measured)
    plain = train(tiny_config(steps=80), runs_dir=tmp_path / "b", progress=False)
    a = load_checkpoint(run)[1]["G/project.weight"]
    assert torch.equal(a, load_checkpoint(plain)[1]["G/project.weight"])  # measuring changes nothing


def test_compare_runs(tmp_path, capsys):
    cfg = tiny_config(steps=40, eval_every=1, eval_n=100, eval_extractor="pixels")
    a = train(cfg, runs_dir=tmp_path, progress=False)
    b = train(tiny_config(steps=40, seed=1, eval_every=1, eval_n=100, eval_extractor="pixels"),
              runs_dir=tmp_path, progress=False)
    out = tmp_path / "cmp.png"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    fid_a = read_stats(a).evals[-1]["fid"]
    assert a.name in table and b.name in table and f"{fid_a:.4f}" in table
    assert out.stat().st_size > 5000
    plain = train(tiny_config(steps=10), runs_dir=tmp_path, progress=False)
    assert main(["compare", str(plain)]) == 2
    assert "--eval-every" in capsys.readouterr().err
