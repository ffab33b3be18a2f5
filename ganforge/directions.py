"""Directions in z that change one thing, found from the generator alone: no labels, no classifier.

Two published methods, for every generator ganforge trains (mlp, dcgan, cgan; StackGAN in its noise z):
- SeFa (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021): the top
  eigenvectors of AᵀA, with A the weight of G's first layer, the one that acts on z. Moving z along
  such a vector moves that layer's output the most; it needs no sampling.
- GANSpace (Härkönen et al., NeurIPS 2020), `pca`: the principal components of an early layer's
  activations (after the first nonlinearity) over many samples, mapped back to z by linear regression
  of z on the samples' coordinates along them (the paper's way for generators without a style space).

A `Directions` holds k unit vectors of the sampler's noise length (zero outside z: a StackGAN's
Conditioning Augmentation noise is left alone), strongest first, each with its share of the
eigenvalues (sefa) or of the activations' variance (pca). Signs are fixed so that each vector's
largest entry is positive. They are kept beside the checkpoint they were found for, as a record
(`directions/METHOD.safetensors` + JSON, holding the checkpoint's SHA-256: found again when it changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ganforge.checkpoint import home
from ganforge.errors import GanforgeError
from ganforge.io import load_record, save_record
from ganforge.sampling import Sampler, noise

METHODS = {"sefa": "closed-form factorisation of the first layer's weight (Shen & Zhou 2021)",
           "pca": "principal components of an early layer's activations, regressed onto z (GANSpace, 2020)"}
FORMAT = "ganforge-directions"


@dataclass
class Directions:
    method: str
    vectors: torch.Tensor  # (k, noise_dim), unit length, strongest first
    strength: torch.Tensor  # (k,) share of the eigenvalues (sefa) or of the variance (pca)
    checkpoint_sha256: str | None = None

    def __len__(self) -> int:
        return len(self.vectors)

    def shift(self, amounts: dict[int, float] | list[float]) -> torch.Tensor:
        """sum_i amounts[i] * vector i: the step in the noise that moves along several directions at once."""
        items = amounts.items() if isinstance(amounts, dict) else enumerate(amounts)
        out = torch.zeros(self.vectors.shape[1])
        for i, amount in items:
            out += amount * self.vector(i)
        return out

    def first(self, k: int) -> Directions:
        """The k strongest of these."""
        return Directions(self.method, self.vectors[:k], self.strength[:k], self.checkpoint_sha256)

    def vector(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise GanforgeError(f"direction {i}: these {self.method} directions are numbered 0 to {len(self) - 1}")
        return self.vectors[i]


def _unit_and_signed(vectors: torch.Tensor) -> torch.Tensor:
    vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    largest = vectors.gather(1, vectors.abs().argmax(1, keepdim=True))
    return vectors * largest.sign()


def _padded(vectors: torch.Tensor, length: int) -> torch.Tensor:
    return torch.cat([vectors, vectors.new_zeros(len(vectors), length - vectors.shape[1])], dim=1)


def sefa(sampler: Sampler, k: int = 10) -> Directions:
    """The top k eigenvectors of AᵀA (A: the first layer's weight on z), strongest first."""
    where = sampler.latent()
    weight, z_dim, length = where.weight, where.dims, where.length
    k = _check_k(k, z_dim)
    A = weight.detach().double().cpu()
    values, vectors = torch.linalg.eigh(A.T @ A)  # ascending
    top = vectors[:, -k:].flip(1).T.float()
    return Directions("sefa", _padded(_unit_and_signed(top), length), (values[-k:].flip(0) / values.sum()).float())


@torch.no_grad()
def pca(sampler: Sampler, k: int = 10, samples: int = 4096, seed: int = 0,
        captions: list[str] | None = None) -> Directions:
    """GANSpace: PCA of the early activations of `samples` draws (noise of `seed`; a class-conditional G draws
    every class in turn, a StackGAN the `captions` in turn), each component mapped to the z direction that
    linear regression of z on the samples' coordinates gives."""
    where = sampler.latent()
    layer, z_dim, length = where.layer, where.dims, where.length
    k = _check_k(k, z_dim)
    if samples < 4 * k:
        raise GanforgeError(f"--samples {samples}: pca needs at least 4 samples per direction ({4 * k})")
    z = sampler.to_latent(noise(samples, sampler.noise_dim, seed))
    if sampler.takes("captions"):
        if not captions:
            raise GanforgeError("pca directions of a text-to-image model need captions to draw with")
        text = sampler.encoder.encode(captions)
        condition = text[torch.arange(samples) % len(text)]
    else:
        condition = sampler.labels(samples) if sampler.takes("labels") else None
    seen = []
    hook = layer.register_forward_hook(lambda module, args, out: seen.append(out.detach().flatten(1).float().cpu()))
    try:
        sampler.draw_latent(z, condition)
    finally:
        hook.remove()
    h = torch.cat(seen).double()
    h = h - h.mean(0)
    with torch.random.fork_rng(devices=[]):  # randomised SVD (Halko et al.): exact enough for the top k, 100x faster
        torch.manual_seed(seed)
        _, s, v = torch.svd_lowrank(h, q=min(k + 20, *h.shape), niter=6)
    coords = h @ v[:, :k]  # (samples, k): each sample along the top components
    regressed = torch.linalg.lstsq(coords, z[:, :z_dim].double()).solution  # z ~ coords @ regressed: (k, z_dim)
    return Directions("pca", _padded(_unit_and_signed(regressed.float()), length),
                      (s[:k].square() / h.square().sum()).float())


def _check_k(k: int, z_dim: int) -> int:
    if not 1 <= k <= z_dim:
        raise GanforgeError(f"--k {k}: choose 1 to {z_dim} (the length of z)")
    return k


def find(sampler: Sampler, method: str = "sefa", k: int = 10, **pca_options) -> Directions:
    if method not in METHODS:
        raise GanforgeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    found = sefa(sampler, k) if method == "sefa" else pca(sampler, k, **pca_options)
    found.checkpoint_sha256 = sampler.meta.get("sha256")
    return found


# --- kept beside the checkpoint
def record_path(folder: Path, method: str) -> Path:
    return folder / "directions" / f"{method}.safetensors"


def save(found: Directions, folder: Path, extra: dict | None = None) -> Path:
    """folder/directions/METHOD.safetensors + .json."""
    path = record_path(folder, found.method)
    save_record(path, {"vectors": found.vectors, "strength": found.strength},
                {"format": FORMAT, "method": found.method, "k": len(found), "noise_dim": found.vectors.shape[1],
                 "checkpoint_sha256": found.checkpoint_sha256, **(extra or {})})
    return path


def saved(folder: Path, method: str, checkpoint_sha256: str | None) -> Directions | None:
    """The directions kept in folder for this checkpoint, or None (none kept, or found for another checkpoint)."""
    path = record_path(folder, method)
    if not path.with_suffix(".json").is_file():
        return None
    meta, tensors = load_record(path, f"delete {path.parent} to find them again")
    if meta.get("format") != FORMAT or meta.get("checkpoint_sha256") != checkpoint_sha256:
        return None
    return Directions(method, tensors["vectors"], tensors["strength"], checkpoint_sha256)


def for_checkpoint(checkpoint_json: Path, sampler: Sampler, method: str = "sefa", k: int = 10,
                   **pca_options) -> Directions:
    """The directions of a checkpoint: those kept beside it when they are for it and there are at least k (the
    first k of them), else found now and kept."""
    folder = home(checkpoint_json)
    kept = saved(folder, method, sampler.meta.get("sha256"))
    if kept is not None and len(kept) >= k:
        return kept.first(k)
    found = find(sampler, method, k, **pca_options)
    try:
        save(found, folder)
    except OSError:
        pass  # a folder we may not write to (a shared model): the directions are found again next time
    return found


# --- the figure's images
def walk(sampler: Sampler, found: Directions, z: torch.Tensor, amounts: torch.Tensor,
         labels: torch.Tensor | None = None, captions: list[str] | None = None) -> torch.Tensor:
    """For each direction, each sample z and each amount: the image of z + amount * direction, as
    (k, samples, steps, C, H, W). A class-conditional G draws `labels` (one per sample); a StackGAN `captions`
    (one per sample), its last stage."""
    k, n, steps = len(found), len(z), len(amounts)
    latent = sampler.to_latent(z)
    moved = latent[None, :, None, :] + amounts[None, None, :, None] * found.vectors[:, None, None, :]
    moved = moved.reshape(-1, latent.shape[1])
    if sampler.takes("captions"):
        condition = sampler.encoder.encode(captions).repeat_interleave(steps, dim=0).repeat(k, 1)
    else:
        condition = None if labels is None else labels.repeat_interleave(steps).repeat(k)
    images = sampler.draw_latent(moved, condition)
    return images.reshape(k, n, steps, *images.shape[1:])
