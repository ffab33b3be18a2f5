"""Does latent arithmetic land where it should? Measured on a DCGAN trained on `faces`.

    python benchmarks/arithmetic.py [--run RUN_DIR | --minutes 10 --image-size 32] [--draws 100] [--pool 20000]

Without --run it first trains the default DCGAN on faces for --minutes, at 32x32 by default (the
size the attribute classifier reads; 4x cheaper than 64x64 on a CPU). Then three measures of
analogies built from attribute queries (latent.Analogy: with a target attribute t and two identities
s and u, A = t & s & !u, B = !t & s & !u, C = !t & u & !s, and the result should be t & u & !s):
- smile: the DCGAN paper's [smiling woman] - [neutral woman] + [neutral man] = [smiling man], as
  smiling, long hair, beard; --draws times;
- glasses: the chapter's [man with glasses] - [man without glasses] + [woman without glasses] =
  [woman with glasses], as glasses, beard, long hair; --draws times;
- random: --draws random triplets of a target (smiling, glasses, hat, sunglasses) and two identities
  (long_hair, beard, bald, moustache).
Each draw takes its concepts from a random half of a pool of G's samples: the k that the attribute
classifier scores highest for each query, for k = 1, 3 and 10 exemplars per concept, and counts when
the classifier finds the intended attributes on G(mean A - mean B + mean C) (latent.analogy_rates).
Each measure is taken four ways: the sum as it is ("plain"); moved out to a typical draw's distance from
the latent's mean ("typical", latent.at_typical_length), since a mean of k latents lies sqrt(k) times
nearer it than any one of them; and with clean exemplars ("clean", Analogy.clean), which lack every
binary attribute the analogy does not name (no incidental hats, glasses or baldness), but for those
the drawing ties to a named one; and with k exemplars drawn at random from those that satisfy each query
("random"), not the most confident k. For each, the share of draws whose result gets each intended attribute
wrong ("misses"). Figures of the two chapter analogies in the DCGAN paper's layout
(exemplars, averages, the result and a 3x3 of it with small noise), 3 exemplars, the sum as ganforge
arithmetic computes it: arithmetic-smile.png and arithmetic-glasses.png next to the run.

Then inversion quality on --inversions held-out real faces (a seed the training set never used): mean
pixel error of the reconstruction, and of the attributes each face has, the share the classifier finds on
its reconstruction (and, for scale, on the real face); the agreement over all 16 attributes, most of them
absent (one-hot hair and skin colours), is reported beside it but says little. Writes arithmetic.json next
to the run, and the record (command, commit, date, processor) to benchmarks/results/arithmetic.json. --smoke:
3 steps of a tiny model, a classifier of 1 epoch in a temporary cache, 3 draws, 2 inversions; no results file.
"""

from __future__ import annotations

import argparse
import json
import random

from common import faces_options, faces_run, run_record, write_results

from ganforge import load
from ganforge.data import fit, to_float
from ganforge.data.faces import CHANCE, TIED, draw_faces
from ganforge.latent import (
    CHAPTER_ANALOGIES,
    Analogy,
    analogy_rates,
    around,
    invert,
    parse_query,
    query_scores,
    sample_pool,
)
from ganforge.metrics.classifier import attribute_scorer, load_classifier, resize_to
from ganforge.plots import plot_arithmetic

TARGETS = ["smiling", "glasses", "hat", "sunglasses"]
IDENTITIES = ["long_hair", "beard", "bald", "moustache"]
EXCLUSIVE = [{"hat", "bald"}, {"long_hair", "bald"}]  # never on one face in the data
EXEMPLARS = (1, 3, 10)
VARIANTS = ("plain", "typical", "clean", "random")  # how the concepts' exemplars are chosen and summed


def triplets(n: int, seed: int = 0) -> list[Analogy]:
    """n random analogies whose queries all describe faces that exist: t goes with s (in A) and with u (the result)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        t = rng.choice(TARGETS)
        s, u = rng.sample(IDENTITIES, 2)
        if {t, s} not in EXCLUSIVE and {t, u} not in EXCLUSIVE:
            out.append(Analogy(t, s, u))
    return out


def clean(analogy: Analogy) -> Analogy:
    """The analogy with exemplars that lack every binary attribute it does not name, except those the drawing ties
    to one it names (sunglasses come with glasses; a hat rules out baldness): those would leave no faces."""
    named = {analogy.target, analogy.given, analogy.other}
    return analogy.clean([n for n in CHANCE if not TIED[n] & named])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    faces_options(parser)
    parser.add_argument("--draws", type=int, default=100, help="draws per measure (default: 100)")
    parser.add_argument("--pool", type=int, default=20_000, help="samples of G the queries pick from (a "
                        "10-minute model draws few of some attribute sets: 20,000 find 10 of each)")
    parser.add_argument("--inversions", type=int, default=100)
    args = parser.parse_args(argv)
    if args.smoke:
        args.draws, args.pool, args.inversions = 3, 8000, 2  # a pool with tens of clean exemplars for each query
    run = faces_run(args)
    G = load(run, kind="image")
    meta = G.meta
    classify, names = attribute_scorer("faces")

    measures = {"smile": [CHAPTER_ANALOGIES["smile"]] * args.draws,
                "glasses": [CHAPTER_ANALOGIES["glasses"]] * args.draws, "random": triplets(args.draws)}
    pool = sample_pool(G, classify, args.pool)  # what every measure below picks its exemplars from
    # how often the intended result occurs at all: among G's samples (as the classifier reads them) and in the data
    _, truth = draw_faces(min(args.pool, 4000), seed=55)
    occurs = {name: {"samples": query_scores(pool[1], parse_query(a.intended, names))[1].double().mean().item(),
                     "data": truth[:, [names.index(n) for n in (a.target, a.other)]].all(1)
                     .logical_and(~truth[:, names.index(a.given)]).double().mean().item()}
              for name, a in CHAPTER_ANALOGIES.items()}
    rates, misses = {}, {}
    for name, analogies in measures.items():
        rates[name], misses[name] = {}, {}
        for variant in VARIANTS:
            chosen = [clean(a) for a in analogies] if variant == "clean" else analogies
            measured, first, missed = analogy_rates(G, classify, names, chosen, pool, EXEMPLARS, seed=1,
                                                    typical=variant == "typical", at_random=variant == "random")
            rates[name][variant] = {str(k): r for k, r in measured.items()}
            misses[name][variant] = {str(k): m for k, m in missed.items()}
            if name in CHAPTER_ANALOGIES and variant == "plain":  # the figure, as `ganforge arithmetic` draws it
                concepts, result = first[3]
                columns = [(f"{sign} {c.name}: {c.source}", G.draw_latent(c.latent),
                            G.draw_latent(c.mean.unsqueeze(0))) for sign, c in zip("+-+", concepts.values())]
                plot_arithmetic(columns, G.draw_latent(around(G, result, 9, 0.25)), run / f"arithmetic-{name}.png",
                                title=CHAPTER_ANALOGIES[name].title)

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
    report = {"run": str(run), "steps": meta["step"], "draws": args.draws, "pool": args.pool,
              "success_rate": rates, "misses": misses, "intended_occurs": occurs,
              "inversion": {"faces": args.inversions, "pixel_mse": sum(errors) / len(errors),
                            "present_attributes_found": sum(found) / len(found),
                            "present_attributes_found_on_the_real_faces": sum(found_real) / len(found_real),
                            "agreement_over_all_16_attributes": sum(agree) / len(agree)}}
    (run / "arithmetic.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{run}: {meta['step']} steps; {args.draws} draws per measure, concepts from a pool of {args.pool} samples")
    print("| measure | sum | " + " | ".join(f"{k} exemplar{'s' * (k > 1)}" for k in EXEMPLARS) + " |")
    print("|---|---|" + "---:|" * len(EXEMPLARS))
    for name, variants in rates.items():
        for variant, by_k in variants.items():
            print(f"| {name} | {variant} | " + " | ".join(f"{r:.0%}" for r in by_k.values()) + " |")
    for name, share in occurs.items():
        print(f"{name}: the intended result is {share['samples']:.1%} of G's samples, {share['data']:.1%} of the faces")
    inv = report["inversion"]
    print(f"inversion of {args.inversions} held-out faces: pixel MSE {inv['pixel_mse']:.4f} (images in [-1, 1]), "
          f"of the attributes each face has, {inv['present_attributes_found']:.1%} found on the reconstruction (on "
          f"the real faces: {inv['present_attributes_found_on_the_real_faces']:.1%}; agreement over all 16, most "
          f"absent: {inv['agreement_over_all_16_attributes']:.1%})")
    print(run / "arithmetic-smile.png", run / "arithmetic-glasses.png")
    record = run_record("arithmetic") | {"smoke": args.smoke, "config": meta["config"], **report}
    if not args.smoke:
        print(f"results: {write_results('arithmetic', record)}")
    return record


if __name__ == "__main__":
    main()
