"""The report's four figures, each as PNG and SVG: training curves (metric vs images seen),
metric vs NFE, headline bars with 95% CIs, and the training losses. Every plot without data is
written as a placeholder, so the report's file list is fixed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import EngFormatter, FixedLocator, NullLocator, ScalarFormatter

from mtdiff.errors import ConfigError
from mtdiff.report.figures import (
    ANCHOR_LINE_STYLE, draw_anchor_lines, int_or_none, legend_below, log_scale_if_wide, mean_ci_over_seeds, model_style, new_figure,
    panel_title, placeholder_figure, save_figure, seed_range, single_value, suptitle_wrapped, plot_style,
)
from mtdiff.report.findings import table_entries, who
from mtdiff.report.headline import column_sort_key, default_headline_nfe, unique_or_mixed, with_column_keys
from mtdiff.report.tables import decimals_for, table_stats
from mtdiff.report.vocabulary import (
    ANCHORS, METRIC_NAMES, TASK_METRICS, is_missing, metric_direction, model_kind, model_label, model_rank,
    parse_column_key,
)


def _curve_rows(records: pd.DataFrame, headline_nfe) -> tuple[pd.DataFrame, int | None]:
    df = with_column_keys(records)
    nfe = headline_nfe if headline_nfe is not None else default_headline_nfe(df)
    return df, nfe


def images_per_step(summaries: pd.DataFrame | None) -> dict:
    out = {}
    if summaries is None or not len(summaries):
        return out
    for _, r in summaries.iterrows():
        try:
            steps, seen = float(r["steps"]), float(r["images_seen"])
        except (TypeError, ValueError):
            continue
        if steps > 0 and math.isfinite(seen):
            out[(r["model"], r["seed"])] = seen / steps
    return out


def curve_points(g: pd.DataFrame, x: str) -> tuple[pd.DataFrame, float | None]:
    """One curve per (model, seed) along ``x``: only the most common N (n_generated), and at
    each x the preferred duplicate (EMA first, then the latest record), as for headlines."""
    g = g.copy()
    n_main = None
    if g["n_generated"].notna().any():
        n_main = g["n_generated"].mode().iloc[0]
        g = g[g["n_generated"].isna() | (g["n_generated"] == n_main)].copy()
    g["_ema"] = g["ema"].map(lambda v: v is True)
    return g.sort_values(["_ema", "_order"]).groupby(["model", "seed", x]).tail(1), n_main


def _columns_along(pts: pd.DataFrame, along: str) -> list[str]:
    """The ranked columns in which some (model, seed) has two or more values of ``along``: the
    panels of a curve plot, in table order."""
    cols = []
    for col, g in pts.groupby("column"):
        if metric_direction(parse_column_key(col)[0]) is not None and \
                (g.groupby(["model", "seed"])[along].nunique() >= 2).any():
            cols.append(col)
    return sorted(cols, key=column_sort_key)


def plot_training_curves(records: pd.DataFrame, out_dir, *, summaries: pd.DataFrame | None = None,
                         x: str = "images_seen", headline_nfe: int | None = None, dataset: str | None = None,
                         stem: str = "training_curves", placeholder: bool = True) -> list[Path]:
    """Metric vs training progress (the training-efficiency curve): one panel per column that
    has at least two checkpoint steps, one line per model (single-task solid, MT dashed),
    mean ± 95% CI band over seeds, anchors as horizontal lines. ``x``: ``"images_seen"``
    (from ``extra.images_seen`` or summary images/step; falls back to steps) or
    ``"checkpoint_step"``. Returns the PNG and SVG paths ([] if no curve and not ``placeholder``)."""
    if x not in ("images_seen", "checkpoint_step"):
        raise ConfigError(f"x={x!r} is not known; accepted: images_seen, checkpoint_step")
    df, nfe = _curve_rows(records, headline_nfe)
    dataset = dataset or single_value(df.get("dataset"))
    title = f"{dataset or ''}: metric vs training".strip(": ")
    pts = df[df["checkpoint_step"].notna() & ~df["model"].isin(ANCHORS)]
    if nfe is not None:
        pts = pts[pts["nfe"].isna() | (pts["nfe"] == nfe)]
    cols = _columns_along(pts, "checkpoint_step")
    if not cols:
        return placeholder_figure(out_dir, stem, title, "no records at two or more checkpoint steps\n"
                            "(run the curve evaluation: mtdiff evaluate curve --what steps)") if placeholder else []
    ips = images_per_step(summaries)
    anchors = df[df["model"].isin(ANCHORS)]
    use_images = x == "images_seen"
    with plot_style():
        fig, axes = new_figure(len(cols), 2, 5.4, 3.7, extra_h=0.5)
        handles: dict[str, object] = {}
        nseeds = set()
        for ax, col in zip(axes, cols):
            g, n_main = curve_points(pts[pts["column"] == col], "checkpoint_step")
            xs = []
            for _, r in g.iterrows():
                v = None
                if use_images:
                    v = r.get("extra.images_seen") if "extra.images_seen" in g.columns else None
                    if is_missing(v):
                        k = ips.get((r["model"], r["seed"]))
                        v = r["checkpoint_step"] * k if k else None
                xs.append(v)
            if use_images and all(v is not None and not is_missing(v) for v in xs):
                g["_x"] = np.asarray(xs, dtype=float)
                xlabel = "training images seen"
            else:
                g["_x"] = g["checkpoint_step"].astype(float)
                xlabel = "training step" + (" (images seen unknown)" if use_images else "")
            allv = list(g["value"])
            direction = metric_direction(parse_column_key(col)[0])
            for model in sorted(g["model"].unique(), key=lambda m: (model_rank(m), m)):
                gm = g[g["model"] == model]
                agg = mean_ci_over_seeds(gm, ["checkpoint_step"])
                agg["_x"] = gm.groupby("checkpoint_step")["_x"].mean().reindex(agg["checkpoint_step"]).to_numpy()
                agg = agg.sort_values("_x")
                st = model_style(model)
                n = gm["seed"].nunique()
                nseeds.add(n)
                (line,) = ax.plot(agg["_x"], agg["mean"], label=model, markersize=4, linewidth=1.8, **st)
                ax.fill_between(agg["_x"], agg["mean"] - agg["ci95"], agg["mean"] + agg["ci95"],
                                color=st["color"], alpha=0.15, linewidth=0)
                handles.setdefault(f"{model} ({model_kind(model)}, n={n})", line)
                allv += list(agg["mean"] - agg["ci95"]) + list(agg["mean"] + agg["ci95"])
            allv += draw_anchor_lines(ax, anchors, col, handles, orientation="h")
            log_scale_if_wide(ax, allv)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(METRIC_NAMES.get(parse_column_key(col)[0], parse_column_key(col)[0]))
            ax.set_title(panel_title(col, int_or_none(n_main), direction))
            if use_images and xlabel == "training images seen":
                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        legend_below(fig, list(handles.values()), list(handles.keys()))
        suptitle_wrapped(fig, f"{title} (nfe={nfe}; mean ± 95% CI over {seed_range(nseeds)} seeds)")
        return save_figure(fig, out_dir, stem)


def plot_metric_vs_nfe(records: pd.DataFrame, out_dir, *, dataset: str | None = None, stem: str = "metric_vs_nfe",
                       placeholder: bool = True) -> list[Path]:
    """Metric vs number of function evaluations at each (model, seed)'s last checkpoint: one
    panel per column with two or more NFE values, mean ± 95% CI over seeds, anchors as lines."""
    df = with_column_keys(records)
    dataset = dataset or single_value(df.get("dataset"))
    title = f"{dataset or ''}: metric vs NFE".strip(": ")
    pts = df[df["nfe"].notna() & ~df["model"].isin(ANCHORS)].copy()
    if len(pts):
        pts["_step"] = pts["checkpoint_step"].fillna(-1)
        last = pts.groupby(["model", "seed", "column"])["_step"].transform("max")
        pts = pts[pts["_step"] == last]
    cols = _columns_along(pts, "nfe")
    if not cols:
        return placeholder_figure(out_dir, stem, title, "no records at two or more NFE values\n"
                            "(run the curve evaluation: mtdiff evaluate curve --what nfe)") if placeholder else []
    anchors = df[df["model"].isin(ANCHORS)]
    with plot_style():
        fig, axes = new_figure(len(cols), 2, 5.4, 3.7, extra_h=0.5)
        handles: dict[str, object] = {}
        nseeds = set()
        for ax, col in zip(axes, cols):
            g, n_main = curve_points(pts[pts["column"] == col], "nfe")
            allv = list(g["value"])
            direction = metric_direction(parse_column_key(col)[0])
            for model in sorted(g["model"].unique(), key=lambda m: (model_rank(m), m)):
                gm = g[g["model"] == model]
                agg = mean_ci_over_seeds(gm, ["nfe"]).sort_values("nfe")
                st = model_style(model)
                n = gm["seed"].nunique()
                nseeds.add(n)
                (line,) = ax.plot(agg["nfe"], agg["mean"], markersize=4, linewidth=1.8, **st)
                ax.fill_between(agg["nfe"], agg["mean"] - agg["ci95"], agg["mean"] + agg["ci95"], color=st["color"],
                                alpha=0.15, linewidth=0)
                handles.setdefault(f"{model} ({model_kind(model)}, n={n})", line)
                allv += list(agg["mean"] - agg["ci95"]) + list(agg["mean"] + agg["ci95"])
            allv += draw_anchor_lines(ax, anchors, col, handles)
            log_scale_if_wide(ax, allv)
            ticks = sorted(int(v) for v in g["nfe"].unique())
            if ticks[-1] / max(ticks[0], 1) > 4:
                ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.set_xlabel("NFE (network evaluations per sample)")
            ax.set_ylabel(METRIC_NAMES.get(parse_column_key(col)[0], parse_column_key(col)[0]))
            ax.set_title(panel_title(col, int_or_none(n_main), direction))
        legend_below(fig, list(handles.values()), list(handles.keys()))
        suptitle_wrapped(fig, f"{title} (last checkpoint; mean ± 95% CI over {seed_range(nseeds)} seeds)")
        return save_figure(fig, out_dir, stem)


def plot_bars(table: pd.DataFrame, out_dir, *, dataset: str | None = None, stem: str = "headline_bars",
              placeholder: bool = True) -> list[Path]:
    """Headline metrics as bars with 95% CI error bars and each seed's value as a dot: one
    panel per ranked metric family (a task metric's procedures share a panel); anchors as
    horizontal reference lines; log scale where values span more than 30x."""
    dataset = dataset or table.attrs.get("dataset")
    nfe = table.attrs.get("headline_nfe")
    stats = {(s["model"], s["column"]): s for s in table_stats(table)}
    entries = [e for e in table_entries(table) if metric_direction(parse_column_key(e["column"])[0]) is not None]
    fams: dict[str, list[dict]] = {}
    for e in entries:
        fams.setdefault(e["family"], []).append(e)
    fam_list = [f for f in sorted(fams, key=column_sort_key) if any(e["model"] not in ANCHORS for e in fams[f])]
    title = f"{dataset or ''}: headline metrics".strip(": ")
    if not fam_list:
        return placeholder_figure(out_dir, stem, title, "no ranked metrics in the table") if placeholder else []
    with plot_style():
        fig, axes = new_figure(len(fam_list), 3, 4.3, 3.9, extra_h=0.4)
        handles: dict[str, object] = {}
        nseeds = set()
        for ax, fam in zip(axes, fam_list):
            es = sorted([e for e in fams[fam] if e["model"] not in ANCHORS],
                        key=lambda e: (model_rank(e["model"]), e["model"], e["column"]))
            metric = parse_column_key(es[0]["column"])[0]
            direction = metric_direction(metric)
            xs = np.arange(len(es))
            allv = []
            for i, e in enumerate(es):
                st = model_style(e["model"])
                ci = e["ci95"] if math.isfinite(e["ci95"]) else 0.0
                ax.bar(i, e["mean"], width=0.6, color=st["color"], alpha=0.55 if st["linestyle"] == "-" else 0.85,
                       edgecolor=st["color"], linewidth=1.2, hatch="//" if st["linestyle"] == "--" else None,
                       yerr=ci if ci > 0 else None, capsize=4, error_kw={"elinewidth": 1.2, "ecolor": "#222222"}, zorder=2)
                s = stats.get((e["model"], e["column"]))
                vals = s["values"] if s else []
                if vals:
                    jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else [0.0]
                    ax.scatter(i + np.asarray(jitter), vals, s=12, color="#222222", zorder=3, linewidths=0)
                allv += [e["mean"] - ci, e["mean"] + ci] + list(vals)
                if e["n"]:
                    nseeds.add(e["n"])
            anchors = [e for e in fams[fam] if e["model"] in ANCHORS]
            top = max(allv) if allv else 1.0
            off_scale = []
            for a in anchors:
                if top > 0 and a["mean"] > 3 * top:  # far above the bars: named in the title, not drawn
                    off_scale.append(a)
                    continue
                line = ax.axhline(a["mean"], **ANCHOR_LINE_STYLE[a["model"]], zorder=1)
                handles.setdefault(model_label(a["model"]), line)
                allv.append(a["mean"])
            lo, hi = min(0.0, min(allv)), max(allv)
            ax.set_ylim(lo, hi * 1.12 if hi > 0 else 1.0)
            ax.set_xlim(-0.6, max(len(es), 2.2) - 0.4)
            ax.set_xticks(xs)
            ax.set_xticklabels([who(e) for e in es], rotation=35, ha="right", rotation_mode="anchor")
            ax.grid(axis="x", visible=False)
            n_gen = None
            cols = {e["column"] for e in es}
            if len(cols) == 1 and (es[0]["model"], es[0]["column"]) in stats:
                n_gen = unique_or_mixed(pd.Series([stats[(e["model"], e["column"])]["n_generated"] for e in es]))
            ptitle = panel_title(fam if metric in TASK_METRICS else es[0]["column"], int_or_none(n_gen), direction)
            d = decimals_for([a["mean"] for a in fams[fam]])
            for a in off_scale:
                name = "Gaussian baseline" if a["model"] == "gaussian_baseline" else model_label(a["model"])
                ptitle += f"\n{name} {a['mean']:.{d}f} (off scale)"
            ax.set_title(ptitle)
        legend_below(fig, list(handles.values()), list(handles.keys()))
        suptitle_wrapped(fig, f"{title} (largest step{f', nfe={nfe}' if nfe is not None else ''}; bars: mean ± 95% CI over "
                     f"{seed_range(nseeds)} seeds; dots: seeds; hatched: MT)")
        return save_figure(fig, out_dir, stem)


def plot_losses(logs: pd.DataFrame, out_dir, *, dataset: str | None = None, stem: str = "losses",
                smooth: int | None = None, placeholder: bool = True) -> list[Path]:
    """Training losses from ``train_log.jsonl`` (:func:`load_train_logs`): one panel per loss
    column (``loss``, ``loss_<term>``), one line per model (mean over seeds of a moving
    average; band: min-max over seeds, as a t-interval per logged step would mostly show the
    step-to-step noise), x = images seen."""
    title = f"{dataset or ''}: training losses".strip(": ")
    loss_cols = [c for c in logs.columns if c == "loss" or c.startswith("loss_")] if len(logs) else []
    loss_cols = [c for c in loss_cols if logs[c].notna().any()]
    if not loss_cols:
        return placeholder_figure(out_dir, stem, title, "no training logs (train_log.jsonl)") if placeholder else []
    loss_cols = ["loss"] + sorted(c for c in loss_cols if c != "loss") if "loss" in loss_cols else sorted(loss_cols)
    xcol = "kimg" if "kimg" in logs.columns and logs["kimg"].notna().all() else "step"
    with plot_style():
        fig, axes = new_figure(len(loss_cols), 3, 4.6, 3.4, extra_h=0.5)
        handles: dict[str, object] = {}
        nseeds = set()
        for ax, lc in zip(axes, loss_cols):
            allv = []
            for model in sorted(logs["model"].unique(), key=lambda m: (model_rank(m), m)):
                gm = logs[(logs["model"] == model) & logs[lc].notna()].sort_values(["seed", xcol])
                if gm.empty:
                    continue
                parts = []
                for seed, gs in gm.groupby("seed"):
                    w = smooth or max(1, len(gs) // 25)
                    gs = gs.assign(_v=gs[lc].rolling(w, min_periods=1).mean())
                    parts.append(gs)
                gm = pd.concat(parts)
                agg = gm.groupby("step").agg(mean=("_v", "mean"), lo=("_v", "min"), hi=("_v", "max"),
                                             _x=(xcol, "mean")).reset_index()
                if xcol == "kimg":
                    agg["_x"] = agg["_x"] * 1000
                agg = agg.sort_values("_x")
                st = model_style(model)
                n = gm["seed"].nunique()
                nseeds.add(n)
                (line,) = ax.plot(agg["_x"], agg["mean"], color=st["color"], linestyle=st["linestyle"], linewidth=1.5)
                if n > 1:
                    ax.fill_between(agg["_x"], agg["lo"], agg["hi"], color=st["color"], alpha=0.15, linewidth=0)
                handles.setdefault(f"{model} ({model_kind(model)}, n={n})", line)
                allv += list(agg["lo"]) + list(agg["hi"])
            log_scale_if_wide(ax, allv, ratio=10)
            if xcol == "kimg":
                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.set_xlabel("training images seen" if xcol == "kimg" else "training step")
            ax.set_ylabel("loss")
            ax.set_title("total loss" if lc == "loss" else f"{lc[5:]} term")
        legend_below(fig, list(handles.values()), list(handles.keys()))
        suptitle_wrapped(fig, f"{title} (moving average; line: mean, band: range over {seed_range(nseeds)} seeds)")
        return save_figure(fig, out_dir, stem)
