"""Train the default DCGAN for a wall-clock budget, write 10,000 samples, and measure them.

    python benchmarks/quality.py --data fashion-mnist --minutes 10

Writes `samples.npy` (uint8) and `metrics.json` into the run folder and prints the metrics,
each labelled with its extractor and sample counts.
"""

import argparse
import json

from ganforge.checkpoint import load_generator
from ganforge.config import make_config
from ganforge.data import to_uint8
from ganforge.metrics.evaluate import evaluate, format_table
from ganforge.sampling import sample, write_samples
from ganforge.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--out", default="runs")
    args = parser.parse_args()
    run = train(make_config(overrides={"data": args.data, "minutes": args.minutes}), runs_dir=args.out)
    G, meta = load_generator(run)
    images = sample(G, args.n, seed=0)
    write_samples(images, run / "samples.npy")
    result = evaluate(to_uint8(images), args.data, f"classifier:{args.data}", args.n)
    (run / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{run}: {meta['step']} steps, {meta['images_seen']} images seen in {meta['seconds']:.0f} s")
    print(format_table(result))


if __name__ == "__main__":
    main()
