"""`make gallery` (scripts/gallery.py): every figure's recipe, its record and page, and a restart that
redoes nothing already made."""

import contextlib
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import skip_or_fail, stand_in_attribute_scores

from ganforge import cli
from ganforge.data.faces import ATTRIBUTES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gallery(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    sys.modules.pop("gallery", None)
    return importlib.import_module("gallery")


def test_every_figure_is_made_recorded_and_shown_on_the_page(gallery, monkeypatch, tmp_path):
    """The whole gallery in smoke mode, each command run in this process (the benchmarks as their tests run them)."""
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        skip_or_fail("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    ran = []

    def in_process(argv):
        ran.append(argv)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            if argv[0] == "ganforge":
                assert cli.main(argv[1:]) in (0, None)
            else:
                name = Path(argv[1]).stem
                sys.modules.pop(name, None)
                module = importlib.import_module(name)
                if name == "arithmetic":
                    monkeypatch.setattr(module, "attribute_scorer", lambda data: (stand_in_attribute_scores, ATTRIBUTES))
                module.main(argv[2:])
        return out.getvalue().splitlines()

    monkeypatch.setattr(gallery.Maker, "execute", staticmethod(in_process))
    gallery.main(["--smoke", "--out", str(tmp_path / "docs")])
    docs = tmp_path / "docs" / "gallery"
    page = (tmp_path / "docs" / "gallery.md").read_text()
    for figure in gallery.FIGURES:
        made = json.loads((docs / f"{figure.name}.json").read_text())
        assert made["commands"] and made["numbers"], figure.name
        for picture in made["pictures"]:
            assert (docs / picture).stat().st_size > 0 and f"(gallery/{picture})" in page
        assert figure.title in page and made["commands"][0] in page
    assert "Not made yet" not in page
    total = sum(json.loads((docs / f"{f.name}.json").read_text())["seconds"] for f in gallery.FIGURES)
    assert f"{total:,} s (" in page and "in all" in page  # every figure made at one commit: their total
    assert json.loads((docs / "total.json").read_text())["seconds"] == total
    assert any(a[:2] == ["ganforge", "interpolate"] for a in ran) and any("--grid-by-class" in a for a in ran)
    t2i = json.loads((docs / "text_to_image.json").read_text())["numbers"]
    for stage in ("Stage-I", "Stage-II"):
        assert {f"{stage}: within-caption diversity, share of the real faces'",
                f"{stage}: both attributes of a held-out pair drawn", f"{stage}: smiles as captioned"} <= t2i.keys()
    assert {"FID, Stage-II", "FID, Stage-I upsampled (attribute classifier's features)"} <= t2i.keys()


def test_a_restart_makes_only_what_is_missing_in_child_processes(tmp_path):
    """The real command line: one figure made, then kept; a figure stopped after some commands reuses what they
    printed; --force makes it again; a wrong name is refused."""
    out = tmp_path / "docs"

    def gallery(*args):
        return subprocess.run([sys.executable, "scripts/gallery.py", "--smoke", "--out", str(out), *args], cwd=ROOT, check=False,
                              capture_output=True, text=True, timeout=600)

    first = gallery("--only", "digits")
    assert first.returncode == 0, first.stderr[-2000:]
    record = out / "gallery" / "digits.json"
    made = json.loads(record.read_text())
    assert made["commands"][0].startswith("ganforge train") and "FID (pixels)" in made["numbers"]
    page = (out / "gallery.md").read_text()
    assert "![digits](gallery/digits_progress.png)" in page and "Not made yet" in page and "in all" not in page
    again = gallery("--only", "digits")
    assert again.returncode == 0 and "made already" in again.stdout and "$ ganforge" not in again.stdout
    assert json.loads(record.read_text()) == made
    record.unlink()  # as if stopped after its commands: they are not run again, their output is reused
    resumed = gallery("--only", "digits")
    assert resumed.returncode == 0 and resumed.stdout.count("finished before: not run again") == 2
    assert json.loads(record.read_text())["numbers"] == made["numbers"]
    forced = gallery("--only", "digits", "--force")
    assert forced.returncode == 0 and "$ ganforge train" in forced.stdout
    assert json.loads(record.read_text())["commands"][0] == made["commands"][0]  # (into a new run folder)
    listed = gallery("--list")
    assert "digits         made" in listed.stdout and "faces          to make" in listed.stdout
    wrong = gallery("--only", "bedrooms")
    assert wrong.returncode != 0 and "no figure named bedrooms" in wrong.stderr


def test_numbers_read_as_the_docs_write_them(gallery):
    assert gallery.number(1115.79) == "1,116"  # not 1.12e+03
    assert gallery.number(470.96) == "471"
    assert gallery.number(0.0451) == "0.0451"
    assert gallery.number(7783) == "7,783"
