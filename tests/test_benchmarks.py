"""Every benchmark script runs: each has a smoke mode (a few steps, tiny sizes) that these tests run,
so that a change that breaks a benchmark fails here. Smoke runs write no results file."""

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """Import benchmarks/NAME.py as the scripts import each other (their folder on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name: str):
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    return load


def test_classifiers(bench):
    before = {p.name: p.stat().st_mtime_ns for p in (BENCHMARKS / "results").glob("*.json")}
    record = bench("classifiers").main(["--smoke", "--data", "digits", "--threads", "1"])
    assert record["smoke"] and set(record["results"]) == {"digits"}
    assert record["results"]["digits"]["train_images"] == 600 and record["results"]["digits"]["epochs"] == 1
    assert record["git"]["commit"] and record["processor"]["logical_cpus"]
    assert {p.name: p.stat().st_mtime_ns for p in (BENCHMARKS / "results").glob("*.json")} == before
