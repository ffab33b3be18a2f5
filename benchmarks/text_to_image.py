"""Does text-to-image draw what the caption says? StackGAN measured on the two captioned data sets.

    python benchmarks/text_to_image.py --data fashion-mnist-captions [--stage1-steps 2500 --stage2-steps 600]
    python benchmarks/text_to_image.py --data faces-captions [--run RUN_DIR] [--n 1000] [--threads 1]
    python benchmarks/text_to_image.py --data faces-captions --set text_match=0 --name no-match   # a setting tried
    python benchmarks/text_to_image.py --data faces-captions --stage2-steps 0   # Stage-I alone: quicker, to screen

Without --run it trains Stage-I, then Stage-II on it, for the given steps. Then, with images
drawn from captions never used in training (each with its own noise):
- fashion-mnist-captions: the share of images that ganforge's Fashion-MNIST classifier assigns to
  the class the caption names, for captions from the training templates ("seen") and from the
  held-out paraphrase templates ("unseen"), Stage-I and Stage-II.
- faces-captions: per attribute (smiling, glasses, sunglasses, beard, moustache, hat, bald,
  long hair, hair colour), how often the attribute classifier agrees with the caption, for the
  attribute sets of training faces ("seen") and for the held-out test faces, each of which has a
  pair of attributes that never occurs together in training ("unseen"); for those, also how often
  both attributes of the pair are drawn.
- both: within-caption diversity, the mean pairwise distance (in the domain classifier's features)
  between the images of one caption drawn with different noises, as a share of the same distance
  between real images that share the caption's class (Fashion-MNIST) or attribute set (faces); on
  faces also in the pixels inside faces.face_mask, where the face is and the background never is
  (diversity_masked_*: a face that changes only its background colour scores 0);
  FID of Stage-II and of Stage-I upsampled to Stage-II's size, against real images, in the
  domain classifier's features; and sharpness, the mean squared Laplacian of the images at
  Stage-II's size, as a ratio to the real images'.
- the classifiers read 28 (Fashion-MNIST) or 32 pixels (faces): Stage-II's images are brought down by
  2x2 means (Fashion-MNIST) or resize_to's antialiased filter (faces), whichever keeps the most of real
  images brought to Stage-II's size: real_class_match_* and real_agreement_* are those real images'
  scores at each stage's size, the measure's ceiling.
Writes text_to_image.json and text_to_image.png (a t2i figure) into the run folder measured, and the record
(command, commit, date, processor) to benchmarks/results/text_to_image-DATA.json. --smoke: 3 steps of each
stage at tiny sizes, classifiers of 1 epoch in a temporary cache, 20 captions; no results file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import SMOKE_MODEL, run_record, smoke_cache, write_results

from ganforge import load, train
from ganforge.config import make_config
from ganforge.data import fit, load_data, to_float
from ganforge.data.captions import HELD_OUT_COMBOS, face_caption, fashion_caption
from ganforge.data.faces import face_mask
from ganforge.metrics.classifier import attribute_scorer, classifier_path, load_classifier, resize_to, train_classifier
from ganforge.metrics.functions import fid, group_spread
from ganforge.t2i import TextToImage, t2i_figure

DIVERSITY_M = 8  # images per caption (and real images per class or attribute set) in the diversity measure
DESCRIBED = ["smiling", "glasses", "sunglasses", "beard", "moustache", "hat", "bald", "long_hair"]


def train_stages(data: str, steps1: int, steps2: int, out: str, seed: int, smoke: bool = False,
                 settings: list[str] = ()) -> Path:
    """Stage-I, then Stage-II on it (steps2 = 0: Stage-I alone) -> the last run folder."""
    tiny = SMOKE_MODEL | {"minutes": None, "c_dim": 8, "text_pretrain_steps": 5} if smoke else {}
    stage1 = train(make_config(overrides={"model": "stackgan1", "data": data, "steps": steps1, "seed": seed, **tiny},
                               pairs=settings), runs_dir=out, progress=not smoke)
    if not steps2:
        return stage1
    return train(make_config(overrides={"model": "stackgan2", "stage1": str(stage1), "steps": steps2, "seed": seed,
                                        **tiny}, pairs=settings), runs_dir=out, progress=not smoke)


def sharpness(images: torch.Tensor) -> float:
    """Mean squared response to a 3x3 Laplacian: high-frequency energy, per channel."""
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).expand(images.shape[1], 1, 3, 3)
    return F.conv2d(images.float(), kernel, groups=images.shape[1]).pow(2).mean().item()


def stages(coarse: torch.Tensor, fine: torch.Tensor | None) -> list[tuple[str, torch.Tensor]]:
    return [("stage1", coarse)] + ([("stage2", fine)] if fine is not None else [])


def quality(coarse: torch.Tensor, fine: torch.Tensor | None, real: torch.Tensor, features) -> dict:
    """FIDs and sharpness of Stage-II and of Stage-I upsampled (bilinear) to Stage-II's size (twice its own)."""
    up = F.interpolate(coarse, size=real.shape[-1], mode="bilinear", align_corners=False)
    real_features = features(real)
    real_sharp = sharpness(real)
    result = {"fid_stage1_upsampled": fid(real_features, features(up)), "sharpness_stage1_upsampled": sharpness(up) / real_sharp}
    if fine is not None:
        result |= {"fid_stage2": fid(real_features, features(fine)), "sharpness_stage2": sharpness(fine) / real_sharp}
    return result


def diversity(pipe: TextToImage, captions: list[str], real: torch.Tensor, features, seed: int,
              mask=None) -> dict:
    """Within-caption diversity: each caption drawn with m noises (real: (captions, m, C, H, W), m real images
    that share each caption's class or attributes), as the share of the real images' spread, per stage: in the
    classifier's `features`, and, with `mask` (size -> bool (size, size): where the subject is, never the
    background), in the pixels inside it, at each stage's size (diversity_masked_*: what the noise changes in the
    subject itself; a background colour alone scores 0)."""
    k, m = real.shape[:2]
    coarse, fine = pipe(captions, m, seed + 2, same_noise=False)
    real_spread = group_spread(features(real.flatten(0, 1)).unflatten(0, (k, m)))
    result = {"diversity_real": real_spread}
    for stage, images in stages(coarse, fine):
        result[f"diversity_{stage}"] = group_spread(features(images).unflatten(0, (k, m))) / real_spread
        if mask is not None:
            inside = mask(images.shape[-1])
            ours = group_spread(images[..., inside].unflatten(0, (k, m)))
            theirs = group_spread(F.interpolate(real.flatten(0, 1), images.shape[-1], mode="area")[..., inside]
                                  .unflatten(0, (k, m)))
            result[f"diversity_masked_{stage}"] = ours / theirs
    return result


def read_area(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images brought down to a classifier's size by the mean of each block (2x2 from 56 to 28 pixels)."""
    return F.interpolate(images, size=size, mode="area")


def fashion(pipe: TextToImage, n: int, seed: int) -> tuple[dict, list[str]]:
    """The Fashion-MNIST classifier reads 28 pixels: Stage-II's 56 are brought down by 2x2 means. Real test
    images, brought to 56 as Stage-II trains on them and read back so, keep more of their class that way than
    through resize_to's antialiased bilinear filter (real_class_match_*: the measure's ceiling at each size)."""
    if not classifier_path("fashion-mnist").is_file():
        train_classifier("fashion-mnist")
    net, _ = load_classifier("fashion-mnist")
    result = {}
    labels = torch.arange(n) % 10
    for name, held_out in (("seen", False), ("unseen", True)):
        rng = np.random.default_rng([seed, held_out])
        captions = [fashion_caption(int(label), rng, held_out) for label in labels]
        coarse, fine = pipe(captions, 1, seed + 1, same_noise=False)
        for stage, images in stages(coarse, fine):
            with torch.no_grad():
                predicted = net(read_area(images, 28)).argmax(1)
                result[f"class_match_{name}_{stage}"] = (predicted == labels).float().mean().item()
                if stage == "stage2":  # as read before (resize_to), for comparison with older results
                    predicted = net(resize_to(images, 28)).argmax(1)
                    result[f"class_match_{name}_stage2_antialiased"] = (predicted == labels).float().mean().item()
    size = 2 * coarse.shape[-1]  # Stage-II's
    test = load_data("fashion-mnist", size, split="test")
    real = to_float(test.images[:n])
    with torch.no_grad():
        native = to_float(load_data("fashion-mnist", 28, split="test").images[:n])
        for stage, images in stages(native, None if fine is None else read_area(real, 28)):
            result[f"real_class_match_{stage}_size"] = (net(images).argmax(1) == test.labels[:n]).float().mean().item()
    features = lambda x: net.body(read_area(x, 28)).double()
    result |= quality(coarse, fine, real, features)
    # diversity: 10 captions per class, each against 8 real test images of its class
    gen = torch.Generator().manual_seed(seed)
    classes = torch.arange(100) % 10
    rng = np.random.default_rng([seed, 3])
    groups = torch.stack([to_float(test.images[(test.labels == c).nonzero()[:, 0]][torch.randperm(
        int((test.labels == c).sum()), generator=gen)[:DIVERSITY_M]]) for c in classes.tolist()])
    result |= diversity(pipe, [fashion_caption(int(c), rng) for c in classes], groups, features, seed)
    examples = [fashion_caption(c, np.random.default_rng([seed, c]), held_out=c % 2 == 1) for c in range(0, 10, 2)]
    return result, examples


def agreement(logits: torch.Tensor, truth: torch.Tensor, names: list[str]) -> dict[str, float]:
    """How often the attribute classifier's verdicts (logits) agree with the attributes a caption states."""
    agree = {a: ((logits[:, names.index(a)] > 0) == truth[:, names.index(a)]).float().mean().item() for a in DESCRIBED}
    hair = [i for i, a in enumerate(names) if a.startswith("hair_")]
    agree["hair_colour"] = (logits[:, hair].argmax(1) == truth[:, hair].float().argmax(1)).float().mean().item()
    return agree


def faces(pipe: TextToImage, n: int, seed: int) -> tuple[dict, list[str]]:
    """The attribute classifier reads 32 pixels: Stage-II's 64 are brought down by resize_to (antialiased, as the
    classifier's own training faces were drawn at 128 and brought down)."""
    classify, names = attribute_scorer("faces")
    net, _ = load_classifier("faces", attributes=True)
    result, splits = {}, {split: load_data("faces-captions", split=split) for split in ("train", "test")}
    for split, name in (("train", "seen"), ("test", "unseen")):
        data = splits[split]
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
        truth = data.attributes[pick]
        rng = np.random.default_rng([seed, 7])  # captions written anew, not those the model trained on
        captions = [face_caption(dict(zip(names, row.tolist())), rng) for row in truth]
        coarse, fine = pipe(captions, 1, seed + 1, same_noise=False)
        for stage, images in stages(coarse, fine):
            logits = classify(images)
            agree = agreement(logits, truth, names)
            result[f"agreement_{name}_{stage}"] = agree
            result[f"agreement_{name}_{stage}_mean"] = sum(agree.values()) / len(agree)
            if name == "unseen":
                both = torch.zeros(len(truth), dtype=torch.bool)
                has = torch.zeros(len(truth), dtype=torch.bool)
                for a, b in HELD_OUT_COMBOS:
                    pair = truth[:, names.index(a)] & truth[:, names.index(b)]
                    drawn = (logits[:, names.index(a)] > 0) & (logits[:, names.index(b)] > 0)
                    both |= pair & drawn
                    has |= pair
                result[f"held_out_pair_drawn_{stage}"] = (both.sum() / has.sum()).item()
    size = 2 * coarse.shape[-1]  # Stage-II's
    real = to_float(fit(splits["test"].images[:n], size, 3))
    truth = splits["test"].attributes[:n]  # the measure's ceiling: real faces at each stage's size, as read
    for stage, images in stages(to_float(fit(splits["test"].images[:n], size // 2, 3)), None if fine is None else real):
        result[f"real_agreement_{stage}_size_mean"] = float(np.mean(list(agreement(classify(images), truth, names).values())))
    features = lambda x: net.body(resize_to(x, 32)).double()
    result |= quality(coarse, fine, real, features)
    # diversity: the training faces grouped by what a caption states (the 8 binary attributes and the hair
    # colour); up to 100 groups of 8 or more, each against 8 of its faces
    data = splits["train"]
    stated = [i for i, a in enumerate(names) if not a.startswith("skin_")]
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(data.attributes[:, stated].tolist()):
        groups.setdefault(tuple(row), []).append(i)
    members = [g[:DIVERSITY_M] for g in groups.values() if len(g) >= DIVERSITY_M][:100]
    rng = np.random.default_rng([seed, 9])
    group_captions = [face_caption(dict(zip(names, data.attributes[g[0]].tolist())), rng) for g in members]
    real_groups = torch.stack([to_float(fit(data.images[g], size, 3)) for g in members])
    result |= diversity(pipe, group_captions, real_groups, features, seed, mask=face_mask)
    return result, captions[:5]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["fashion-mnist-captions", "faces-captions"], required=True)
    parser.add_argument("--run", "--stage2", dest="run",
                        help="a trained Stage-II (or Stage-I) run to measure (default: train the stages first)")
    parser.add_argument("--stage1-steps", type=int, default=2500)
    parser.add_argument("--stage2-steps", type=int, default=600, help="0: Stage-I alone, measured alone")
    parser.add_argument("--n", type=int, default=1000, help="captions per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting for both stages (the `ganforge train --set` keys); repeatable")
    parser.add_argument("--name", help="results file text_to_image-DATA-NAME.json (default: text_to_image-DATA.json)")
    parser.add_argument("--out", help="where the runs go (default: runs; smoke: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="a few steps at tiny sizes: does the script run?")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        smoke_cache()
        domain = "fashion-mnist" if args.data.startswith("fashion") else "faces"
        train_classifier(domain, epochs=1, limit=600, attributes=domain == "faces", progress=False)
        args.stage1_steps, args.stage2_steps = 3, args.stage2_steps and 3
        args.n, args.out = 20, args.out or tempfile.mkdtemp(prefix="ganforge-smoke-")
    run = Path(args.run) if args.run else train_stages(args.data, args.stage1_steps, args.stage2_steps,
                                                              args.out or "runs", args.seed, args.smoke, args.set)
    pipe = load(run, kind="text")
    meta = pipe.meta
    if meta["config"]["data"] != args.data:
        raise SystemExit(f"{run} was trained on {meta['config']['data']}, not {args.data}")
    result, examples = (fashion if args.data.startswith("fashion") else faces)(pipe, args.n, args.seed)
    result |= {"run": str(run), "data": args.data, "n": args.n, "model": meta["model_spec"]["model"],
               "steps": meta["step"]}
    (run / "text_to_image.json").write_text(json.dumps(result, indent=1) + "\n")
    coarse, fine = pipe(examples, 8, args.seed)
    t2i_figure(examples, coarse, fine, run / "text_to_image.png")
    print(json.dumps(result, indent=1))
    trained = {"stage1_steps": args.stage1_steps, "stage2_steps": args.stage2_steps} if not args.run else {}
    record = run_record("text_to_image") | {"smoke": args.smoke, **trained, "config": meta["config"], **result}
    if not args.smoke:
        name = f"text_to_image-{args.data}" + (f"-{args.name}" if args.name else "")
        print(f"results: {write_results(name, record)}")
    return record


if __name__ == "__main__":
    main()
