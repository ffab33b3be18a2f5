"""How good and how costly the classifiers are that ganforge trains for its metrics (classifier:<data>,
and the attribute classifier of faces), each trained with its defaults in a temporary cache.

    python benchmarks/classifiers.py [--data digits,fashion-mnist,faces] [--threads 2] [--smoke]

For each: the held-out accuracy (for faces the worst attribute's, and each attribute's), the images it
trained on and the seconds it took. The test suite checks digits (98%) and the faces attributes (95% each);
Fashion-MNIST's 90% bar, which takes minutes of training, is held here. --smoke: one epoch on 600 images
each, to check that the script runs. Writes benchmarks/results/classifiers.json (with the command,
commit, date, processor).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import run_record, write_results

from ganforge.metrics.classifier import load_classifier, train_classifier

TARGETS = {"digits": 0.98, "fashion-mnist": 0.90, "faces": 0.95}  # faces: every attribute


def measure(data: str, root: Path, smoke: bool) -> dict:
    attributes = data == "faces"
    quick = {"epochs": 1, "limit": 600} if smoke else {}
    train_classifier(data, root, progress=not smoke, attributes=attributes, **quick)
    meta = load_classifier(data, root, attributes=attributes)[1]
    result = {"accuracy": meta["test_accuracy"], "target": TARGETS[data], "passes": meta["test_accuracy"] >= TARGETS[data],
              "epochs": meta["epochs"], "train_images": meta["train_images"], "seconds": meta["seconds"]}
    if attributes:
        result["attribute_accuracy"] = meta["attribute_accuracy"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits,fashion-mnist,faces")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="one epoch on 600 images each: does the script run?")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    record = run_record("classifiers") | {"smoke": args.smoke, "results": {}}
    with tempfile.TemporaryDirectory() as root:
        for data in args.data.split(","):
            record["results"][data] = measure(data, Path(root), args.smoke)
            r = record["results"][data]
            print(f"{data:14s} {r['accuracy']:.4f} (target {r['target']}) {r['train_images']:,} images, "
                  f"{r['epochs']} epochs, {r['seconds']:.0f} s", flush=True)
            if not args.smoke:
                write_results("classifiers", record)
    return record


if __name__ == "__main__":
    main()
