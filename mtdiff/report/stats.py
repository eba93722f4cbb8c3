"""Statistics over seeds: the mean with its 95% t-interval, whether two intervals overlap, the
paired MT-vs-single-task difference with its verdict, and the convergence test (design.md section 9)."""

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


# Verdict words (design.md section 9): a direction only when the 95% interval of the paired
# differences excludes 0.
BETTER, WORSE, NO_DIFFERENCE, UNDEFINED = "better", "worse", "no detectable difference at 95%", "undefined"


def _finite_by_seed(values: dict) -> dict[int, float]:
    return {int(s): float(v) for s, v in values.items() if not is_missing(v) and math.isfinite(float(v))}


def paired_difference(mt: dict, base: dict, direction: str | None) -> dict:
    """Paired comparison of two models over seeds: ``mt`` and ``base`` map seed -> value.

    Seeds are matched (seed k of every model shares data order and noise, design.md section 9);
    a seed present for one model only is left out and listed in ``unpaired``. Differences are
    ``mt - base``; ``mean`` and the 95% t-interval ``[low, high]`` are those of
    ``scipy.stats.ttest_rel(mt, base)`` (a one-sample t-test of the differences), ``p`` its
    two-sided p-value (None when every difference is equal, where the t statistic is undefined).
    ``verdict``: ``better``/``worse`` only when the interval excludes 0, with the direction from
    ``direction`` (``"lower"`` or ``"higher"`` is better); otherwise ``no detectable difference at
    95%``; ``undefined`` (``reason`` says why) with fewer than two paired seeds or an unranked
    metric."""
    a, b = _finite_by_seed(mt), _finite_by_seed(base)
    seeds = sorted(set(a) & set(b))
    out = {"n": len(seeds), "seeds": seeds, "unpaired": {"mt": sorted(set(a) - set(b)), "base": sorted(set(b) - set(a))},
           "differences": [a[s] - b[s] for s in seeds], "mean": float("nan"), "low": float("nan"),
           "high": float("nan"), "p": None, "verdict": UNDEFINED, "reason": ""}
    if seeds:
        out["mean"] = float(np.mean(out["differences"]))
    if len(seeds) < 2:
        out["reason"] = (f"{len(seeds)} paired seed{'s' if len(seeds) != 1 else ''}: a confidence interval needs "
                         f"at least 2")
        return out
    import warnings

    import scipy.stats

    with warnings.catch_warnings():  # equal differences: scipy warns about precision loss, p is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        res = scipy.stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
        ci = res.confidence_interval(0.95)
    out["low"], out["high"] = float(ci.low), float(ci.high)
    out["p"] = float(res.pvalue) if math.isfinite(res.pvalue) else None
    if direction not in ("lower", "higher"):
        out["reason"] = "the metric is not ranked (neither lower nor higher is better)"
        return out
    if out["low"] > 0 or out["high"] < 0:
        mt_larger = out["low"] > 0
        out["verdict"] = BETTER if mt_larger == (direction == "higher") else WORSE
    else:
        out["verdict"] = NO_DIFFERENCE
    return out


def convergence_check(last: dict, second_last: dict) -> dict:
    """Whether a training curve has flattened (design.md section 9: "the last two checkpoints'
    metric differ by less than the seed-to-seed CI").

    ``last`` / ``second_last`` map seed -> metric at the last / second-to-last checkpoint.
    ``change`` is the mean over seeds of ``last - second_last``, ``ci95`` the half-width of the
    95% t-interval of ``last`` over seeds; ``converged`` is ``|change| < ci95`` (None with fewer
    than two seeds, ``reason`` says why)."""
    a, b = _finite_by_seed(last), _finite_by_seed(second_last)
    seeds = sorted(set(a) & set(b))
    change = float(np.mean([a[s] - b[s] for s in seeds])) if seeds else float("nan")
    _, ci, n, _ = mean_ci95(a.values())
    out = {"n": n, "seeds": sorted(a), "change": change, "ci95": ci, "converged": None, "reason": ""}
    if n < 2 or not seeds:
        out["reason"] = (f"{n} seed{'s' if n != 1 else ''}: no seed-to-seed CI" if n < 2
                         else "no seed has both of the last two checkpoints")
        return out
    out["converged"] = bool(abs(change) < ci)
    return out
