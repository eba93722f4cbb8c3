"""Report pieces for inpainting and image + representation (docs/method.md, "Inpainting",
"Representation"): the vocabulary the comparison table needs for their metrics, and one
table per dataset, ``inpainting.csv`` / ``inpainting.md``: one row per (method, model, mask),
the means over seeds of PSNR, MSE and FID on the same masks, with N, NFE, sampler and step.

mtdiff/report.py calls :func:`extend_vocabulary` once and :func:`write_inpainting_tables`
from ``make_report``; everything else about these settings lives here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

NEW_ANCHORS = ("nearest_neighbour",)
DESCRIPTIONS = {
    "nearest_neighbour": "anchor: nearest training image copied into the hole",
    "mt_masked+repaint": "mt_masked with RePaint replacement (ours)",
    "mt_repr": "mt_repr (MT: image + representation)",
}
LOWER = {"inpaint_mse", "inpaint_fid", "inpaint_kid_mean"}
HIGHER = {"inpaint_psnr", "repr_cosine"}
NAMES = {"inpaint_mse": "inpainting MSE (hidden)", "inpaint_psnr": "inpainting PSNR (hidden, dB)",
         "inpaint_fid": "inpainting FID", "inpaint_kid_mean": "inpainting KID",
         "repr_cosine": "representation cosine", "repr_cosine_shuffled": "representation cosine (shuffled pairs)"}
TABLE_METRICS = ("inpaint_psnr", "inpaint_mse", "inpaint_fid")


def extend_vocabulary(anchors: tuple, descriptions: dict, lower: set, higher: set, names: dict) -> tuple:
    """Add this module's models and metrics to the report's vocabulary; returns the anchors."""
    descriptions.update(DESCRIPTIONS)
    lower.update(LOWER)
    higher.update(HIGHER)
    names.update(NAMES)
    return tuple(anchors) + tuple(a for a in NEW_ANCHORS if a not in anchors)


def inpainting_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, model, mask, NFE): mean and number of seeds of each metric of
    :data:`TABLE_METRICS`, with the protocol (N, NFE, sampler, checkpoint step)."""
    if records is None or records.empty or "extra.method" not in records.columns:
        return pd.DataFrame()
    df = records[records["metric"].isin(TABLE_METRICS) & records["extra.method"].notna()].copy()
    if df.empty:
        return df
    keys = ["extra.method", "model", "extra.condition", "nfe"]  # RePaint with resampling: its own row
    rows = []
    for key, g in df.groupby(keys, sort=False, dropna=False):
        row = dict(zip(("method", "model", "mask"), key[:3]))
        for metric in TABLE_METRICS:
            v = g.loc[g["metric"] == metric, "value"].dropna()
            row[metric] = float(v.mean()) if len(v) else float("nan")
        row["seeds"] = int(g["seed"].nunique())
        for field in ("n_generated", "nfe", "sampler", "checkpoint_step"):
            vals = g[field].dropna().unique()
            row[field] = vals[0] if len(vals) == 1 else ("mixed" if len(vals) else None)
        rows.append(row)
    return pd.DataFrame(rows)


def write_inpainting_tables(records: pd.DataFrame, out_dir) -> dict[str, Path]:
    """``inpainting.csv`` and ``inpainting.md`` when there are inpainting records; else nothing."""
    table = inpainting_table(records)
    if table.empty:
        return {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / "inpainting.csv", out_dir / "inpainting.md"
    table.to_csv(csv, index=False)
    md.write_text("# Inpainting (hidden region; same seeded masks for every method)\n\n"
                  + table.to_markdown(index=False, floatfmt=".4g") + "\n")
    return {csv.name: csv, md.name: md}
