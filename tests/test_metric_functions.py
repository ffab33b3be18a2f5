"""Properties of the pure metric functions on small seeded random data."""

import numpy as np
import pytest
import torch
from conftest import skip_or_fail

from ganforge.metrics.functions import (
    class_histogram_kl,
    classes_covered,
    classifier_score,
    density_coverage,
    feature_stats,
    fid,
    fid_from_stats,
    kid,
    precision_recall,
    recall_per_class,
)


def gaussian(n, mean, std, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(mean, std, size=(n, len(mean)))


def two_clusters(n, seed):
    """Half the points near (-10, -10), half near (10, 10)."""
    x = gaussian(n, [0.0, 0.0], 1.0, seed)
    x[: n // 2] -= 10
    x[n // 2:] += 10
    return x


# ---- FID ----

def test_fid_of_a_set_with_itself_is_zero():
    x = gaussian(300, np.zeros(6), 1.0, seed=0)
    assert abs(fid(x, x)) < 1e-6


def test_fid_from_stats_matches_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, -1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 9.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = fid_from_stats(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-12)


def test_fid_on_large_samples_approaches_the_closed_form():
    mu1, mu2 = np.array([0.0, 0.0]), np.array([1.0, 2.0])
    std1, std2 = np.array([1.0, 2.0]), np.array([np.sqrt(2.0), 1.0])
    s1, s2 = std1**2, std2**2
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = fid(gaussian(20000, mu1, std1, seed=1), gaussian(20000, mu2, std2, seed=2))
    assert got == pytest.approx(expected, abs=0.3)  # sampling noise: std about 0.09


def test_fid_is_symmetric_and_accepts_tensors():
    x = gaussian(200, np.zeros(4), 1.0, seed=3)
    y = gaussian(200, np.ones(4), 2.0, seed=4)
    assert fid(x, y) == pytest.approx(fid(y, x), rel=1e-9)
    assert fid(torch.from_numpy(x).float(), torch.from_numpy(y)) == pytest.approx(fid(x, y), rel=1e-5)
    assert fid(x, y) > 1.0


def test_feature_stats_uses_unbiased_covariance():
    x = gaussian(50, np.zeros(3), 1.0, seed=5)
    mu, sigma = feature_stats(x)
    centred = x - x.mean(axis=0)
    np.testing.assert_allclose(mu, x.mean(axis=0))
    np.testing.assert_allclose(sigma, centred.T @ centred / (len(x) - 1))


# ---- KID ----

def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    x = gaussian(300, np.zeros(8), 1.0, seed=6)
    same = gaussian(300, np.zeros(8), 1.0, seed=7)
    shifted = gaussian(300, np.full(8, 1.0), 1.0, seed=8)
    same_mean, _ = kid(x, same, subsets=20, subset_size=200)
    shifted_mean, shifted_std = kid(x, shifted, subsets=20, subset_size=200)
    assert shifted_mean > 0.1
    assert shifted_mean > 10 * shifted_std
    assert abs(same_mean) < 0.02 * shifted_mean


def brute_force_mmd2(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as plain loops."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m**2


def test_kid_with_one_full_subset_equals_brute_force_mmd():
    x = gaussian(30, np.zeros(3), 1.0, seed=9)
    y = gaussian(30, np.full(3, 0.5), 1.5, seed=10)
    mean, std = kid(x, y, subsets=1, subset_size=1000)
    assert mean == pytest.approx(brute_force_mmd2(x, y), rel=1e-10)
    assert std == 0.0


def test_kid_subset_size_is_capped_at_the_smaller_set():
    """Each subset takes 25 of x's 40 points and all 25 of y's: the brute-force MMD^2 of those draws."""
    x = gaussian(40, np.zeros(3), 1.0, seed=11)
    y = gaussian(25, np.full(3, 0.3), 1.0, seed=12)
    mean, std = kid(x, y, subsets=5, subset_size=1000, seed=3)
    rng = np.random.default_rng(3)  # the draws kid makes, x's then y's, per subset
    values = []
    for _ in range(5):
        xs, ys = x[rng.choice(40, 25, replace=False)], y[rng.choice(25, 25, replace=False)]
        values.append(brute_force_mmd2(xs, ys))
    assert mean == pytest.approx(np.mean(values), rel=1e-10) and std == pytest.approx(np.std(values), rel=1e-8)
    assert std > 0  # the subsets of x differ
    assert kid(x, y, subsets=5, subset_size=25, seed=3) == (mean, std)


# ---- precision / recall, density / coverage ----

def test_precision_recall_of_identical_sets_is_one():
    x = gaussian(200, np.zeros(3), 1.0, seed=13)
    assert precision_recall(x, x) == (1.0, 1.0)


def test_mode_collapse_keeps_precision_and_loses_recall():
    real = two_clusters(400, seed=14)
    fake = gaussian(200, [-10.0, -10.0], 1.0, seed=15)
    precision, recall = precision_recall(real, fake)
    assert precision > 0.9
    assert recall < 0.6


def test_precision_recall_does_not_depend_on_chunk_size():
    real = two_clusters(150, seed=16)
    fake = gaussian(120, [-9.0, -10.0], 1.5, seed=17)
    assert precision_recall(real, fake, chunk_size=7) == precision_recall(real, fake)
    assert density_coverage(real, fake, chunk_size=13) == density_coverage(real, fake)


def test_density_and_coverage_near_one_for_one_distribution():
    real = gaussian(500, np.zeros(2), 1.0, seed=18)
    fake = gaussian(500, np.zeros(2), 1.0, seed=19)
    density, coverage = density_coverage(real, fake)
    assert 0.8 < density < 1.2
    assert coverage > 0.9


def test_coverage_is_low_under_mode_collapse():
    real = two_clusters(400, seed=20)
    fake = gaussian(200, [10.0, 10.0], 1.0, seed=21)
    density, coverage = density_coverage(real, fake)
    assert coverage < 0.6
    assert density > 0.5


def _classes(n_per_class, seed, spread=1.0):
    """Three classes, far apart, each a Gaussian cloud in 4 dimensions: (points, labels)."""
    centres = np.array([[0.0] * 4, [20.0] * 4, [-20.0] * 4])
    labels = np.repeat(np.arange(3), n_per_class)
    return centres[labels] + gaussian(len(labels), np.zeros(4), spread, seed), labels


def test_recall_within_each_class_sees_a_generator_that_draws_one_image_per_class():
    real, labels = _classes(150, seed=30)
    varied, varied_labels = _classes(150, seed=31)  # each class's variety
    assert all(r > 0.8 for r in recall_per_class(real, labels, varied, varied_labels, 3))
    one = np.repeat(varied[[0, 150, 300]], 150, axis=0)  # one image per class, drawn 150 times, in its class
    assert all(r < 0.05 for r in recall_per_class(real, labels, one, labels, 3))
    thin, _ = _classes(150, seed=32, spread=0.2)  # each class's centre only: right class, a fifth of its spread
    assert all(r < 0.3 for r in recall_per_class(real, labels, thin, labels, 3))
    swapped = (varied_labels + 1) % 3  # every class's variety, drawn under another class's label
    assert precision_recall(real, varied)[1] > 0.8 and max(recall_per_class(real, labels, varied, swapped, 3)) == 0
    assert recall_per_class(real, labels, varied[:3], varied_labels[:3], 3) == [None, None, None]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_density_coverage_match_the_prdc_package(seed):
    """Against `prdc` (Naeem et al.'s reference implementation) on random features of unequal sets."""
    try:
        from prdc import compute_prdc
    except ImportError:
        skip_or_fail("the reference metrics need the prdc package (pip install prdc)")
    real = gaussian(300, np.zeros(16), 1.0, seed=100 + seed).astype(np.float32)
    fake = gaussian(250, np.full(16, 0.2), 1.2, seed=200 + seed).astype(np.float32)
    three, five = compute_prdc(real, fake, nearest_k=3), compute_prdc(real, fake, nearest_k=5)
    precision, recall = precision_recall(real, fake, k=3)
    density, coverage = density_coverage(real, fake, k=5)
    assert precision == pytest.approx(three["precision"], abs=1e-9)
    assert recall == pytest.approx(three["recall"], abs=1e-9)
    assert density == pytest.approx(five["density"], rel=1e-6)
    assert coverage == pytest.approx(five["coverage"], abs=1e-9)
    assert 0 < precision < 1 and 0 < recall < 1 and 0 < coverage < 1  # informative, not saturated


# ---- classifier-based scores ----

def test_classifier_score_of_confident_uniform_predictions_is_the_class_count():
    probs = np.eye(10)[np.arange(100) % 10]
    assert classifier_score(probs) == pytest.approx(10.0, rel=1e-6)


def test_classifier_score_of_identical_predictions_is_one():
    probs = np.tile([0.2, 0.5, 0.3], (50, 1))
    assert classifier_score(torch.tensor(probs)) == pytest.approx(1.0, rel=1e-9)


def test_class_histogram_kl_is_zero_for_matching_histograms_and_positive_otherwise():
    freq = np.array([10, 30, 60])
    labels = np.repeat([0, 1, 2], [1, 3, 6])
    probs = np.tile([0.1, 0.3, 0.6], (5, 1))
    assert class_histogram_kl(labels, freq) == pytest.approx(0.0, abs=1e-9)
    assert class_histogram_kl(probs, freq / freq.sum()) == pytest.approx(0.0, abs=1e-9)
    collapsed = np.zeros(10, dtype=int)
    assert class_histogram_kl(collapsed, freq) == pytest.approx(np.log(10), rel=1e-6)


def test_classes_covered_counts_classes_above_the_share():
    labels = np.array([0, 0, 0, 0, 1, 1, 3, 3, 3, 4])
    assert classes_covered(labels, n_classes=6) == 4
    assert classes_covered(torch.tensor(labels), n_classes=6, min_share=0.2) == 3
    assert classes_covered(labels, n_classes=6, min_share=0.35) == 1
    with pytest.raises(ValueError):
        classes_covered(labels, n_classes=4)
