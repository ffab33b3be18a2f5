"""ganforge's own domain classifier: a small CNN trained on labelled data, cached on disk.

Its penultimate layer (128 units) gives features for FID and friends; its softmax gives class
predictions for the class-based scores. With `attributes=True` the same network is a multi-label
attribute classifier (one sigmoid per attribute, e.g. smiling, glasses), trained on data that
carries attributes (faces, CelebA); it is what latent arithmetic is checked with. Stored as
a record (io.py: safetensors + JSON with data, split, held-out accuracy, SHA-256) in `<cache>/classifiers/`.
Nothing is downloaded: it is trained here from the data.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ganforge.data import ImageData, find_source, fit, load_data, to_float
from ganforge.errors import GanforgeError
from ganforge.io import DamagedRecord, cache_dir, load_module_state, load_or_train, load_record, save_record

FEATURES = 128
ATTRIBUTE_SIZE = 32  # attributes are read at most at this size: 4x cheaper than 64 px, and the faces' attributes stay clear


class DomainClassifier(nn.Module):
    def __init__(self, channels: int = 1, n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(True), nn.MaxPool2d(2),  # 32 x H/2
            nn.Conv2d(32, 64, 3, 1, 1), nn.BatchNorm2d(64), nn.ReLU(True), nn.MaxPool2d(2),  # 64 x H/4
            nn.Conv2d(64, 128, 3, 1, 1), nn.BatchNorm2d(128), nn.ReLU(True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),  # 128 * 4 * 4, whatever the image size
            nn.Dropout(0.3), nn.Linear(128 * 16, FEATURES), nn.ReLU(True),  # the features
        )
        self.head = nn.Linear(FEATURES, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def split_data(spec: str, data_dir: str | None = None, image_size: int | None = None,
               channels: int | None = None, attributes: bool = False) -> tuple[ImageData, ImageData, str]:
    """(train, held-out, description): the standard test files for mnist / fashion-mnist,
    otherwise a fixed, seeded 10% of the images."""
    source, _ = find_source(spec)
    kwargs = {"data_dir": data_dir, **source.classify_with}
    if source.held_out_files:
        return (load_data(spec, image_size, channels, **kwargs),
                load_data(spec, image_size, channels, split="test", **kwargs), "test files")
    data = load_data(spec, image_size, channels, **kwargs)
    if attributes and data.attributes is None:
        raise GanforgeError(f"{spec}: an attribute classifier needs images with attributes (faces, celeba:PATH)")
    if not attributes and data.labels is None:
        raise GanforgeError(f"{spec}: a classifier needs labels (folders: one subfolder per class)")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    cut = len(data) // 10
    return data.subset(order[cut:]), data.subset(order[:cut]), "a fixed 10% held out (seed 0)"


def has_attributes_only(spec: str) -> bool:
    """Whether a source's images carry attributes and no class labels (its classifier is of attributes)."""
    data = load_data(spec, **find_source(spec)[0].classify_with)
    return data.labels is None and data.attributes is not None


def classifier_path(spec: str, root: Path | None = None, attributes: bool = False) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec) + ("-attributes" if attributes else "")
    return (root or cache_dir()) / "classifiers" / f"{name}.safetensors"


@torch.no_grad()
def accuracy(net: nn.Module, data: ImageData, batch: int = 500) -> float:
    net.eval()
    device = next(net.parameters()).device
    hits = sum((net(to_float(data.images[i:i + batch].to(device))).argmax(1).cpu() == data.labels[i:i + batch])
               .sum().item() for i in range(0, len(data), batch))
    return hits / len(data)


@torch.no_grad()
def attribute_accuracy(net: nn.Module, data: ImageData, batch: int = 500) -> torch.Tensor:
    """Per attribute, the share of images for which it is predicted right: (A,)."""
    net.eval()
    device = next(net.parameters()).device
    hits = sum(((net(to_float(data.images[i:i + batch].to(device))).cpu() > 0) == data.attributes[i:i + batch]).sum(0)
               for i in range(0, len(data), batch))
    return hits.double() / len(data)


def train_classifier(spec: str, root: Path | None = None, epochs: int | None = None, data_dir: str | None = None,
                     progress: bool = True, limit: int | None = None, attributes: bool = False,
                     device: str = "cpu") -> Path:
    """Train the classifier of a data source (of its attributes with `attributes`) on `device`, save it in the
    cache, return its path.

    epochs: default 6 for classes, 10 for attributes (smiling at 32 px needs them to pass 95%).
    limit: train on only this many images (for quick tests).
    """
    epochs = epochs or (10 if attributes else 6)
    torch.manual_seed(0)
    train, held_out, split = split_data(spec, data_dir, attributes=attributes)
    if attributes and train.images.shape[-1] > ATTRIBUTE_SIZE:
        train, held_out = (ImageData(fit(d.images, ATTRIBUTE_SIZE, d.images.shape[1]), attributes=d.attributes,
                                     attribute_names=d.attribute_names) for d in (train, held_out))
    if limit:
        train = train.subset(torch.arange(min(limit, len(train))))
    outputs = len(train.attribute_names) if attributes else len(train.classes)
    net = DomainClassifier(train.images.shape[1], outputs).to(device)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    steps = epochs * (len(train) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=f"classifier:{spec}", unit="step", disable=not progress)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
        for i in range(len(train) // 128):
            idx = order[i * 128:(i + 1) * 128]
            logits = net(to_float(train.images[idx].to(device)))
            if attributes:
                loss = F.binary_cross_entropy_with_logits(logits, train.attributes[idx].float().to(device))
            else:
                loss = F.cross_entropy(logits, train.labels[idx].to(device), label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
        if attributes:
            bar.set_postfix(worst_attribute_acc=f"{attribute_accuracy(net, held_out).min():.4f}")
        else:
            bar.set_postfix(held_out_acc=f"{accuracy(net, held_out):.4f}")
    bar.close()
    meta = {"data": spec, "split": split, "epochs": epochs, "train_images": len(train),
            "channels": train.images.shape[1], "image_size": train.images.shape[-1]}
    if attributes:
        per_attribute = attribute_accuracy(net, held_out).tolist()
        meta |= {"attributes": train.attribute_names, "test_accuracy": min(per_attribute),
                 "attribute_accuracy": dict(zip(train.attribute_names, per_attribute)),
                 "attribute_frequency": dict(zip(train.attribute_names, train.attributes.double().mean(0).tolist()))}
    else:
        meta |= {"classes": train.classes, "test_accuracy": accuracy(net, held_out),
                 "class_counts": torch.bincount(train.labels, minlength=len(train.classes)).tolist()}
    meta["seconds"] = round(time.perf_counter() - start, 1)
    path = classifier_path(spec, root, attributes)
    save_record(path, {k: v.cpu() for k, v in net.state_dict().items()}, meta)
    return path


def load_classifier(spec: str, root: Path | None = None, attributes: bool = False) -> tuple[DomainClassifier, dict]:
    """The cached classifier of a data source (or of its attributes) -> (net in eval mode, its JSON)."""
    path = classifier_path(spec, root, attributes)
    if not (path.is_file() and path.with_suffix(".json").is_file()):
        flag = " --attributes" if attributes else ""
        raise GanforgeError(f"no {'attribute ' if attributes else ''}classifier for {spec} in {path.parent}; "
                            f"train one with `ganforge classifier train --data {spec}{flag}`")
    meta, state = load_record(path, "train the classifier again")
    try:
        net = DomainClassifier(meta["channels"], len(meta["attributes"] if attributes else meta["classes"]))
    except (KeyError, TypeError) as e:
        raise DamagedRecord(f"{path.with_suffix('.json')}: damaged, not a classifier's record ({e})") from None
    load_module_state(net, state, f"classifier:{spec}")
    return net.eval(), meta


def attribute_scorer(spec: str, root: Path | None = None):
    """(function: float images in [-1, 1] -> attribute logits (N, A), attribute names) from the cached
    attribute classifier of a data source, trained first (and said so) when missing. Images of
    another size are resized to the classifier's."""
    net, meta = load_or_train(f"the attribute classifier of {spec}", classifier_path(spec, root, attributes=True),
                              lambda: load_classifier(spec, root, attributes=True),
                              lambda: train_classifier(spec, root, attributes=True))

    @torch.no_grad()
    def classify(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(resize_to(images[i:i + 500], meta["image_size"])) for i in range(0, len(images), 500)])

    return classify, meta["attributes"]


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Float images brought to a classifier's input size (antialiased), unchanged when they fit."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
