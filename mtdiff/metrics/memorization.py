"""Memorization check: is a generated set closer to the training images than real data is?

For each generated sample, the L2 distance to its nearest training image; the same for every
test image (real data the model never saw). The threshold is the ``percentile``-th percentile
(1 by default) of the test images' nearest-training distances, and the memorized fraction is
the share of generated samples strictly closer to a training image than that threshold
(docs/method.md, "Memorization"):

    d(x) = min_j ||x - t_j||_2,   tau = P_p({d(y) : y in test}),   f = |{x : d(x) < tau}| / N.

Anchors: the test split itself scores about p% by construction (it is what tau is calibrated on),
and a "copier" returning training images scores 100% (its distances are 0 up to rounding).
A second, threshold-free number: the ratio of median nearest-training distances (samples / test);
well below 1 means the samples sit closer to the training set than real data does.

Pure functions on arrays (pixels or extractor features, one row per image); nothing here reads
files or models. Exact nearest neighbours by scikit-learn (brute force, float64).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from sklearn.neighbors import NearestNeighbors

from mtdiff.errors import ConfigError

DEFAULT_PERCENTILE = 1.0


def as_vectors(x, name: str = "images") -> np.ndarray:
    """Rows of float64: uint8 images (N, C, H, W) are mapped to the models' [-1, 1] range
    (x / 127.5 - 1), float images are taken as they are (already [-1, 1]), any (N, ...) array is
    flattened per row (extractor features are (N, D) already)."""
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if a.ndim < 2 or len(a) == 0:
        raise ConfigError(f"{name} of shape {a.shape} is not accepted; give a non-empty (N, ...) array, one row per image")
    if a.dtype == np.uint8:
        a = a.astype(np.float64) / 127.5 - 1.0
    elif not np.issubdtype(a.dtype, np.floating):
        raise ConfigError(f"{name} has dtype {a.dtype}; accepted: uint8 images in [0, 255] or floats")
    a = a.reshape(len(a), -1).astype(np.float64)
    if not np.isfinite(a).all():
        raise ConfigError(f"{name} contains NaN/inf values")
    return a


def nearest_training(queries, train, *, name: str = "queries") -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query row's nearest training row (exact L2)."""
    q, t = as_vectors(queries, name), as_vectors(train, "training images")
    if q.shape[1] != t.shape[1]:
        raise ConfigError(f"{name} have {q.shape[1]} values per row but the training images {t.shape[1]}; "
                          f"compare sets of the same image size or the same extractor")
    # brute force: exact, and with float64 rows sklearn's chunked ||a||^2 + ||b||^2 - 2ab is
    # accurate to ~1e-7 here, so an exact copy comes out at (essentially) distance 0
    nn = NearestNeighbors(n_neighbors=1, algorithm="brute", metric="euclidean").fit(t)
    dist, idx = nn.kneighbors(q)
    return dist[:, 0], idx[:, 0]


def memorization_threshold(test_distances, percentile: float = DEFAULT_PERCENTILE) -> float:
    """tau: the ``percentile``-th percentile (0 < p < 100, numpy's linear interpolation) of the
    test images' nearest-training distances."""
    d = np.asarray(test_distances, dtype=np.float64)
    if not 0 < percentile < 100:
        raise ConfigError(f"percentile={percentile!r} is not accepted; accepted: a number strictly between 0 and 100")
    if d.ndim != 1 or len(d) < 2:
        raise ConfigError(f"test distances of shape {d.shape} are not accepted; give at least 2 (one per test image)")
    return float(np.percentile(d, percentile))


def memorized_fraction(distances, threshold: float) -> float:
    """Share of samples strictly closer to a training image than ``threshold``."""
    d = np.asarray(distances, dtype=np.float64)
    if d.size == 0:
        raise ConfigError("no sample distances given; the memorized fraction needs at least one sample")
    return float(np.mean(d < threshold))


def memorization(samples, train, test, *, percentile: float = DEFAULT_PERCENTILE,
                 test_distances=None) -> dict:
    """The check for one generated set in one space (pixels or features; rows as in
    :func:`as_vectors`). ``test_distances``: the test images' nearest-training distances when
    already known (several sets against the same split), else computed here.

    Returns ``memorized_fraction``, ``threshold``, ``percentile``, ``median_distance`` (samples),
    ``test_median_distance``, ``nn_distance_ratio`` (median samples / median test), ``binomial_p``
    (one-sided: a fraction this high or higher if samples were as far from the training set as
    test images are, each below tau with probability p/100; it treats tau as exact, though it is
    estimated from ``n_test`` images, so read it as a guide), the counts, and per sample
    ``distances`` and ``nearest`` (index of the nearest training image)."""
    if test_distances is None:
        test_distances, _ = nearest_training(test, train, name="test images")
    test_distances = np.asarray(test_distances, dtype=np.float64)
    tau = memorization_threshold(test_distances, percentile)
    dist, idx = nearest_training(samples, train, name="samples")
    below = int(np.sum(dist < tau))
    test_median = float(np.median(test_distances))
    return {
        "memorized_fraction": below / len(dist),
        "threshold": tau,
        "percentile": float(percentile),
        "median_distance": float(np.median(dist)),
        "test_median_distance": test_median,
        "nn_distance_ratio": float(np.median(dist)) / test_median if test_median > 0 else float("nan"),
        "binomial_p": float(binomtest(below, len(dist), percentile / 100, alternative="greater").pvalue),
        "n_samples": int(len(dist)),
        "n_test": int(len(test_distances)),
        "n_train": int(len(train)),
        "distances": dist,
        "nearest": idx,
    }


def closest_pairs(distances, k: int) -> np.ndarray:
    """Indices of the ``k`` samples closest to their nearest training image, closest first
    (ties by index)."""
    d = np.asarray(distances, dtype=np.float64)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k={k!r} is not accepted; accepted: a positive number of pairs")
    return np.argsort(d, kind="stable")[: min(int(k), len(d))]


def copier_images(train, n: int, seed: int = 0):
    """The "copier" anchor: ``n`` training images drawn with a seeded generator (without
    replacement when the split has that many, else with). Every one has a nearest-training
    distance of 0, so its memorized fraction is 100% by construction whenever tau > 0."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n={n!r} is not accepted; accepted: a positive number of images")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train), size=int(n), replace=int(n) > len(train))
    return train[np.sort(idx)], np.sort(idx)


__all__ = ["DEFAULT_PERCENTILE", "as_vectors", "closest_pairs", "copier_images", "memorization",
           "memorization_threshold", "memorized_fraction", "nearest_training"]
