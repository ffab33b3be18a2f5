"""The attribute classifier: trained on faces, cached, and what queries are answered with."""

import pytest
import torch

from ganforge.cli import main
from ganforge.data import load_data, to_float
from ganforge.data.faces import draw_faces
from ganforge.errors import GanforgeError
from ganforge.metrics.classifier import (
    attribute_scorer,
    classifier_path,
    load_classifier,
    resize_to,
    train_classifier,
)
from ganforge.metrics.evaluate import evaluate
from ganforge.metrics.features import get_extractor


def test_attribute_classifier_is_trained_cached_and_reads_faces(tmp_path):
    path = train_classifier("faces", tmp_path, epochs=2, limit=4000, attributes=True, progress=False)
    assert path == classifier_path("faces", tmp_path, attributes=True) and path.name == "faces-attributes.safetensors"
    _, meta = load_classifier("faces", tmp_path, attributes=True)
    assert meta["image_size"] == 32 and len(meta["attribute_accuracy"]) == len(meta["attributes"]) == 16
    accuracy = list(meta["attribute_accuracy"].values())
    assert meta["test_accuracy"] == min(accuracy) and sum(accuracy) / len(accuracy) > 0.8
    classify, names = attribute_scorer("faces", tmp_path)
    images, truth = draw_faces(300, seed=4321)  # faces the classifier never saw, at 64 px
    agree = ((classify(to_float(images)) > 0) == truth).double().mean(0)
    share = truth.double().mean(0)
    guess = torch.maximum(share, 1 - share)  # answering each attribute's commoner value: 0.69 on average
    assert agree.mean() > guess.mean() + 0.15, dict(zip(names, agree.tolist()))
    assert (agree > guess + 0.1).sum() >= 12, dict(zip(names, (agree - guess).tolist()))  # 14 of 16 measured
    # classifier:faces, the faces having attributes and no classes, is this classifier's features
    extractor = get_extractor("classifier:faces", tmp_path)
    assert extractor.classes is None and extractor.sha256 == meta["sha256"]
    assert torch.equal(extractor.features(to_float(images[:4])), extractor.net.body(resize_to(to_float(images[:4]), 32)))
    result = evaluate(images[:100], "faces", extractor, 100, root=tmp_path)
    assert result["extractor"] == "classifier:faces" and result["fid"] > 0 and "class_kl" not in result
    with pytest.raises(GanforgeError, match="ganforge classifier train --data digits --attributes"):
        load_classifier("digits", tmp_path, attributes=True)
    with pytest.raises(GanforgeError, match="needs images with attributes"):
        train_classifier("digits", tmp_path, attributes=True)


def test_faces_run_folder_and_subset(tmp_path):
    data = load_data("faces", 32)
    part = data.subset(torch.arange(5))
    assert part.images.shape == (5, 3, 32, 32) and part.attributes.shape == (5, 16)
    assert part.attribute_names == data.attribute_names and torch.equal(part.attributes, data.attributes[:5])


@pytest.mark.slow
def test_attribute_classifier_reaches_95_percent_on_every_attribute(tmp_path, capsys):
    assert main(["classifier", "train", "--data", "faces", "--attributes", "--cache-dir", str(tmp_path)]) == 0
    _, meta = load_classifier("faces", tmp_path, attributes=True)
    assert min(meta["attribute_accuracy"].values()) >= 0.95, meta["attribute_accuracy"]
    assert "worst attribute's held-out accuracy" in capsys.readouterr().err
