"""Do the directions found without labels control one attribute each? Measured on a DCGAN trained on `faces`.

    python benchmarks/directions.py [--run RUN_DIR | --minutes 10 --image-size 32] [--k 10] [--samples 512]

Without --run it first trains the default DCGAN on faces for --minutes at 32x32 (as benchmarks/arithmetic.py
does: the size the attribute classifier reads). Then the top --k directions of each method (sefa, pca), and for
each direction d: --samples noises z, the images G(z - 2d) and G(z + 2d), and for each of the 16 attributes the
change of its mean score (the attribute classifier's probability) between the two. A direction controls an
attribute when that attribute's mean score changes by at least 0.3 while no other changes by more than 0.15.
Reported per method: how many distinct attributes some direction controls, and for each the best direction's
effect; also with the attributes an attribute's value constrains left out of "no other" (a one-hot colour's
others; bald and hat, bald and long hair, glasses and sunglasses: faces.TIED), and, looser, which attributes some
direction moves most by at least 0.3 whatever else moves. The ceiling beside them: for each attribute, the direction that labels give (the difference of the mean
z of G's samples the classifier finds with and without it, among --pool samples, at unit length), measured alike.

Writes the record (command, commit, date, processor) to benchmarks/results/directions.json, the directions into
the run (directions/*.safetensors) and, with --figure, sefa's figure there. --smoke: 3 steps of a tiny model, a
classifier of 1 epoch in a temporary cache, few samples; no results file.
"""

from __future__ import annotations

import argparse

import torch
from common import faces_options, faces_run, run_record, write_results

from ganforge import load
from ganforge.cli import main as ganforge
from ganforge.data.faces import TIED
from ganforge.directions import METHODS, Directions, find, save
from ganforge.latent import seed_noise
from ganforge.metrics.classifier import attribute_scorer

CONTROL, OTHERS = 0.3, 0.15  # an attribute's mean score moves by at least CONTROL; no other by more than OTHERS
AMOUNT = 2.0  # the images compared: z - AMOUNT d and z + AMOUNT d


@torch.no_grad()
def effects(G, classify, vectors: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(directions, attributes): each attribute's mean score at z + 2d minus at z - 2d."""
    out = []
    for d in vectors:
        low, high = (torch.sigmoid(classify(G(z + sign * AMOUNT * d))).mean(0) for sign in (-1, 1))
        out.append(high - low)
    return torch.stack(out) if out else torch.empty(0, 0)


def controlled(change: torch.Tensor, names: list[str], tied: dict[str, set[str]] | None = None) -> int | None:
    """The attribute a direction controls, or None: the one whose mean score moves most, when it moves by at least
    CONTROL while no other moves by more than OTHERS; with `tied`, no other but those its value constrains (a
    one-hot colour's others, the pairs that exclude or imply each other), which must move with it."""
    a = int(change.abs().argmax())
    others = [i for i, name in enumerate(names) if i != a and name not in (tied or {}).get(names[a], ())]
    return a if change[a].abs() >= CONTROL and change[others].abs().max() <= OTHERS else None


def summary(changes: torch.Tensor, names: list[str], tied: dict[str, set[str]], label_of=None) -> dict:
    """What a set of directions controls, by the strict criterion (no other attribute moves) and with the tied
    attributes left out; and, looser, which attributes some direction moves most (by at least CONTROL, whatever
    else moves): per direction its largest changes; per criterion the attributes found, each with the direction
    that changes it most."""
    rows, found = [], {"strict": {}, "tied_left_out": {}, "moved_most": {}}
    for i, change in enumerate(changes):
        a = int(change.abs().argmax())
        untied = [j for j, name in enumerate(names) if j != a and name not in tied.get(names[a], ())]
        row = {"direction": label_of(i) if label_of else i, "largest": names[a], "change": round(float(change[a]), 3),
               "next_largest": round(float(change.abs().topk(2).values[1]), 3),
               "next_untied": round(float(change[untied].abs().max()), 3)}
        for criterion, by in (("strict", None), ("tied_left_out", tied), ("moved_most", "any")):
            hit = (a if change[a].abs() >= CONTROL else None) if by == "any" else controlled(change, names, by)
            row[criterion] = names[hit] if hit is not None else None
            best = found[criterion].get(names[a])
            if hit is not None and (best is None or abs(change[a]) > abs(best["change"])):
                found[criterion][names[a]] = {"direction": row["direction"], "change": row["change"],
                                              "next_largest": row["next_largest"], "next_untied": row["next_untied"]}
        rows.append(row)
    return {"attributes_found": {k: len(v) for k, v in found.items()}, "found": found, "directions": rows}


def label_directions(G, classify, names: list[str], pool: int) -> tuple[torch.Tensor, list[str]]:
    """For each attribute that at least 2% of `pool` samples have and lack: mean z with it - mean z without it,
    at unit length."""
    z = seed_noise(list(range(10**6, 10**6 + pool)), G.z_dim)  # seeds the measured samples never use
    present = torch.cat([classify(G(z[i:i + 1000])) for i in range(0, pool, 1000)]) > 0
    vectors, kept = [], []
    for a, name in enumerate(names):
        has = present[:, a]
        if min(has.sum(), (~has).sum()) >= 0.02 * pool:
            d = z[has].mean(0) - z[~has].mean(0)
            vectors.append(d / d.norm())
            kept.append(name)
    return (torch.stack(vectors) if vectors else torch.empty(0, G.z_dim)), kept


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    faces_options(parser)
    parser.add_argument("--k", type=int, default=10, help="directions per method")
    parser.add_argument("--samples", type=int, default=512, help="noises each direction moves")
    parser.add_argument("--pool", type=int, default=8000, help="samples the label directions are averaged over")
    parser.add_argument("--pca-samples", type=int, default=4096, help="samples pca reads the activations of")
    parser.add_argument("--figure", help="also draw sefa's directions figure here (e.g. docs/directions-faces.png)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.k, args.samples, args.pool, args.pca_samples = 3, 16, 200, 64
    run = faces_run(args)
    G = load(run, kind="image")
    classify, names = attribute_scorer("faces")
    z = seed_noise(list(range(args.samples)), G.z_dim)

    record = run_record("directions") | {"smoke": args.smoke, "run": str(run), "steps": G.meta["step"],
                                         "image_size": G.image_size, "z_dim": G.z_dim, "k": args.k,
                                         "samples": args.samples, "amount": AMOUNT,
                                         "criterion": {"control": CONTROL, "others": OTHERS,
                                                       "tied": {k: sorted(v) for k, v in TIED.items()}},
                                         "methods": {}}
    for method in METHODS:
        found: Directions = find(G, method, args.k, **({"samples": args.pca_samples} if method == "pca" else {}))
        save(found, run)
        record["methods"][method] = summary(effects(G, classify, found.vectors, z), names, TIED)
        record["methods"][method]["strength"] = [round(float(s), 4) for s in found.strength]
        for criterion, hits in record["methods"][method]["found"].items():
            print(f"{method}, {criterion}: {len(hits)} attributes found: {', '.join(hits) or 'none'}")
    vectors, kept = label_directions(G, classify, names, args.pool)
    record["labels"] = summary(effects(G, classify, vectors, z), names, TIED, label_of=lambda i: kept[i])
    record["labels"]["attributes_with_a_direction"] = kept
    for criterion, hits in record["labels"]["found"].items():
        print(f"labels (the ceiling), {criterion}: {len(hits)} of {len(kept)} attributes: {', '.join(hits) or 'none'}")
    if args.figure:
        ganforge(["directions", str(run), "--k", str(args.k), "--samples", "3", "--out", args.figure])
    if not args.smoke:
        print(write_results("directions", record))
    return record


if __name__ == "__main__":
    main()
