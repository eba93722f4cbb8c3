"""Has each diffusion model's training converged? The check of design.md section 9 on the
metric-vs-training-step curve records (``extra.curve == "steps"``, written by
``mtdiff evaluate curve --what steps``): converged when the mean over seeds of
``FID_last - FID_second_last`` is smaller in size than the half-width of the 95% t-interval over
seeds of ``FID_last`` (:func:`mtdiff.report.stats.convergence_check`)."""

from __future__ import annotations

import pandas as pd

from mtdiff.report.headline import column_sort_key, default_headline_nfe, with_column_keys
from mtdiff.report.stats import convergence_check
from mtdiff.report.vocabulary import ANCHORS, is_missing

# The curve metric judged: FID, the metric the budgets were chosen on (design.md section 9).
CONVERGENCE_METRIC = "fid"


def curve_at_steps(records: pd.DataFrame, *, headline_nfe: int | None = None) -> pd.DataFrame:
    """One value per (model, seed, column, checkpoint_step) of the training-step curves of
    :data:`CONVERGENCE_METRIC`: at the headline NFE, the most common N of each column (FID is
    biased in N), EMA weights first, then the latest record."""
    df = with_column_keys(records)
    if df.empty:
        return df
    nfe = headline_nfe if headline_nfe is not None else default_headline_nfe(df)
    df = df[(df["metric"] == CONVERGENCE_METRIC) & (df["extra.curve"] == "steps") & df["checkpoint_step"].notna()
            & ~df["model"].isin(ANCHORS)]
    if nfe is not None:
        df = df[df["nfe"].isna() | (df["nfe"] == nfe)]
    parts = []
    for _, g in df.groupby("column", sort=False):
        if g["n_generated"].notna().any():
            g = g[g["n_generated"] == g["n_generated"].mode().iloc[0]]
        parts.append(g)
    if not parts:
        return df.iloc[0:0]
    df = pd.concat(parts).copy()
    df["_ema"] = df["ema"].map(lambda v: v is True or v == 1.0)
    return df.sort_values(["_ema", "_order"]).groupby(["model", "seed", "column", "checkpoint_step"]).tail(1)


def convergence_table(records: pd.DataFrame, *, headline_nfe: int | None = None) -> list[dict]:
    """Per (model, curve column): ``{"model", "column", "steps": [second_last, last], "n",
    "change", "ci95", "converged" (True/False/None), "reason"}``, in column order. The last two
    checkpoints are the model's two largest curve steps; a seed lacking either (an unfinished
    run) is left out and named in ``reason``."""
    pts = curve_at_steps(records, headline_nfe=headline_nfe)
    out = []
    if pts.empty:
        return out
    for (model, col), g in sorted(pts.groupby(["model", "column"]), key=lambda kv: column_sort_key(kv[0][1])):
        by_seed = {int(s): gs.set_index("checkpoint_step")["value"] for s, gs in g.groupby("seed") if not is_missing(s)}
        steps = sorted(g["checkpoint_step"].unique())
        if len(steps) < 2:
            out.append({"model": model, "column": col, "steps": [int(x) for x in steps], "n": len(by_seed),
                        "seeds": sorted(by_seed), "change": float("nan"), "ci95": float("nan"), "converged": None,
                        "reason": "fewer than two checkpoints on the curve"})
            continue
        prev, last = steps[-2], steps[-1]
        seeds = [s for s, v in by_seed.items() if prev in v.index and last in v.index]
        res = convergence_check({s: by_seed[s][last] for s in seeds}, {s: by_seed[s][prev] for s in seeds})
        left = sorted(set(by_seed) - set(seeds))
        if left:
            res["reason"] = "; ".join(x for x in (res["reason"], f"seed(s) {', '.join(map(str, left))} lack a "
                                                  f"checkpoint: left out") if x)
        out.append({"model": model, "column": col, "steps": [int(prev), int(last)], **res})
    return out


def format_convergence(c: dict, decimals: int = 2) -> str:
    """``"yes: Δ -0.12 within ±0.40 (n=3)"``, ``"no: Δ -0.60 outside ±0.40 (n=3)"`` or
    ``"undefined (1 seed: no seed-to-seed CI)"`` (no ``|``: the text goes into Markdown tables)."""
    if c["converged"] is None:
        return f"undefined ({c['reason']})"
    where = "within" if c["converged"] else "outside"
    return (f"{'yes' if c['converged'] else 'no'}: Δ {c['change'] + 0.0:+.{decimals}f} {where} "
            f"±{c['ci95']:.{decimals}f} (n={c['n']})")
