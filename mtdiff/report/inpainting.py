"""The inpainting table of a dataset (docs/method.md, "Inpainting"), ``inpainting.csv`` /
``inpainting.md``: one row per (method, model, mask), the means over seeds of PSNR, MSE and FID
on the same masks, with N, NFE, sampler and step. Its metric names, directions and the
nearest-neighbour anchor are in :mod:`mtdiff.report.vocabulary`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtdiff.io import atomic_write_text

TABLE_METRICS = ("inpaint_psnr", "inpaint_mse", "inpaint_fid")


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
    atomic_write_text(csv, table.to_csv(index=False))
    atomic_write_text(md, "# Inpainting (hidden region; same seeded masks for every method)\n\n"
                      + table.to_markdown(index=False, floatfmt=".4g") + "\n")
    return {csv.name: csv, md.name: md}
