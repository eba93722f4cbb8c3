"""Spread over seeds: the mean with its 95% t-interval, and whether two intervals overlap."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from mtdiff.report.vocabulary import is_missing


def mean_ci95(values: Iterable[float]) -> tuple[float, float, int, float]:
    """(mean, half-width of the 95% t-interval, n, sample std) of the finite values.

    ``ci95 = t(0.975, n - 1) * std / sqrt(n)`` with the ddof=1 standard deviation; NaN when
    n < 2 (one seed says nothing about the spread)."""
    v = np.asarray([x for x in values if not is_missing(x)], dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), 0, float("nan")
    mean = float(v.mean())
    if n < 2:
        return mean, float("nan"), n, float("nan")
    # lazy: scipy.stats adds ~60 MB of memory (measured) to every `mtdiff` command, all of which
    # import this package to build the CLI parser; only the report computes intervals
    import scipy.stats

    std = float(v.std(ddof=1))
    return mean, float(scipy.stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)), n, std


def intervals_overlap(m1, c1, m2, c2) -> bool | None:
    """Whether [m1 - c1, m1 + c1] and [m2 - c2, m2 + c2] overlap; None if a CI is NaN."""
    if any(is_missing(x) or not math.isfinite(x) for x in (m1, c1, m2, c2)):
        return None
    return (m1 - c1) <= (m2 + c2) and (m2 - c2) <= (m1 + c1)
