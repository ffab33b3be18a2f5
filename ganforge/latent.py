"""Walking and calculating in z space: interpolation, concept vectors, arithmetic, inversion.

A z vector is named by a seed (`seed_noise`: row 0 of the seed's noise, the first sample
`G.sample(n, seed)` draws), found by an attribute query on G's samples (`query_concept`), or
recovered from an image (`invert`, the image read by `read_image`, a classifier's features from
`inversion_features`). G is a loaded generator (`ganforge.load`). A concept is several such vectors, spelt as
the command line and the studio take them by `concept_from`; arithmetic works on their averages, as in the
DCGAN paper (Radford et al. 2015, section 6.3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ganforge.errors import GanforgeError
from ganforge.sampling import Generator, noise


def seed_noise(seeds: list[int], z_dim: int) -> torch.Tensor:
    """One z per seed, each the first vector `G.sample(n, seed)` draws: (len(seeds), z_dim)."""
    return torch.cat([noise(1, z_dim, s) for s in seeds])


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Along the great circle from a to b, with the norm interpolated linearly; lerp when they are parallel."""
    t = torch.as_tensor(t, dtype=a.dtype)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    cos = ((a / na) * (b / nb)).sum(-1, keepdim=True).clamp(-1, 1)
    omega = torch.arccos(cos)
    if (omega.abs() < 1e-6).all():
        return lerp(a, b, t)
    direction = (torch.sin((1 - t) * omega) * a / na + torch.sin(t * omega) * b / nb) / torch.sin(omega)
    return direction * lerp(na, nb, t)


def path(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool = False) -> torch.Tensor:
    """`steps` points from a to b, both ends included: (steps, z_dim)."""
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    return (slerp if spherical else lerp)(a.unsqueeze(0), b.unsqueeze(0), t)


# --- concepts and arithmetic
@dataclass
class Concept:
    """Exemplar z vectors of one idea ("smiling, long hair"), with where they came from."""

    name: str
    z: torch.Tensor  # (k, z_dim)
    source: str  # "seeds", "query <text>" or "images"
    seeds: list[int] | None = None
    scores: list[float] | None = None
    images: torch.Tensor | None = field(default=None, repr=False)  # the exemplar images, for the figure

    @property
    def mean(self) -> torch.Tensor:
        return self.z.mean(0)


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def parse_expression(text: str) -> list[tuple[int, str]]:
    """'A - B + C' -> [(1, 'A'), (-1, 'B'), (1, 'C')]."""
    if not re.fullmatch(rf"\s*[+-]?\s*{_NAME}(\s*[+-]\s*{_NAME})*\s*", text):
        raise GanforgeError(f"{text!r}: expected concept names joined by + and -, e.g. 'A - B + C'")
    return [(-1 if sign == "-" else 1, name) for sign, name in re.findall(rf"([+-]?)\s*({_NAME})", text)]


def combine(terms: list[tuple[int, str]], concepts: dict[str, Concept]) -> torch.Tensor:
    """The signed sum of the concepts' average z vectors."""
    missing = [name for _, name in terms if name not in concepts]
    if missing:
        raise GanforgeError(f"no concept given for {', '.join(missing)} (use --concept NAME=...)")
    return sum(sign * concepts[name].mean for sign, name in terms)


def around(z: torch.Tensor, n: int, scale: float, seed: int = 0) -> torch.Tensor:
    """n vectors near z: the first is z itself, the others z + scale * N(0, I) (the paper's grid of results)."""
    jitter = noise(n, z.shape[-1], seed) * scale
    jitter[0] = 0
    return z.unsqueeze(0) + jitter


# --- attribute queries
def parse_query(query: str, names: list[str]) -> list[tuple[int, bool]]:
    """'smiling&long_hair&!beard' -> [(index of smiling, True), (index of long_hair, True), (index of beard, False)]."""
    terms = []
    for part in query.split("&"):
        part = part.strip()
        wanted = not part.startswith("!")
        name = part.lstrip("!").strip()
        if name not in names:
            raise GanforgeError(f"unknown attribute {name!r} in {query!r}; known: {', '.join(names)}")
        terms.append((names.index(name), wanted))
    return terms


def query_scores(logits: torch.Tensor, terms: list[tuple[int, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability that each sample satisfies the whole query, whether each satisfies every term)."""
    signs = torch.tensor([1.0 if wanted else -1.0 for _, wanted in terms])
    chosen = logits[:, [i for i, _ in terms]] * signs
    return F.logsigmoid(chosen).sum(1), (chosen > 0).all(1)


def pick(logits: torch.Tensor, terms: list[tuple[int, bool]], k: int, query: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, probabilities) of the k samples that satisfy every term and score highest."""
    score, ok = query_scores(logits, terms)
    if ok.sum() < k:
        raise GanforgeError(f"only {int(ok.sum())} of {len(logits)} samples satisfy {query!r}, fewer than {k}; "
                            "try a larger --pool, a simpler query, or a better-trained model")
    best = torch.where(ok, score, torch.tensor(-float("inf"))).topk(k).indices
    return best, score[best].exp()


def concept_from(G: Generator, given: str, scorer, k: int = 3, pool: int = 2000, seed: int = 0,
                 progress: bool = False) -> Concept:
    """A concept spelt NAME=SEEDS (3,7,11), NAME=QUERY (an attribute query: `scorer()` gives the classifier
    and its attribute names, asked for only here) or NAME=images:FILES (image files, each inverted into z)."""
    name, sep, value = given.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise GanforgeError(f"--concept {given!r}: expected NAME=SEEDS, NAME=QUERY or NAME=images:FILES")
    if re.fullmatch(r"\d+(,\d+)*", value):
        seeds = [int(x) for x in value.split(",")]
        z = seed_noise(seeds, G.z_dim)
        concept = Concept(name, z, "seeds", seeds, images=G(z))
    elif value.startswith("images:"):
        files = value.removeprefix("images:")
        z = torch.stack([invert(G, read_image(f, G.image_size, G.channels), progress=progress)[0]
                         for f in files.split(",")])
        concept = Concept(name, z, "images " + files, images=G(z))
    else:
        concept = query_concept(G, *scorer(), value, k, pool, seed, name)
    if len(concept.z) < 3:
        raise GanforgeError(f"--concept {name}: a concept averages at least 3 z vectors (as in the DCGAN "
                            f"paper), got {len(concept.z)}")
    return concept

@torch.no_grad()
def query_concept(G: Generator, classify, names: list[str], query: str, k: int = 3, pool: int = 2000,
                  first_seed: int = 0, name: str = "") -> Concept:
    """The k samples among `pool` (seeds first_seed, first_seed + 1, ...) that the attribute
    classifier scores highest for the query, all of them satisfying it. `classify` maps float
    images to attribute logits (N, A)."""
    terms = parse_query(query, names)
    seeds = list(range(first_seed, first_seed + pool))
    z = seed_noise(seeds, G.z_dim)
    images = G(z)
    best, probs = pick(classify(images), terms, k, query)
    return Concept(name or query, z[best], f"query {query}", [seeds[i] for i in best],
                   [round(p, 4) for p in probs.tolist()], images[best])


# --- inversion
def read_image(path: str | Path, size: int, channels: int) -> torch.Tensor:
    """An image file -> float (C, H, W) in [-1, 1] at `size` and `channels`: what `invert` matches."""
    from ganforge.data import to_float
    from ganforge.data.folder import decode

    try:
        array = decode(Path(path), size, channels)
    except FileNotFoundError:
        raise GanforgeError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for files it cannot read
        raise GanforgeError(f"{path}: not an image Pillow can read ({type(e).__name__}: {e})") from None
    return to_float(torch.tensor(array))


def inversion_features(data: str, channels: int, root: Path | None = None):
    """The feature loss for `invert`: the body of a cached classifier of `data` (of attributes first, then of
    classes) at G's channel count, as a function of images; None where none is cached."""
    from ganforge.metrics.classifier import classifier_path, load_classifier, resize_to

    for attributes in (True, False):
        if classifier_path(data, root, attributes).is_file():
            net, info = load_classifier(data, root, attributes)
            net.requires_grad_(False)
            if info["channels"] == channels:
                return lambda x, net=net, size=info["image_size"]: net.body(resize_to(x, size))
    return None


def invert(G: Generator, target: torch.Tensor, steps: int = 300, restarts: int = 4, lr: float = 0.05,
           prior: float = 1e-3, features: nn.Module | None = None, feature_weight: float = 0.1,
           seed: int = 0, progress: bool = False) -> tuple[torch.Tensor, float]:
    """z such that G(z) matches a float image (C, H, W) in [-1, 1] -> (z, final pixel MSE).

    Minimises mean squared pixel error, plus `feature_weight` times the squared error of
    `features` (e.g. a classifier's body) when given, plus `prior` * ||z||^2 / z_dim (z ~ N(0, I)),
    from `restarts` random starts optimised together with Adam; the best start wins.
    """
    net = G.net
    was_training, needed_grad = net.training, [p.requires_grad for p in net.parameters()]
    net.eval()
    net.requires_grad_(False)
    target = target.unsqueeze(0)
    wanted = features(target) if features is not None else None
    z = noise(restarts, G.z_dim, seed).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in tqdm(range(steps), desc="inverting", unit="step", disable=not progress, leave=False):
        image = net(z)
        pixel = (image - target).square().flatten(1).mean(1)
        loss = pixel + prior * z.square().mean(1)
        if features is not None:
            loss = loss + feature_weight * (features(image) - wanted).square().flatten(1).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    with torch.no_grad():
        pixel = (net(z) - target).square().flatten(1).mean(1)
    for p, needed in zip(net.parameters(), needed_grad):
        p.requires_grad_(needed)
    net.train(was_training)
    best = pixel.argmin()
    return z[best].detach(), pixel[best].item()
