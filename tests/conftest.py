import json
import os
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from ganforge.config import TrainConfig

REQUIRE_ALL = os.environ.get("GANFORGE_REQUIRE_ALL") == "1"


def skip_or_fail(reason: str):
    """Skip when an optional component is missing; fail instead in CI (GANFORGE_REQUIRE_ALL=1)."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (GANFORGE_REQUIRE_ALL=1: every component must be installed)")
    pytest.skip(reason)


SHAPE_COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 40)}
SHAPES = ("square", "disc")


def make_shapes_folder(root: Path, count: int = 32, paraphrase: str = "a {shape} {color}") -> Path:
    """A captions.jsonl folder: `count` images of a coloured square or disc on gray, each captioned
    "a {color} {shape}" and by the paraphrase."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        color, shape = list(SHAPE_COLORS)[i % 4], SHAPES[(i // 4) % 2]
        image = Image.new("RGB", (32, 32), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        box = (6 + i % 5, 6 + i % 3, 24 + i % 5, 24 + i % 3)
        (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=SHAPE_COLORS[color])
        image.save(root / f"{i:03d}.png")
        captions = [f"a {color} {shape}", paraphrase.format(shape=shape, color=color)]
        lines.append(json.dumps({"image": f"{i:03d}.png", "captions": captions}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def stand_in_attribute_scores(images: torch.Tensor) -> torch.Tensor:
    """Random attribute logits, fixed by each image's bytes: a stand-in for the faces' attribute classifier where
    a smoke run's model and classifier are too weak for latent queries to find any samples."""
    from ganforge.data.faces import ATTRIBUTES

    seeds = [zlib.crc32(image.detach().float().numpy().tobytes()) for image in images]
    return torch.stack([torch.randn(len(ATTRIBUTES), generator=torch.Generator().manual_seed(s)) for s in seeds])


def tiny_config(**changes) -> TrainConfig:
    """A DCGAN small enough to train a few dozen steps in a second or two."""
    values = {"model": "dcgan", "data": "digits", "g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 256,
              "log_every": 5, "n_samples": 16, "steps": 10,
              # the paper's depth: after a few steps, a deeper G's eval-mode output is nearly constant (its batch
              # norms' running statistics have not caught up), which tests of what the noise changes cannot use
              "g_depth": 0, "d_depth": 0}
    values.update(changes)
    return TrainConfig(**values).validate()


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Each test session gets its own cache folder: no test reads a user's cache. And `--precision auto` (the
    default) trains in fp32 on every machine, so that a test's numbers do not depend on the processor it runs on;
    tests/test_hardware.py checks the choice itself. Session-wide, so that module fixtures (a torchrun's workers
    too) see both before they start."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GANFORGE_CACHE", str(cache))
        patch.setenv("GANFORGE_AUTO_PRECISION", "fp32")
        _share_drawn_faces(tmp_path_factory, cache)
        yield


def _share_drawn_faces(tmp_path_factory, cache: Path) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") and not (cache / "faces").exists():
        # the drawn faces (data, not a model, the same in every process) are drawn once for all the workers
        shared = tmp_path_factory.getbasetemp().parent / "shared-faces"
        shared.mkdir(exist_ok=True)
        cache.mkdir(exist_ok=True)
        (cache / "faces").symlink_to(shared, target_is_directory=True)


_gpu_skipped: list[str] = []


def pytest_runtest_logreport(report):
    """Note each gpu-marked test that skipped (under xdist, the workers' reports reach the main process)."""
    if report.skipped and "gpu" in report.keywords and report.nodeid not in _gpu_skipped:
        _gpu_skipped.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    """CI's summary names the GPU tests that did not run here, so that a skip never passes unseen."""
    if _gpu_skipped:
        terminalreporter.section(f"{len(_gpu_skipped)} GPU tests not run (no CUDA device here; run `pytest -m gpu` "
                                 "on a machine with one)")
        for nodeid in _gpu_skipped:
            terminalreporter.line(nodeid)

