"""Pure metric functions: feature arrays (N, D) in, numbers out.

Inputs may be numpy arrays or torch tensors; everything is computed in float64.
- FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) compare feature distributions;
- precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020) compare
  k-nearest-neighbour manifolds of real and generated features;
- class-based scores take a classifier's predictions on generated samples.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor
EPS = 1e-12


def _to_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _as_array(x: ArrayLike, ndim: int = 2) -> np.ndarray:
    """`x` as a float64 numpy array, checked to have `ndim` dimensions."""
    x = _to_numpy(x).astype(np.float64)
    if x.ndim != ndim:
        raise ValueError(f"expected a {ndim}-D array, got shape {x.shape}")
    return x


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    return torch.from_numpy(_as_array(x))


# ---- Fréchet and kernel distances ----

def feature_stats(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of the rows, covariance with ddof=1 as in pytorch-fid."""
    x = _as_array(features)
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False, ddof=1))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric matrix, negative eigenvalues clipped to 0."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                   sigma2: np.ndarray) -> float:
    """Fréchet distance ||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

    Tr((S1 S2)^(1/2)) is the sum of square roots of the eigenvalues of the symmetric matrix
    sqrt(S1) S2 sqrt(S1), which share those of S1 S2: stable and free of complex numbers.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def fid(real: ArrayLike, fake: ArrayLike) -> float:
    """Fréchet Inception Distance between two feature sets (any features, not only Inception)."""
    return fid_from_stats(*feature_stats(real), *feature_stats(fake))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cubic polynomial kernel k(x, y) = (x.y / d + 1)^3."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between two equally sized samples under the cubic kernel."""
    m = len(x)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / m**2)


def kid(real: ArrayLike, fake: ArrayLike, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of unbiased MMD^2 over random subsets.

    Each subset draws `subset_size` points (capped at the smaller set) without replacement from
    each set. Being unbiased, the estimate may be slightly negative for equal distributions.
    """
    x, y = _as_array(real), _as_array(fake)
    m = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    values = [_mmd2_unbiased(x[rng.choice(len(x), m, replace=False)],
                             y[rng.choice(len(y), m, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


# ---- k-nearest-neighbour manifolds ----

def _kth_nn_distance(queries: torch.Tensor, points: torch.Tensor, k: int,
                     chunk_size: int) -> torch.Tensor:
    """Distance from each query to its k-th nearest point (k=1: the nearest), in query chunks."""
    if not 1 <= k <= len(points):
        raise ValueError(f"k={k} must lie in [1, {len(points)}]")
    return torch.cat([torch.cdist(chunk, points).topk(k, dim=1, largest=False).values[:, -1]
                      for chunk in queries.split(chunk_size)])


def _knn_radii(x: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    """Each point's distance to its k-th nearest neighbour in its own set, itself excluded."""
    return _kth_nn_distance(x, x, k + 1, chunk_size)


def _ball_counts(queries: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor,
                 chunk_size: int) -> torch.Tensor:
    """For each query, how many balls (centers[i], radii[i]) contain it."""
    return torch.cat([(torch.cdist(chunk, centers) <= radii).sum(dim=1)
                      for chunk in queries.split(chunk_size)])


def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = 3,
                     chunk_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    precision: share of fakes inside the real manifold (union of real k-NN balls);
    recall: share of reals inside the fake manifold.
    """
    x, y = _as_tensor(real), _as_tensor(fake)
    inside_real = _ball_counts(y, x, _knn_radii(x, k, chunk_size), chunk_size) > 0
    inside_fake = _ball_counts(x, y, _knn_radii(y, k, chunk_size), chunk_size) > 0
    return inside_real.double().mean().item(), inside_fake.double().mean().item()


def group_spread(x: ArrayLike) -> float:
    """(groups, m, ...) -> the mean distance between two members of one group, averaged over the groups: the
    variety within a group (one caption's images, one class's); 0 when each group is m copies of one thing."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten(2)
    m = x.shape[1]
    return (torch.cdist(x, x).sum((1, 2)) / (m * (m - 1))).mean().item()


def recall_per_class(real: ArrayLike, real_labels: ArrayLike, fake: ArrayLike, fake_labels: ArrayLike,
                     n_classes: int, k: int = 3) -> list[float | None]:
    """Recall within each class (Kynkaanniemi et al.'s, above): the share of class c's real images inside the
    manifold of the forgeries drawn as class c. It asks whether a conditional G draws a class's variety, which a
    global recall over all classes cannot: ten perfect garments, one per class, have a fair global recall and a
    within-class recall near 0. None for a class with at most k images on either side."""
    x, y = _as_tensor(real), _as_tensor(fake)
    rl, fl = torch.as_tensor(_to_numpy(real_labels)), torch.as_tensor(_to_numpy(fake_labels))
    out: list[float | None] = []
    for c in range(n_classes):
        xc, yc = x[rl == c], y[fl == c]
        out.append(precision_recall(xc, yc, k)[1] if min(len(xc), len(yc)) > k else None)
    return out


def density_coverage(real: ArrayLike, fake: ArrayLike, k: int = 5,
                     chunk_size: int = 1024) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020).

    density: real k-NN balls containing each fake, summed and divided by k * len(fake);
    coverage: share of real points whose k-NN ball contains at least one fake.
    """
    x, y = _as_tensor(real), _as_tensor(fake)
    radii = _knn_radii(x, k, chunk_size)
    density = _ball_counts(y, x, radii, chunk_size).sum().item() / (k * len(y))
    covered = _kth_nn_distance(x, y, 1, chunk_size) <= radii
    return float(density), covered.double().mean().item()


# ---- classifier-based scores ----

def _label_counts(labels: ArrayLike, n_classes: int) -> np.ndarray:
    """Number of occurrences (n_classes,) of each integer label in [0, n_classes)."""
    labels = _to_numpy(labels).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    return np.bincount(labels.ravel(), minlength=n_classes)


def _class_histogram(pred_probs_or_labels: ArrayLike, n_classes: int) -> np.ndarray:
    """Class shares: counts of integer labels (N,), or the mean of probabilities (N, C)."""
    pred = _to_numpy(pred_probs_or_labels)
    if pred.ndim == 2:
        hist = _as_array(pred).mean(axis=0)
    else:
        hist = _label_counts(pred, n_classes).astype(np.float64)
    if hist.shape != (n_classes,):
        raise ValueError(f"expected {n_classes} classes, got {hist.shape[0]}")
    return hist / hist.sum()


def class_histogram_kl(pred_probs_or_labels: ArrayLike, data_class_freq: ArrayLike) -> float:
    """KL(generated class histogram || data class histogram), with EPS inside the logs.

    `pred_probs_or_labels`: a classifier's labels (N,) or probabilities (N, C) on generated
    samples; `data_class_freq`: class counts or shares (C,) of the data.
    """
    q = _as_array(data_class_freq, ndim=1)
    q = q / q.sum()
    p = _class_histogram(pred_probs_or_labels, len(q))
    return float(np.sum(p * (np.log(p + EPS) - np.log(q + EPS))))


def classes_covered(pred_labels: ArrayLike, n_classes: int, min_share: float = 0.0) -> int:
    """How many classes receive at least one prediction and at least `min_share` of them."""
    counts = _label_counts(pred_labels, n_classes)
    return int(np.sum((counts > 0) & (counts >= min_share * counts.sum())))


def classifier_score(probs: ArrayLike) -> float:
    """exp(E_x KL(p(y|x) || p(y))): the Inception Score formula on given softmax outputs (N, C)."""
    p = _as_array(probs)
    marginal = p.mean(axis=0, keepdims=True)
    kl = np.sum(p * (np.log(p + EPS) - np.log(marginal + EPS)), axis=1)
    return float(np.exp(kl.mean()))
