"""ganforge: generative adversarial networks that train on a laptop CPU and scale to GPUs.

The Python API (docs/python-api.md):

    import ganforge
    run = ganforge.train({"data": "digits", "steps": 500})  # -> the run folder
    g = ganforge.load(run)                                  # its generator (the EMA of G's weights)
    images = g.sample(16, seed=0)                           # floats in [-1, 1], (16, 1, 28, 28)
"""

from ganforge.config import TrainConfig
from ganforge.errors import GanforgeError
from ganforge.inference import load
from ganforge.training import train
from ganforge.version import __version__

__all__ = ["GanforgeError", "TrainConfig", "__version__", "load", "train"]
