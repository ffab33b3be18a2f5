"""ganforge's version: in checkpoints, prepared sets and `ganforge --version`."""

__version__ = "0.1.0"
