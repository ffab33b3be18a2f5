"""Sample-quality metrics computed from feature arrays (see `functions`)."""

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
)

__all__ = [
    "class_histogram_kl",
    "classes_covered",
    "classifier_score",
    "density_coverage",
    "feature_stats",
    "fid",
    "fid_from_stats",
    "kid",
    "precision_recall",
]
