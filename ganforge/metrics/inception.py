"""Inception-v3 pool3 features as FID's reference implementations compute them, from a local weights file.

The network is torchvision's Inception3 with the four changes the TensorFlow FID graph has (average
pools that ignore padding, a max pool in the last block), loaded from pytorch-fid's weights file
`pt_inception-2015-12-05-6726825d.pth`. Images are resized to 299x299 (bilinear) and fed in [-1, 1];
grayscale is repeated to RGB, as image files converted to RGB would be. ganforge never downloads
the file: a user puts it in place (`--inception-weights PATH`, GANFORGE_INCEPTION_WEIGHTS, or the cache).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.models import inception as tv

from ganforge.errors import GanforgeError
from ganforge.io import cache_dir, sha256_file
from ganforge.metrics.extractor import Extractor

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
# the whole SHA-256 of pytorch-fid's file (its name carries the first 8 hex digits); a file whose digest only
# begins the same is not it
STANDARD_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
ENV = "GANFORGE_INCEPTION_WEIGHTS"


class _PoolA(tv.InceptionA):
    def _forward(self, x):
        outs = super()._forward(x)
        outs[-1] = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return outs


class _PoolC(tv.InceptionC):
    def _forward(self, x):
        outs = super()._forward(x)
        outs[-1] = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        return outs


class _PoolE(tv.InceptionE):
    """Mixed_7b pools with an average that ignores padding, Mixed_7c with a max."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__(in_channels)
        self.pool = pool

    def _forward(self, x):
        outs = super()._forward(x)
        pooled = (F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False) if self.pool == "avg"
                  else F.max_pool2d(x, 3, stride=1, padding=1))
        outs[-1] = self.branch_pool(pooled)
        return outs


def fid_inception() -> tv.Inception3:
    """The FID variant of Inception-v3 (1008 classes, as in the TensorFlow graph), weights uninitialised."""
    net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = _PoolA(192, 32), _PoolA(256, 64), _PoolA(288, 64)
    net.Mixed_6b, net.Mixed_6c = _PoolC(768, 128), _PoolC(768, 160)
    net.Mixed_6d, net.Mixed_6e = _PoolC(768, 160), _PoolC(768, 192)
    net.Mixed_7b, net.Mixed_7c = _PoolE(1280, "avg"), _PoolE(2048, "max")
    return net.eval()


def pool3(net: tv.Inception3, x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] at 299x299 -> the 2048 features before the classifier."""
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"):
        x = getattr(net, name)(x)
    return x.flatten(1)


def weights_path(given: str | Path | None = None, root: Path | None = None) -> Path:
    """Where the weights are: the given path, else $GANFORGE_INCEPTION_WEIGHTS, else the cache folder."""
    home = (root or cache_dir()) / "inception" / WEIGHTS_FILE
    if given or os.environ.get(ENV):
        path = Path(given or os.environ[ENV]).expanduser()
        where = "given path" if given else f"${ENV}"
    else:
        path = home
        where = "cache folder"
    if not path.is_file():
        raise GanforgeError(
            f"the inception extractor needs the FID Inception weights file {WEIGHTS_FILE}, not found at "
            f"{path} ({where}). ganforge never downloads it: fetch it on a machine that is online from "
            f"{WEIGHTS_URL} and put it at {home}, or point "
            f"--inception-weights or ${ENV} at it. Offline, use --extractor classifier:<data> instead.")
    return path


def load_fid_inception(path: Path) -> tuple[tv.Inception3, str]:
    """The network with the file's weights, and the file's SHA-256. Only tensors are unpickled."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        # a truncated download, an HTML page saved under the name, a pickle of other objects
        raise GanforgeError(f"{path} is not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from None
    net = fid_inception()
    if not isinstance(state, dict):
        raise GanforgeError(f"{path} holds a {type(state).__name__}, not a state dict of Inception weights")
    expected = net.state_dict()
    # files saved before BatchNorm counted its batches lack num_batches_tracked, which eval never reads
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise GanforgeError(f"{path} is not pytorch-fid's Inception weights file: "
                            f"{len(missing)} tensors missing (e.g. {missing[:3]}), "
                            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise GanforgeError(f"{path}: tensor {key} has shape {tuple(value.shape)}, "
                                f"Inception-v3 needs {tuple(expected[key].shape)}")
    net.load_state_dict(state, strict=False)  # every key checked above
    return net, sha256_file(path)


def is_standard(sha256: str) -> bool:
    """Whether a weights file is pytorch-fid's standard one: its whole SHA-256, not the 8 digits of its name."""
    return sha256.lower() == STANDARD_SHA256


class Inception(Extractor):
    """FID's Inception-v3 pool3 features. Named `inception` with the standard file; with any other
    weights the name carries the file's hash, so its numbers are never mistaken for standard ones."""

    def __init__(self, weights: str | Path | None = None, root: Path | None = None):
        self.net, self.sha256 = load_fid_inception(weights_path(weights, root))
        self.memory_format = torch.channels_last  # 1.6x faster on CPU (benchmarks/inception.py)
        self.net.to(memory_format=self.memory_format)
        self.standard = is_standard(self.sha256)
        self.name = "inception" if self.standard else f"inception[sha256:{self.sha256[:8]}]"

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[1] != 3:
            raise GanforgeError(f"the inception extractor takes 1- or 3-channel images, not {images.shape[1]}")
        # resized in [0, 1] and then scaled to [-1, 1], in pytorch-fid's order
        x = F.interpolate((images + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        return pool3(self.net, x.contiguous(memory_format=self.memory_format))


__all__ = ["WEIGHTS_FILE", "Inception", "fid_inception", "load_fid_inception", "pool3", "weights_path"]
