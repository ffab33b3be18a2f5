import os

import pytest

from ganforge.config import TrainConfig

REQUIRE_ALL = os.environ.get("GANFORGE_REQUIRE_ALL") == "1"


def skip_or_fail(reason: str):
    """Skip when an optional component is missing; fail instead in CI (GANFORGE_REQUIRE_ALL=1)."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (GANFORGE_REQUIRE_ALL=1: every component must be installed)")
    pytest.skip(reason)


def tiny_config(**changes) -> TrainConfig:
    """A DCGAN small enough to train a few dozen steps in a second or two."""
    values = {"model": "dcgan", "data": "digits", "g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 256,
              "log_every": 5, "n_samples": 16, "steps": 10}
    values.update(changes)
    return TrainConfig(**values).validate()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own cache folder: no test reads a user's cache."""
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
