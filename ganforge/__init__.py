"""ganforge: generative adversarial networks that train on a laptop CPU and scale to GPUs."""

__version__ = "0.1.0"

from ganforge.errors import GanforgeError

__all__ = ["GanforgeError", "__version__"]
