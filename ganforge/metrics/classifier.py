"""ganforge's own domain classifier: a small CNN trained on labelled data, cached on disk.

Its penultimate layer (128 units) gives features for FID and friends; its softmax gives class
predictions for the class-based scores. Stored as safetensors + JSON (data, split, test accuracy,
SHA-256) in `<cache>/classifiers/`. Nothing is downloaded: it is trained here from the data.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ganforge.checkpoint import load_module_state, sha256_file, write_atomic
from ganforge.data import ImageData, cache_dir, load_data, to_float
from ganforge.errors import GanforgeError

FEATURES = 128


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
               channels: int | None = None) -> tuple[ImageData, ImageData, str]:
    """(train, held-out, description): the standard test files for mnist / fashion-mnist,
    otherwise a fixed, seeded 10% of the images."""
    kwargs = {"data_dir": data_dir, "folder_labels": spec.startswith("folder:")}
    if spec in ("mnist", "fashion-mnist"):
        return (load_data(spec, image_size, channels, **kwargs),
                load_data(spec, image_size, channels, split="test", **kwargs), "test files")
    data = load_data(spec, image_size, channels, **kwargs)
    if data.labels is None:
        raise GanforgeError(f"{spec}: a classifier needs labels (folders: one subfolder per class)")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    cut = len(data) // 10
    train, held_out = order[cut:], order[:cut]
    return (ImageData(data.images[train], data.labels[train], data.classes),
            ImageData(data.images[held_out], data.labels[held_out], data.classes), "a fixed 10% held out (seed 0)")


def classifier_path(spec: str, root: Path | None = None) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)
    return (root or cache_dir()) / "classifiers" / f"{name}.safetensors"


@torch.no_grad()
def accuracy(net: nn.Module, data: ImageData, batch: int = 500) -> float:
    net.eval()
    hits = sum((net(to_float(data.images[i:i + batch])).argmax(1) == data.labels[i:i + batch]).sum().item()
               for i in range(0, len(data), batch))
    return hits / len(data)


def train_classifier(spec: str, root: Path | None = None, epochs: int = 6, data_dir: str | None = None,
                     progress: bool = True, limit: int | None = None) -> Path:
    """Train the classifier of a data source, save it in the cache, return its path.

    limit: train on only this many images (for quick tests).
    """
    torch.manual_seed(0)
    train, held_out, split = split_data(spec, data_dir)
    if limit:
        train = ImageData(train.images[:limit], train.labels[:limit], train.classes)
    net = DomainClassifier(train.images.shape[1], len(train.classes))
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
            loss = F.cross_entropy(net(to_float(train.images[idx])), train.labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
        bar.set_postfix(held_out_acc=f"{accuracy(net, held_out):.4f}")
    bar.close()
    meta = {"data": spec, "split": split, "test_accuracy": accuracy(net, held_out), "epochs": epochs,
            "train_images": len(train), "channels": train.images.shape[1], "image_size": train.images.shape[-1],
            "classes": train.classes, "class_counts": torch.bincount(train.labels, minlength=len(train.classes)).tolist(),
            "seconds": round(time.perf_counter() - start, 1)}
    path = classifier_path(spec, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(net.state_dict(), str(tmp))
    tmp.replace(path)
    meta["sha256"] = sha256_file(path)
    write_atomic(path.with_suffix(".json"), json.dumps(meta, indent=1).encode())
    return path


def load_classifier(spec: str, root: Path | None = None) -> tuple[DomainClassifier, dict]:
    """The cached classifier of a data source -> (net in eval mode, its JSON)."""
    path = classifier_path(spec, root)
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        raise GanforgeError(f"no classifier for {spec} in {path.parent}; train one with "
                            f"`ganforge classifier train --data {spec}`")
    meta = json.loads(meta_path.read_text())
    if sha256_file(path) != meta.get("sha256"):
        raise GanforgeError(f"{path}: content does not match its checksum; train it again")
    net = DomainClassifier(meta["channels"], len(meta["classes"]))
    load_module_state(net, load_file(str(path)), f"classifier:{spec}")
    return net.eval(), meta
