"""Walking and calculating in latent space: interpolation, concept vectors, arithmetic, inversion.

A z vector is named by a seed (`seed_noise`: row 0 of the seed's noise, the first sample
`G.sample(n, seed)` draws) or found by an attribute query on G's samples (`query_concept`); a latent
vector is recovered from an image (`invert`, the image read by `read_image`, a classifier's features from
`inversion_features`). G is a loaded generator (`ganforge.load`). A concept is several such vectors, spelt as
the command line and the studio take them by `concept_from`; arithmetic works on their averages, as in the
DCGAN paper (Radford et al. 2015, section 6.3). Concepts, arithmetic and inversion work in G's latent space
(`G.latent_space`): z itself, or w where G has a mapping network (the light model), which is where StyleGAN's
authors found attributes to add up (Karras et al. 2019, section 4).
"""

from __future__ import annotations

import dataclasses
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
    """Exemplar vectors of one idea ("smiling, long hair") in G's latent space, with where they came from."""

    name: str
    latent: torch.Tensor  # (k, latent length): z, or w for a generator with a mapping network
    source: str  # "seeds", "query <text>" or "images"
    seeds: list[int] | None = None
    scores: list[float] | None = None
    images: torch.Tensor | None = field(default=None, repr=False)  # the exemplar images, for the figure

    @property
    def mean(self) -> torch.Tensor:
        return self.latent.mean(0)


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def parse_expression(text: str) -> list[tuple[int, str]]:
    """'A - B + C' -> [(1, 'A'), (-1, 'B'), (1, 'C')]."""
    if not re.fullmatch(rf"\s*[+-]?\s*{_NAME}(\s*[+-]\s*{_NAME})*\s*", text):
        raise GanforgeError(f"{text!r}: expected concept names joined by + and -, e.g. 'A - B + C'")
    return [(-1 if sign == "-" else 1, name) for sign, name in re.findall(rf"([+-]?)\s*({_NAME})", text)]


def combine(terms: list[tuple[int, str]], concepts: dict[str, Concept]) -> torch.Tensor:
    """The signed sum of the concepts' average latent vectors."""
    missing = [name for _, name in terms if name not in concepts]
    if missing:
        raise GanforgeError(f"no concept given for {', '.join(missing)} (use --concept NAME=...)")
    return sum(sign * concepts[name].mean for sign, name in terms)


SPREAD_SAMPLES = 2000  # random latents that measure w's spread


@torch.no_grad()
def latent_spread(G: Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, standard deviation) of each number of G's latent: 0 and 1 in z ~ N(0, I); in w, measured over the
    first SPREAD_SAMPLES rows of seed 0's noise, mapped."""
    if G.latent_space == "z":
        return torch.zeros(G.z_dim), torch.ones(G.z_dim)
    w = G.to_latent(noise(SPREAD_SAMPLES, G.z_dim, 0))
    return w.mean(0), w.std(0)


def around(G: Generator, latent: torch.Tensor, n: int, scale: float, seed: int = 0) -> torch.Tensor:
    """n latents near one: the first is itself, the others it plus scale * N(0, I) in units of the latent's own
    spread (the paper's grid of results)."""
    jitter = noise(n, latent.shape[-1], seed) * scale * latent_spread(G)[1]
    jitter[0] = 0
    return latent.unsqueeze(0) + jitter


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


def pick(logits: torch.Tensor, terms: list[tuple[int, bool]], k: int, query: str = "",
         rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, probabilities) of the k samples that satisfy every term and score highest (with `rng`: k of
    those that satisfy every term, at random)."""
    score, ok = query_scores(logits, terms)
    if ok.sum() < k:
        raise GanforgeError(f"only {int(ok.sum())} of {len(logits)} samples satisfy {query!r}, fewer than {k}; "
                            "try a larger --pool, a simpler query, or a better-trained model")
    if rng is not None:
        fits = ok.nonzero().squeeze(1)
        chosen = fits[torch.randperm(len(fits), generator=rng)[:k]]
    else:
        chosen = torch.where(ok, score, torch.tensor(-float("inf"))).topk(k).indices
    return chosen, score[chosen].exp()


def concept_from(G: Generator, given: str, scorer, k: int = 3, pool: int = 2000, seed: int = 0,
                 progress: bool = False) -> Concept:
    """A concept spelt NAME=SEEDS (3,7,11), NAME=QUERY (an attribute query: `scorer()` gives the classifier
    and its attribute names, asked for only here) or NAME=images:FILES (image files, each inverted into G's
    latent space)."""
    name, sep, value = given.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise GanforgeError(f"--concept {given!r}: expected NAME=SEEDS, NAME=QUERY or NAME=images:FILES")
    if re.fullmatch(r"\d+(,\d+)*", value):
        seeds = [int(x) for x in value.split(",")]
        z = seed_noise(seeds, G.z_dim)
        concept = Concept(name, G.to_latent(z), "seeds", seeds, images=G(z))
    elif value.startswith("images:"):
        files = value.removeprefix("images:")
        latent = torch.stack([invert(G, read_image(f, G.image_size, G.channels), progress=progress)[0]
                              for f in files.split(",")])
        concept = Concept(name, latent, "images " + files, images=G.draw_latent(latent))
    else:
        concept = query_concept(G, *scorer(), value, k, pool, seed, name)
    if len(concept.latent) < 3:
        raise GanforgeError(f"--concept {name}: a concept averages at least 3 latent vectors (as in the DCGAN "
                            f"paper), got {len(concept.latent)}")
    return concept

def at_typical_length(G: Generator, latent: torch.Tensor) -> torch.Tensor:
    """The latent moved along its line from the latent's mean to where a random one lies: its distance from the
    mean, in units of the latent's spread, set to sqrt(length), that of a typical draw. A mean of k latents lies
    about sqrt(k) times nearer the mean than any of them, and A - B + C of such means at sqrt(3 / k) of the
    typical distance: an image of fewer, fainter attributes for larger k."""
    mean, std = latent_spread(G)
    offset = (latent - mean) / std
    return mean + offset * (offset.shape[-1] ** 0.5 / offset.norm(dim=-1, keepdim=True)) * std


@dataclass(frozen=True)
class Analogy:
    """[A] - [B] + [C] = [D] for a target attribute t and two identities s and u, each concept an attribute
    query: A = t & s & !u, B = !t & s & !u, C = !t & u & !s, and the result should be D = t & u & !s. The DCGAN
    paper's [smiling woman] - [neutral woman] + [neutral man] = [smiling man] is t, s, u = smiling, long hair,
    beard on the faces."""

    target: str
    given: str
    other: str
    absent: tuple[str, ...] = ()  # attributes every exemplar must lack: no incidental hats or glasses

    @property
    def queries(self) -> dict[str, str]:
        t, s, u = self.target, self.given, self.other
        rest = "".join(f"&!{name}" for name in self.absent)
        return {"A": f"{t}&{s}&!{u}{rest}", "B": f"!{t}&{s}&!{u}{rest}", "C": f"!{t}&{u}&!{s}{rest}"}

    def clean(self, binary: list[str]) -> Analogy:
        """The analogy with exemplars that lack every one of `binary` it does not name: concepts that differ in
        what the analogy is about, not in a hat or sunglasses that the most confident exemplars happen to wear."""
        named = {self.target, self.given, self.other}
        return dataclasses.replace(self, absent=tuple(name for name in binary if name not in named))

    @property
    def intended(self) -> str:
        return f"{self.target}&{self.other}&!{self.given}"

    @property
    def title(self) -> str:
        t, s, u = (name.replace("_", " ") for name in (self.target, self.given, self.other))
        return f"[{t}, {s}] - [{s}] + [{u}] = [{t}, {u}]"


# the chapter's two: the smiling woman made a smiling man, and the man with glasses lending them to a woman
CHAPTER_ANALOGIES = {"smile": Analogy("smiling", "long_hair", "beard"), "glasses": Analogy("glasses", "beard", "long_hair")}


@torch.no_grad()
def sample_pool(G: Generator, classify, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, attribute logits) of G's samples of seeds 0 .. n-1: what queries pick exemplars from."""
    z = seed_noise(list(range(n)), G.z_dim)
    return G.to_latent(z), classify(G(z))


@torch.no_grad()
def analogy_rates(G: Generator, classify, names: list[str], analogies: list[Analogy],
                  pool: tuple[torch.Tensor, torch.Tensor], exemplars=(1, 3, 10), seed: int = 0,
                  typical: bool = False, at_random: bool = False) -> tuple[dict[int, float], dict, dict]:
    """How often arithmetic on concepts lands where it should: for each analogy (one draw each), its three
    concepts are the k samples the attribute classifier scores highest for each query among a random half of a
    pool of G's samples (k of those that satisfy the query, at random, with `at_random`), and the draw counts when
    the classifier finds the intended attributes on the image of mean A - mean B + mean C (moved to a typical
    draw's length with `typical`: at_typical_length). Returns ({k: share of draws that land}, {k: (concepts,
    result) of the first draw}, {k: {attribute: share of draws whose result gets that intended attribute
    wrong}}) for each k of `exemplars`; the draws share their halves across k, so the rates compare exemplar
    counts on the same concepts' pools. `pool`: sample_pool's, computed once for every measure taken on one
    model."""
    latents, logits = pool
    rng = torch.Generator().manual_seed(seed)
    hits, first = dict.fromkeys(exemplars, 0), {}
    misses = {k: {} for k in exemplars}
    for analogy in analogies:
        half = torch.randperm(len(latents), generator=rng)[:len(latents) // 2]
        for k in exemplars:
            concepts = {name: Concept(name, latents[half[pick(logits[half], parse_query(query, names), k, query,
                                                               rng if at_random else None)[0]]], f"query {query}")
                        for name, query in analogy.queries.items()}
            result = combine(parse_expression("A - B + C"), concepts)
            if typical:
                result = at_typical_length(G, result)
            got = classify(G.draw_latent(result.unsqueeze(0)))[0] > 0
            wrong = [names[i] for i, wanted in parse_query(analogy.intended, names) if bool(got[i]) != wanted]
            hits[k] += not wrong
            for name in wrong:
                misses[k][name] = misses[k].get(name, 0) + 1 / len(analogies)
            first.setdefault(k, (concepts, result))
    return {k: hits[k] / len(analogies) for k in exemplars}, first, misses


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
    return Concept(name or query, G.to_latent(z[best]), f"query {query}", [seeds[i] for i in best],
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
    """A latent (z, or w for a generator with a mapping network) from which G draws a float image (C, H, W) in
    [-1, 1] -> (latent, final pixel MSE).

    Minimises mean squared pixel error, plus `feature_weight` times the squared error of
    `features` (e.g. a classifier's body) when given, plus `prior` times the mean square of the latent in units
    of its spread (||z||^2 / z_dim for z ~ N(0, I)), from `restarts` random starts optimised together with Adam;
    the best start wins.
    """
    net, G_net = G.latent_net(), G.net
    was_training, needed_grad = G_net.training, [p.requires_grad for p in G_net.parameters()]
    G_net.eval()
    G_net.requires_grad_(False)
    target = target.unsqueeze(0)
    wanted = features(target) if features is not None else None
    centre, spread = latent_spread(G)
    latent = G.to_latent(noise(restarts, G.z_dim, seed)).requires_grad_(True)
    opt = torch.optim.Adam([latent], lr=lr * spread.mean().item())
    for _ in tqdm(range(steps), desc="inverting", unit="step", disable=not progress, leave=False):
        image = net(latent)
        pixel = (image - target).square().flatten(1).mean(1)
        loss = pixel + prior * ((latent - centre) / spread).square().mean(1)
        if features is not None:
            loss = loss + feature_weight * (features(image) - wanted).square().flatten(1).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    with torch.no_grad():
        pixel = (net(latent) - target).square().flatten(1).mean(1)
    for p, needed in zip(G_net.parameters(), needed_grad):
        p.requires_grad_(needed)
    G_net.train(was_training)
    best = pixel.argmin()
    return latent[best].detach(), pixel[best].item()
