"""Evaluate samples against a data source: features of both, then every metric that applies.

Real-set features are cached in `<cache>/real_features/` (records: io.py), named by (data, split, extractor,
n, size, channels) and by the SHA-256 of the extractor's weights and of the data's content.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ganforge.data import ImageData, load_data
from ganforge.errors import GanforgeError
from ganforge.io import cache_dir, read_cache, save_record
from ganforge.metrics import functions as M
from ganforge.metrics.extractor import Extractor
from ganforge.metrics.features import extract, get_extractor

SAMPLE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def load_samples(path: str | Path, size: int, channels: int) -> torch.Tensor:
    """Samples from a .npy (uint8 (N, H, W) or (N, H, W, 3)) or a folder of images -> uint8 NCHW."""
    path = Path(path)
    if path.is_dir():
        from ganforge.data.folder import load_folder
        return load_folder(str(path), size=size, channels=channels).images
    if path.suffix != ".npy" or not path.is_file():
        raise GanforgeError(f"{path}: samples must be a .npy file or a folder of images")
    array = np.load(path, allow_pickle=False)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3)):
        raise GanforgeError(f"{path}: expected uint8 (N, H, W) or (N, H, W, 3), got {array.dtype} {array.shape}")
    images = torch.from_numpy(array)
    return images[:, None] if images.dim() == 3 else images.permute(0, 3, 1, 2).contiguous()


def real_features(data: str, extractor, n: int, size: int, channels: int, data_dir: str | None = None,
                  root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(features, probabilities, labels) of the first n images of a fixed shuffle of the data's
    training split, computed once and cached. The cache file is named by what the features were
    computed from: the extractor's weights (SHA-256) and the data's content (a prepared set's manifest
    SHA-256, or a hash of the images in memory), so a retrained extractor or a changed folder is computed
    again, never mixed with old features. A damaged cache file is reported and rebuilt."""
    real = load_data(data, size, channels, data_dir=data_dir, folder_labels=extractor.classes is not None)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{data}-train-{extractor.name}")[-80:]
    key = f"{name}-{n}-{size}-{channels}-x{extractor.sha256[:16]}-d{real.content_sha256()[:16]}"
    path = (root or cache_dir()) / "real_features" / f"{key}.safetensors"

    def check(meta, tensors):
        if tensors["features"].dim() != 2 or len(tensors["features"]) != min(n, len(real)):
            raise ValueError(f"{tuple(tensors['features'].shape)} features for {min(n, len(real))} images")

    cached = read_cache(path, "computing the features again", check)
    if cached is not None:
        tensors = cached[1]
        return tensors["features"], tensors.get("probs"), tensors["labels"]
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:n]
    features, probs = extract(extractor, real.images[order])
    labels = real.labels[order] if real.labels is not None else torch.zeros(0, dtype=torch.int64)
    save_record(path, {"features": features, "labels": labels, **({"probs": probs} if probs is not None else {})},
                {"data": data, "extractor": extractor.name, "n": n})
    return features, probs, labels


def default_extractor(data: ImageData, spec: str) -> str:
    """The extractor a data set is measured with when none is named: ganforge's classifier of it when it has
    labels, else its self-supervised extractor (trained on its images, no labels needed)."""
    return f"classifier:{spec}" if data.labels is not None else f"ssl:{spec}"


def evaluate(samples: torch.Tensor, data: str, extractor: str | Extractor, n: int | None = None,
             data_dir: str | None = None, root: Path | None = None,
             requested_labels: torch.Tensor | None = None) -> dict:
    """All metrics of uint8 samples (N, C, H, W) against `data`, with the extractor and counts.
    With the classes a conditional G was asked for (`requested_labels`) and a classifier, also the
    share of samples classified as their requested class, overall and per class, and the recall within each
    class (its real images against the samples asked for it; recall_within_class: their mean)."""
    if isinstance(extractor, str):
        extractor = get_extractor(extractor, root)
    n = min(n or len(samples), len(samples))
    samples = samples[:n]
    _, channels, size, _ = samples.shape
    real, _, real_labels = real_features(data, extractor, n, size, channels, data_dir, root)
    fake, fake_probs = extract(extractor, samples)
    kid, kid_std = M.kid(real, fake, subsets=100, subset_size=min(1000, n))
    precision, recall = M.precision_recall(real, fake)
    density, coverage = M.density_coverage(real, fake)
    result = {"extractor": extractor.name, "data": data, "n_fake": len(fake), "n_real": len(real),
              "fid": M.fid(real, fake), "kid": kid, "kid_std": kid_std, "precision": precision, "recall": recall,
              "density": density, "coverage": coverage}
    if fake_probs is not None and extractor.classes and len(real_labels):
        n_classes = len(extractor.classes)
        predicted = fake_probs.argmax(1)
        result |= {"class_kl": M.class_histogram_kl(predicted, torch.bincount(real_labels, minlength=n_classes)),
                   "classes_covered": M.classes_covered(predicted, n_classes, min_share=0.1 / n_classes),
                   "n_classes": n_classes, "classifier_score": M.classifier_score(fake_probs)}
        if requested_labels is not None:
            hit = (predicted == requested_labels[:n]).double()
            per_class = torch.zeros(n_classes, dtype=torch.double).index_add_(0, requested_labels[:n], hit)
            asked = torch.bincount(requested_labels[:n], minlength=n_classes).clamp(min=1)
            recalls = M.recall_per_class(real, real_labels, fake, requested_labels[:n], n_classes)
            measured = [r for r in recalls if r is not None]
            result |= {"label_accuracy": hit.mean().item(),
                       "label_accuracy_per_class": dict(zip(extractor.classes, (per_class / asked).tolist())),
                       "recall_within_class": sum(measured) / len(measured) if measured else None,
                       "recall_per_class": dict(zip(extractor.classes, recalls))}
    return result


def measure(G, n: int = 10_000, seed: int = 0, data: str | None = None, extractor: str | Extractor | None = None,
            data_dir: str | None = None, root: Path | None = None) -> dict:
    """`evaluate` of n samples of a generator (a sampling.Generator; a class-conditional one draws every class in
    turn) against `data`, by default its training data, in `extractor`'s features, by default ganforge's
    classifier of labelled data, else the self-supervised extractor."""
    data = data or G.meta["config"]["data"]
    labels = G.labels(n)
    images = G.sample(n, seed, labels, output="uint8")
    if extractor is None:
        real = load_data(data, images.shape[-1], images.shape[1], data_dir=data_dir,
                         folder_labels=bool(G.meta.get("config", {}).get("folder_labels")))
        extractor = get_extractor(default_extractor(real, data), root, image_size=real.shape[-1],
                                  channels=real.shape[0])
    return evaluate(images, data, extractor, n, data_dir, root, requested_labels=labels)


def format_table(result: dict) -> str:
    """One labelled line per metric: the number, then what it was computed with."""
    label = f"[{result['extractor']}, {result['n_fake']} fake vs {result['n_real']} real, data {result['data']}]"
    lines = []
    for key, value in result.items():
        if key in ("extractor", "data", "n_fake", "n_real", "n_classes", "label_accuracy_per_class",
                   "recall_per_class") or value is None:
            continue
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        if key == "classes_covered":
            text += f" of {result['n_classes']}"
        lines.append(f"{key:<17}{text:>12}  {label}")
    for name, value in result.get("label_accuracy_per_class", {}).items():
        recall = result["recall_per_class"][name]
        lines.append(f"  {name:<15}{value:>12.4f}  (share classified as the class asked for)"
                     + (f"  recall within the class {recall:.4f}" if recall is not None else ""))
    return "\n".join(lines)
