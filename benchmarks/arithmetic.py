"""Does z-space arithmetic land where it should? Measured on a DCGAN trained on `faces`.

    python benchmarks/arithmetic.py [--run RUN_DIR | --minutes 10 --image-size 32] [--triplets 100]
    python benchmarks/arithmetic.py --triplet smiling,long_hair,beard   # the DCGAN paper's own, 100 times

Without --run it first trains the default DCGAN on faces for --minutes, at 32x32 by default (the
size the attribute classifier reads; 4x cheaper than 64x64 on a CPU). Then, 100 random
triplets built from attribute queries, as in the DCGAN paper's [smiling woman] - [neutral woman]
+ [neutral man]: with a target attribute t (smiling, glasses, hat, ...) and two identity
attributes s and u (long_hair, beard, bald, ...),
    A = t & s & !u,   B = !t & s & !u,   C = !t & u & !s,   intended result: t & u & !s,
each concept the top-k samples of a random half of a pool of G's samples, as scored by the
attribute classifier. A result counts when the classifier finds all three attributes of the
intended set on G(mean A - mean B + mean C). Reported for k = 1 (single exemplars), 3 and 10.
`--triplet t,s,u` measures one triplet instead, with its exemplars from --triplets random halves of the
pool: smiling,long_hair,beard is the paper's [smiling woman] - [neutral woman] + [neutral man].

Then inversion quality on 100 held-out real faces (a seed the training set never used): mean
pixel error of the reconstruction, and of the attributes each face has, the share the classifier finds on
its reconstruction (and, for scale, on the real face); the agreement over all 16 attributes, most of them
absent (one-hot hair and skin colours), is reported beside it but says little. Writes arithmetic.json and an example figure next to the run, and the record
(command, commit, date, processor) to benchmarks/results/arithmetic.json. --smoke: 3 steps of a tiny model,
a classifier of 1 epoch in a temporary cache, 3 triplets, 2 inversions; no results file.
"""

from __future__ import annotations

import argparse
import json
import random

import torch
from common import faces_options, faces_run, run_record, write_results

from ganforge import load
from ganforge.data import fit, to_float
from ganforge.data.faces import draw_faces
from ganforge.latent import Concept, around, invert, parse_query, pick, seed_noise
from ganforge.metrics.classifier import attribute_scorer, load_classifier, resize_to
from ganforge.plots import plot_arithmetic

TARGETS = ["smiling", "glasses", "hat", "sunglasses"]
IDENTITIES = ["long_hair", "beard", "bald", "moustache"]
EXCLUSIVE = [{"hat", "bald"}, {"long_hair", "bald"}]  # never on one face in the data
EXEMPLARS = (1, 3, 10)


def triplets(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """n random (t, s, u) whose queries all describe faces that exist: t goes with s (in A) and with u (the result)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        t = rng.choice(TARGETS)
        s, u = rng.sample(IDENTITIES, 2)
        if {t, s} not in EXCLUSIVE and {t, u} not in EXCLUSIVE:
            out.append((t, s, u))
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    faces_options(parser)
    parser.add_argument("--triplets", type=int, default=100)
    parser.add_argument("--triplet", help="t,s,u: this triplet only (default: random ones)")
    parser.add_argument("--pool", type=int, default=4000, help="samples of G the queries pick from")
    parser.add_argument("--inversions", type=int, default=100)
    args = parser.parse_args(argv)
    if args.smoke:
        args.triplets, args.pool, args.inversions = 3, 400, 2
    run = faces_run(args)
    G = load(run, kind="image")
    meta = G.meta
    classify, names = attribute_scorer("faces")

    seeds = list(range(args.pool))
    z = seed_noise(seeds, G.z_dim)
    logits = classify(G(z))
    rng = torch.Generator().manual_seed(1)
    hits = {k: 0 for k in EXEMPLARS}
    example = None
    if args.triplet:
        chosen_triplet = tuple(args.triplet.split(","))
        unknown = [a for a in chosen_triplet if a not in names]
        if len(chosen_triplet) != 3 or unknown:
            raise SystemExit(f"--triplet {args.triplet}: expected three attributes t,s,u of {', '.join(names)}")
    for t, s, u in [chosen_triplet] * args.triplets if args.triplet else triplets(args.triplets):
        half = torch.randperm(args.pool, generator=rng)[:args.pool // 2]
        queries = {"A": f"{t}&{s}&!{u}", "B": f"!{t}&{s}&!{u}", "C": f"!{t}&{u}&!{s}"}
        for k in EXEMPLARS:
            concepts = {}
            for name, query in queries.items():
                chosen, _ = pick(logits[half], parse_query(query, names), k, query)
                concepts[name] = Concept(name, G.to_latent(z[half[chosen]]), f"query {query}")
            result = concepts["A"].mean - concepts["B"].mean + concepts["C"].mean
            got = classify(G.draw_latent(result.unsqueeze(0)))[0] > 0
            ok = bool(got[names.index(t)] and got[names.index(u)] and not got[names.index(s)])
            hits[k] += ok
            if k == 3 and example is None:
                example = (t, s, u, concepts, result)
    n = args.triplets
    rates = {k: hits[k] / n for k in EXEMPLARS}

    # the first triplet's figure, as the command line draws it
    t, s, u, concepts, result = example
    columns = [(f"{sign} {c.name}: {c.source}", G.draw_latent(c.latent), G.draw_latent(c.mean.unsqueeze(0)))
               for sign, c in zip("+-+", concepts.values())]
    plot_arithmetic(columns, G.draw_latent(around(G, result, 9, 0.25)), run / "arithmetic.png",
                    title=f"[{t}, {s}] - [{s}] + [{u}] = [{t}, {u}]")

    # inversion of held-out real faces
    images, attributes = draw_faces(args.inversions, seed=987_654)
    targets = to_float(fit(images, G.image_size, G.channels))
    net, info = load_classifier("faces", attributes=True)
    net.requires_grad_(False)

    def features(x):
        return net.body(resize_to(x, info["image_size"]))

    errors, found, found_real, agree = [], [], [], []
    for target, truth in zip(targets, attributes):
        zi, mse = invert(G, target, steps=200, restarts=2, features=features)
        errors.append(mse)
        seen = classify(G.draw_latent(zi.unsqueeze(0)))[0] > 0
        found.append((seen & truth).sum().item() / max(1, truth.sum().item()))
        found_real.append(((classify(target.unsqueeze(0))[0] > 0) & truth).sum().item() / max(1, truth.sum().item()))
        agree.append((seen == truth).double().mean().item())
    report = {"run": str(run), "steps": meta["step"], "triplets": n, "pool": args.pool, "triplet": args.triplet,
              "success_rate": {str(k): rates[k] for k in EXEMPLARS},
              "inversion": {"faces": args.inversions, "pixel_mse": sum(errors) / len(errors),
                            "present_attributes_found": sum(found) / len(found),
                            "present_attributes_found_on_the_real_faces": sum(found_real) / len(found_real),
                            "agreement_over_all_16_attributes": sum(agree) / len(agree)}}
    (run / "arithmetic.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{run}: {meta['step']} steps; {n} triplets, concepts from a pool of {args.pool} samples")
    print("| exemplars per concept | results with the intended attributes |")
    print("|---:|---:|")
    for k in EXEMPLARS:
        print(f"| {k} | {rates[k]:.0%} |")
    inv = report["inversion"]
    print(f"inversion of {args.inversions} held-out faces: pixel MSE {inv['pixel_mse']:.4f} (images in [-1, 1]), "
          f"of the attributes each face has, {inv['present_attributes_found']:.1%} found on the reconstruction (on "
          f"the real faces: {inv['present_attributes_found_on_the_real_faces']:.1%}; agreement over all 16, most "
          f"absent: {inv['agreement_over_all_16_attributes']:.1%})")
    print(run / "arithmetic.png")
    record = run_record("arithmetic") | {"smoke": args.smoke, "config": meta["config"], **report}
    if not args.smoke:
        print(f"results: {write_results('arithmetic' + ('-' + args.triplet.replace(',', '-') if args.triplet else ''), record)}")
    return record


if __name__ == "__main__":
    main()
