"""Is `ssl:<data>`, the self-supervised extractor, a sound FID extractor for data without labels?
Measured on Fashion-MNIST, whose labels its training never sees.

    python benchmarks/ssl_extractor.py [--threads 2] [--n 5000] [--gan-steps 50,150,400,1000,2500,6000]

Everything is trained in a temporary cache (--work keeps it), so the user's cache plays no part:
1. ssl:fashion-mnist with its default steps, timed.
2. Its features as a representation: a k-NN classifier (k=15, cosine similarity, votes weighted by
   exp(similarity / 0.1)) fitted on the features of the 60,000 training images predicts the
   10,000 test images; the labels are used only here. Raw pixels give the baseline.
3. Its FID as a ranking: a ladder of sample sets, each measured by FID against --n random
   training images, under ssl:fashion-mnist and under classifier:fashion-mnist (trained on the
   labels) and, as a baseline, pixels. The ladder: --n held-out real images (the test split),
   --n samples from one DCGAN run at each of --gan-steps (its raw G, not the EMA, so every step
   shows where training stood; --run reuses a run whose checkpoints include those steps), and
   --n uniform noise images. Kendall's tau compares each extractor's order with the classifier's.
4. Mode dropping, the same way: --n real training images (none of the reference ones) from only
   the first k classes, for k = 10, 8, 6, 4, 2, 1 (labels used only to pick them).
Writes benchmarks/results/ssl_extractor.json (every number, the command, commit, date, processor)
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import SMOKE_MODEL, run_record

from ganforge import load, train
from ganforge.checkpoint import list_checkpoints
from ganforge.config import make_config
from ganforge.data import load_data
from ganforge.metrics.classifier import train_classifier
from ganforge.metrics.features import Pixels, extract, get_extractor
from ganforge.metrics.functions import fid
from ganforge.metrics.ssl import SelfSupervised, train_ssl

DATA = "fashion-mnist"
MODE_CLASSES = (10, 8, 6, 4, 2, 1)  # mode dropping: sets from the first k classes
RESULTS = Path(__file__).parent / "results" / "ssl_extractor.json"


def knn_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                 k: int = 15, temperature: float = 0.1) -> float:
    """Cosine k-NN: each test point takes the class with the largest sum of exp(similarity / temperature)
    over its k nearest training points."""
    train, test = F.normalize(train.float(), dim=1), F.normalize(test.float(), dim=1)
    classes = int(train_labels.max()) + 1
    hits = 0
    for chunk, labels in zip(test.split(1000), test_labels.split(1000)):
        sim, idx = (chunk @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(chunk), classes).scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        hits += (votes.argmax(1) == labels).sum().item()
    return hits / len(test)


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two equally long lists of numbers."""
    concordant = discordant = only_a_tied = only_b_tied = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 or db == 0:
                only_a_tied += da == 0 and db != 0
                only_b_tied += db == 0 and da != 0
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    untied_a, untied_b = concordant + discordant + only_b_tied, concordant + discordant + only_a_tied
    return (concordant - discordant) / (untied_a * untied_b) ** 0.5 if untied_a and untied_b else float("nan")


def gan_ladder(steps: list[int], run: Path | None, work: Path, smoke: bool = False) -> Path:
    """A DCGAN run with a checkpoint at each of `steps` (trained in stages, each a resume of the last)."""
    if run is None:
        tiny = SMOKE_MODEL | {"minutes": None} if smoke else {}
        cfg = make_config(overrides={"data": DATA, "steps": steps[0], "keep_checkpoints": 1000, **tiny})
        run = train(cfg, runs_dir=work / "runs", progress=not smoke)
        for s in steps[1:]:
            train(resume=run, budget={"steps": s}, runs_dir=work / "runs", progress=not smoke)
    have = {int(p.stem.removeprefix("step-")) for p in list_checkpoints(run / "checkpoints")}
    missing = sorted(set(steps) - have)
    if missing:
        raise SystemExit(f"{run}: no checkpoint at steps {missing}")
    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="images per FID side")
    parser.add_argument("--gan-steps", default="50,150,400,1000,2500,6000", help="DCGAN checkpoints in the ladder")
    parser.add_argument("--run", help="a DCGAN run on fashion-mnist with checkpoints at --gan-steps (default: train one)")
    parser.add_argument("--ssl-steps", type=int, help="training steps of ssl:fashion-mnist (default: its own)")
    parser.add_argument("--k", type=int, default=15, help="neighbours of the k-NN classifier")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--work", help="keep the cache and the run here (default: a temporary folder)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--smoke", action="store_true", help="a few steps on 2,000 images: does the script run? "
                        "(writes no results file)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.n, args.gan_steps, args.ssl_steps = 100, "2,3", 3
    gan_steps = [int(s) for s in args.gan_steps.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        root = work / "cache"
        result = run_record("ssl_extractor") | {
            "data": DATA, "n": args.n,
            # the machine's load (1, 5, 15 minutes): timings mean little when other work shared the cores
            "load_average": {"start": os.getloadavg()}}

        start = time.perf_counter()
        train_ssl(DATA, root, steps=args.ssl_steps)
        ssl_seconds = time.perf_counter() - start
        result["load_average"]["after_ssl_training"] = os.getloadavg()
        ssl = SelfSupervised(DATA, root, train_if_missing=False)
        start = time.perf_counter()
        if args.smoke:  # a classifier of seconds instead of minutes
            train_classifier(DATA, root, epochs=1, limit=600, progress=False)
        classifier = get_extractor(f"classifier:{DATA}", root)
        classifier_seconds = time.perf_counter() - start
        result["ssl"] = {**{k: v for k, v in ssl.meta.items() if k != "data"}, "wall_seconds": round(ssl_seconds, 1)}
        result["classifier"] = {"test_accuracy": classifier.meta["test_accuracy"],
                                "wall_seconds": round(classifier_seconds, 1)}
        print(f"ssl:{DATA}: {ssl.meta['steps']} steps in {ssl_seconds:.0f} s (final loss {ssl.meta['final_loss']:.3f}); "
              f"classifier:{DATA}: {classifier_seconds:.0f} s", flush=True)

        # 1. k-NN on the features, labels used only here
        train_data, test_data = load_data(DATA), load_data(DATA, split="test")
        if args.smoke:
            train_data, test_data = train_data.subset(torch.arange(2000)), test_data.subset(torch.arange(500))
        train_features, _ = extract(ssl, train_data.images, batch=500)
        test_features, _ = extract(ssl, test_data.images, batch=500)
        result["knn"] = {"k": args.k, "ssl": knn_accuracy(train_features, train_data.labels, test_features,
                                                          test_data.labels, args.k),
                         "pixels": knn_accuracy(train_data.images.flatten(1), train_data.labels,
                                                test_data.images.flatten(1), test_data.labels, args.k)}
        print(f"k-NN (k={args.k}) test accuracy: ssl {result['knn']['ssl']:.4f}, pixels {result['knn']['pixels']:.4f}",
              flush=True)

        # 2. the FID ladder
        start = time.perf_counter()
        run = gan_ladder(gan_steps, Path(args.run) if args.run else None, work, args.smoke)
        result["gan"] = {"run": str(run) if args.run else None, "steps": gan_steps, "ema": False,
                         "wall_seconds": None if args.run else round(time.perf_counter() - start, 1)}
        gen = torch.Generator().manual_seed(0)
        reference_index = torch.randperm(len(train_data), generator=gen)[:args.n]
        reference = train_data.images[reference_index]
        ladder = {"real (test split)": test_data.images[torch.randperm(len(test_data), generator=gen)[:args.n]]}
        for s in sorted(gan_steps, reverse=True):
            G = load(run / "checkpoints" / f"step-{s:08d}.json", ema=False, kind="image")
            ladder[f"dcgan step {s}"] = G.sample(args.n, seed=1, output="uint8")
        ladder["uniform noise"] = torch.randint(0, 256, reference.shape, dtype=torch.uint8, generator=gen)
        extractors = {"ssl": ssl, "classifier": classifier, "pixels": Pixels()}
        real = {key: extract(extractor, reference, batch=500)[0] for key, extractor in extractors.items()}
        fids = {name: {key: fid(real[key], extract(extractor, images, batch=500)[0])
                       for key, extractor in extractors.items()} for name, images in ladder.items()}
        result["ladder"] = [{"set": name, "fid": fids[name]} for name in ladder]
        names = list(ladder)
        result["kendall_tau_vs_classifier"] = {
            key: kendall_tau([fids[n][key] for n in names], [fids[n]["classifier"] for n in names])
            for key in ("ssl", "pixels")}

        # 3. mode dropping: real training images (not the reference ones) from fewer and fewer classes
        rest = torch.ones(len(train_data), dtype=torch.bool)
        rest[reference_index] = False
        dropped = {}
        for k in MODE_CLASSES:
            pool = (rest & (train_data.labels < k)).nonzero().flatten()
            dropped[f"{k} classes"] = train_data.images[pool[torch.randperm(len(pool), generator=gen)[:args.n]]]
        fids |= {name: {key: fid(real[key], extract(extractor, images, batch=500)[0])
                        for key, extractor in extractors.items()} for name, images in dropped.items()}
        result["mode_dropping"] = [{"set": name, "images": len(dropped[name]), "fid": fids[name]} for name in dropped]
        result["mode_dropping_kendall_tau_vs_classifier"] = {
            key: kendall_tau([fids[n][key] for n in dropped], [fids[n]["classifier"] for n in dropped])
            for key in ("ssl", "pixels")}
        result["load_average"]["end"] = os.getloadavg()
        result["passed"] = {"knn_accuracy_at_least_0.75": result["knn"]["ssl"] >= 0.75,
                            "kendall_tau_at_least_0.8": result["kendall_tau_vs_classifier"]["ssl"] >= 0.8}

    out = Path(args.out)
    if not args.smoke:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n| set | FID ssl:{DATA} | FID classifier:{DATA} | FID pixels |\n|---|---:|---:|---:|")
    for name in names:
        print(f"| {name} | {fids[name]['ssl']:.3f} | {fids[name]['classifier']:.3f} | {fids[name]['pixels']:.3f} |")
    tau = result["kendall_tau_vs_classifier"]
    print(f"\nKendall tau vs the classifier's order: ssl {tau['ssl']:.3f}, pixels {tau['pixels']:.3f}\n")
    for entry in result["mode_dropping"]:
        f = entry["fid"]
        print(f"| real, {entry['set']} | {f['ssl']:.3f} | {f['classifier']:.3f} | {f['pixels']:.3f} |")
    tau = result["mode_dropping_kendall_tau_vs_classifier"]
    print(f"\nmode dropping, Kendall tau vs the classifier's order: ssl {tau['ssl']:.3f}, pixels {tau['pixels']:.3f}")
    print(f"wrote {out}" if not args.smoke else "smoke run: no results written")
    return result


if __name__ == "__main__":
    main()
