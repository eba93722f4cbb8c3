"""The inpainting table of a dataset (docs/method.md, "Inpainting"), ``inpainting.csv`` /
``inpainting.md``: one row per (method, model, mask, NFE), the means over seeds of PSNR, MSE and
FID on the same masks, with N, NFE, sampler, step and the method's settings (guidance scale,
resampling jumps, K of a posterior mean), and each row's standing against the nearest-neighbour
anchor of its mask (issue 11's floor: no method may be worse than that copy). Its metric names,
directions and the anchor are in :mod:`mtdiff.report.vocabulary`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtdiff.io import atomic_write_text

TABLE_METRICS = ("inpaint_psnr", "inpaint_mse", "inpaint_fid")
SETTINGS = ("guidance_scale", "resample_jumps", "posterior_samples")  # extra.<name>, when recorded
ANCHOR_METHOD = "nearest_neighbour"


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
        for field in ("n_generated", "nfe", "sampler", "checkpoint_step") + tuple(f"extra.{x}" for x in SETTINGS):
            vals = g[field].dropna().unique() if field in g.columns else []
            row[field.removeprefix("extra.")] = vals[0] if len(vals) == 1 else ("mixed" if len(vals) else None)
        rows.append(row)
    table = pd.DataFrame(rows)
    # the floor: PSNR above and MSE below the anchor's on the same mask
    anchor = table[table["method"] == ANCHOR_METHOD].set_index("mask")
    table["psnr_minus_anchor"] = table["inpaint_psnr"] - table["mask"].map(anchor["inpaint_psnr"])
    table["beats_anchor"] = [
        None if pd.isna(d) or m == ANCHOR_METHOD else bool(d > 0 and mse < anchor.loc[k, "inpaint_mse"])
        for d, m, mse, k in zip(table["psnr_minus_anchor"], table["method"], table["inpaint_mse"], table["mask"])]
    return table


def write_inpainting_tables(records: pd.DataFrame, out_dir) -> dict[str, Path]:
    """``inpainting.csv`` and ``inpainting.md`` when there are inpainting records; else nothing."""
    table = inpainting_table(records)
    if table.empty:
        return {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / "inpainting.csv", out_dir / "inpainting.md"
    atomic_write_text(csv, table.to_csv(index=False))
    note = ("PSNR/MSE over the hidden pixels; `*_posterior_mean` rows average K completions (the MMSE "
            "estimate these metrics reward; K x the NFE, no FID) and stand next to the per-sample rows, never "
            "for them. beats_anchor: PSNR above and MSE below the nearest-training-image copy on the same mask.")
    atomic_write_text(md, "# Inpainting (hidden region; same seeded masks for every method)\n\n" + note + "\n\n"
                      + table.to_markdown(index=False, floatfmt=".4g") + "\n")
    return {csv.name: csv, md.name: md}
