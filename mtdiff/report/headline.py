"""Choosing the headline value of each (model, seed, column) and its statistics over seeds.

Protocol (see :mod:`mtdiff.report`): the record at the largest ``checkpoint_step`` and the
headline NFE; at the same step a main evaluation beats a curve point, EMA beats raw weights, a
larger ``n_generated`` beats a smaller one, and a later record beats an earlier one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtdiff.guidance_sweep import SWEEP_METRICS
from mtdiff.report.stats import mean_ci95
from mtdiff.report.vocabulary import (
    METRIC_ORDER, TASK_METRICS, ReportError, column_key, is_missing, metric_family, parse_column_key,
)


def with_column_keys(records: pd.DataFrame) -> pd.DataFrame:
    df = records.copy()
    for c in ("extra.condition", "extra.procedure", "extra.curve", "extractor", "nfe", "checkpoint_step",
              "n_generated", "ema", "sampler", "precision", "device"):
        if c not in df.columns:
            df[c] = None
    df = df[df["value"].notna()]
    df["column"] = [column_key(m, e, c, p) for m, e, c, p in
                    zip(df["metric"], df["extractor"], df["extra.condition"], df["extra.procedure"])]
    df["_order"] = np.arange(len(df))
    df["_is_curve"] = df["extra.curve"].map(lambda v: not is_missing(v))
    return df


def default_headline_nfe(records: pd.DataFrame) -> int | None:
    """The most common NFE of the main (non-curve) records (ties: the larger); None if no
    record has an NFE."""
    df = with_column_keys(records)
    nfe = df.loc[~df["_is_curve"], "nfe"].dropna()
    if nfe.empty:
        nfe = df["nfe"].dropna()
    if nfe.empty:
        return None
    counts = nfe.astype(int).value_counts()
    top = counts[counts == counts.max()].index
    return int(max(top))


def headline_records(records: pd.DataFrame, *, headline_nfe: int | None = None, notes: list | None = None) -> pd.DataFrame:
    """One record per (model, seed, column): the headline value (see the module docstring).

    Adds a ``column`` field. ``notes`` (a list) collects protocol remarks (dropped NFEs, ...)."""
    notes = notes if notes is not None else []
    df = with_column_keys(records)
    # guidance-sweep records (one per scale) have their own table and plot (report/guidance.csv,
    # mtdiff.report.guidance); in the headline they would stand for an arbitrary scale
    df = df[~df["metric"].isin(SWEEP_METRICS)]
    if df.empty:
        return df
    nfe = headline_nfe if headline_nfe is not None else default_headline_nfe(df)
    has_nfe = df["nfe"].notna()
    at_nfe = ~has_nfe | (df["nfe"] == nfe) if nfe is not None else pd.Series(True, index=df.index)
    # models that have a column only at other NFEs are left out of that column (not comparable)
    for (model, col), g in df[has_nfe].groupby(["model", "column"]):
        if not (g["nfe"] == nfe).any():
            others = ", ".join(str(int(x)) for x in sorted(g["nfe"].unique()))
            notes.append(f"{model}: {col} has no record at the headline nfe={nfe} (only nfe={others}); left out")
    df = df[at_nfe]
    # one sampler per column (the most common) among the records that have one
    keep = pd.Series(True, index=df.index)
    for col, g in df[df["sampler"].notna()].groupby("column"):
        samplers = g["sampler"].value_counts()
        if len(samplers) > 1:
            main = samplers.index[0]
            keep[g.index[g["sampler"] != main]] = False
            notes.append(f"{col}: records of sampler(s) {', '.join(s for s in samplers.index[1:])} left out; "
                         f"headline sampler {main}")
    df = df[keep].copy()
    df["_step"] = df["checkpoint_step"].fillna(-1).astype(float)
    df["_main"] = ~df["_is_curve"]
    df["_ema"] = df["ema"].map(lambda v: v is True or v == 1.0)
    df["_n"] = df["n_generated"].fillna(-1).astype(float)
    df["_seed"] = df["seed"].fillna(-1)
    df = df.sort_values(["_step", "_main", "_ema", "_n", "_order"])
    head = df.groupby(["model", "_seed", "column"], sort=False, dropna=False).tail(1)
    head = head.drop(columns=["_step", "_main", "_ema", "_n", "_seed"]).sort_values("_order")
    head.attrs["headline_nfe"] = nfe
    return head.reset_index(drop=True)


def unique_or_mixed(s: pd.Series):
    vals = [v for v in s.tolist() if not is_missing(v)]
    if not vals:
        return None
    u = sorted(set(vals), key=str)
    if len(u) == 1:
        v = u[0]
        return int(v) if isinstance(v, float) and v.is_integer() else v
    return "mixed"


def headline_stats(head: pd.DataFrame) -> pd.DataFrame:
    """Long table: one row per (model, column) with n, mean, std, ci95, the seeds' values and
    the protocol fields (N generated, reference split, NFE, step, extractor)."""
    rows = []
    for (model, col), g in head.groupby(["model", "column"], sort=False):
        g = g.sort_values("seed")
        mean, ci, n, std = mean_ci95(g["value"])
        metric, _ = parse_column_key(col)
        rows.append({
            "model": model, "column": col, "metric": metric, "family": metric_family(col), "n": n,
            "mean": mean, "ci95": ci, "std": std, "values": [float(v) for v in g["value"]],
            "seeds": [int(s) for s in g["seed"]], "extractor": unique_or_mixed(g["extractor"]),
            "condition": unique_or_mixed(g["extra.condition"]), "procedure": unique_or_mixed(g["extra.procedure"]),
            "n_generated": unique_or_mixed(g["n_generated"]), "n_reference": unique_or_mixed(g["n_reference"]),
            "reference_split": unique_or_mixed(g["reference_split"]), "nfe": unique_or_mixed(g["nfe"]),
            "sampler": unique_or_mixed(g["sampler"]), "checkpoint_step": unique_or_mixed(g["checkpoint_step"]),
            "precision": unique_or_mixed(g["precision"]), "device": unique_or_mixed(g["device"]),
        })
    return pd.DataFrame(rows)


def refuse_mixed_precision(head: pd.DataFrame) -> None:
    """Raise :class:`ReportError` if one column (a task metric: any of its procedures) holds
    numbers computed at different numeric precisions (fp32 vs bf16 autocast flipped a model ranking, design.md section 9), as columns
    never mix feature extractors. Records without a precision (anchors, older runs) are not
    counted."""
    if "precision" not in head.columns:
        return
    stamped = head[[not is_missing(v) for v in head["precision"]]].copy()
    # by family: the procedures of a task metric share a column of the per-task tables
    stamped["_family"] = stamped["column"].map(metric_family)
    for col, g in stamped.groupby("_family", sort=False):
        if g["precision"].nunique() > 1:
            who = ", ".join(f"{m}={'/'.join(sorted(set(map(str, gm['precision']))))}"
                            for m, gm in g.groupby("model", sort=False))
            raise ReportError(f"column {col} mixes numeric precisions ({who}); numbers of different precisions "
                              f"are not comparable: rerun the models at one train.precision (e.g. fp32) or "
                              f"report them from separate results roots")


def column_sort_key(col: str):
    """Generation metrics first, grouped by extractor (the domain extractor first), then the
    metrics judged without an extractor (task metrics, conditional accuracy, coherence)."""
    metric, quals = parse_column_key(col)
    m = METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER)
    judged = metric in TASK_METRICS or metric in ("cond_accuracy", "coherence_label", "coherence_miou")
    ext = "" if judged or not quals else ("0" if quals[0] == "mtdiff-domain" else "1" + quals[0])
    return (int(judged), ext, m, metric, ",".join(quals))
