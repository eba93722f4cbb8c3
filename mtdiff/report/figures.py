"""Drawing helpers shared by the report's plots: style, panel grid, saving, model line styles,
log scales, titles, legends and the anchors' reference lines."""

from __future__ import annotations

import contextlib
import math
import textwrap
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from mtdiff.io import atomic_path
from mtdiff.report.stats import mean_ci95
from mtdiff.report.vocabulary import ANCHORS, METRIC_NAMES, is_missing, model_colour, model_kind, model_label, parse_column_key


def plot_style() -> contextlib.ExitStack:
    """The style of every report figure (seaborn whitegrid, bold titles, reproducible SVG)."""
    stack = contextlib.ExitStack()
    stack.enter_context(sns.axes_style("whitegrid"))
    stack.enter_context(sns.plotting_context("notebook", font_scale=0.85))
    stack.enter_context(mpl.rc_context({"svg.fonttype": "none", "axes.titleweight": "bold",
                                        "axes.titlesize": 10.5, "figure.titlesize": 12, "legend.fontsize": 9,
                                        "svg.hashsalt": "mtdiff", "path.simplify": True}))
    return stack


def new_figure(n_panels: int, ncols: int, w: float, h: float, extra_h: float = 0.0):
    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(max(w * ncols, 8.5), h * nrows + extra_h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def save_figure(fig, out_dir, stem: str) -> list[Path]:
    """``<stem>.png`` and ``<stem>.svg`` (no date in the SVG: the same figure, the same bytes)."""
    paths = []
    for ext in ("png", "svg"):
        p = Path(out_dir) / f"{stem}.{ext}"
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=ext, dpi=150 if ext == "png" else None,
                        metadata={"Date": None} if ext == "svg" else None)
        paths.append(p)
        fig.set_layout_engine("none")  # the constrained layout is computed: keep it for the next format
    return paths


def placeholder_figure(out_dir, stem: str, title: str, message: str) -> list[Path]:
    with plot_style():
        fig, (ax,) = new_figure(1, 1, 6.0, 2.2)
        ax.axis("off")
        ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, color="#555555",
                transform=ax.transAxes)
        suptitle_wrapped(fig, title)
        return save_figure(fig, out_dir, stem)


def model_style(model: str) -> dict:
    mt = model_kind(model) == "multi-task"
    return {"color": model_colour(model), "linestyle": "--" if mt else "-", "marker": "s" if mt else "o"}


def mean_ci_over_seeds(df: pd.DataFrame, by: list[str], value: str = "value") -> pd.DataFrame:
    rows = []
    for key, g in df.groupby(by, sort=True):
        mean, ci, n, _ = mean_ci95(g[value])
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "mean": mean, "ci95": 0.0 if math.isnan(ci) else ci, "n": n})
    return pd.DataFrame(rows)


def log_scale_if_wide(ax, values, axis: str = "y", ratio: float = 30.0) -> None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size and v.min() > 0 and v.max() / v.min() > ratio:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        a = ax.yaxis if axis == "y" else ax.xaxis
        # plain numbers at 1, 2, 5 x 10^k (readable FIDs: 5, 10, 20, 50, ...), not 10^k labels
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        a.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        a.set_minor_formatter(NullFormatter())


def panel_title(col: str, n_gen=None, direction=None) -> str:
    metric, quals = parse_column_key(col)
    arrow = {"lower": " (↓ better)", "higher": " (↑ better)"}.get(direction, "")
    name = METRIC_NAMES.get(metric, metric)
    lines = [name + arrow]
    sub = ", ".join(quals)
    if n_gen not in (None, "mixed"):
        sub = (sub + "; " if sub else "") + f"N={n_gen}"
    elif n_gen == "mixed":
        sub = (sub + "; " if sub else "") + "N mixed"
    if sub:
        lines.append(sub)
    return "\n".join(lines)


def legend_below(fig, handles, labels) -> None:
    """One legend for all panels, under them; as many columns as the width holds."""
    if not handles:
        return
    longest = max(len(str(x)) for x in labels)
    per_col = 0.75 + 0.075 * longest  # inches at legend.fontsize 9
    ncol = max(1, min(len(handles), int(fig.get_figwidth() // per_col)))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


def suptitle_wrapped(fig, text: str) -> None:
    """Figure title wrapped to the figure's width (constrained layout does not wrap it)."""
    fig.suptitle(textwrap.fill(text, width=max(40, int(fig.get_figwidth() * 9.5))))


def int_or_none(v):
    if v is None or is_missing(v):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return v


def seed_range(ns) -> str:
    ns = sorted(ns)
    if not ns:
        return "0"
    return str(ns[0]) if ns[0] == ns[-1] else f"{ns[0]}-{ns[-1]}"


def single_value(s):
    if s is None:
        return None
    vals = [v for v in pd.Series(s).dropna().unique()]
    return vals[0] if len(vals) == 1 else None


ANCHOR_LINE_STYLE = {"real_floor": dict(color="#2ca02c", linestyle=":", linewidth=1.6),
                "gaussian_baseline": dict(color="#555555", linestyle="-.", linewidth=1.4),
                "nearest_neighbour": dict(color="#8c564b", linestyle="--", linewidth=1.4),  # inpainting anchor
                "copier": dict(color="#d62728", linestyle=(0, (1, 1)), linewidth=1.4)}  # memorization anchor


def draw_anchor_lines(ax, anchors: pd.DataFrame, col: str, handles: dict, orientation="h") -> list[float]:
    """Anchor values of ``col`` (mean over seeds) as reference lines; returns the values."""
    vals = []
    a = anchors[anchors["column"] == col] if len(anchors) else anchors
    for model in ANCHORS:
        v = a.loc[a["model"] == model, "value"] if len(a) else []
        if len(v) == 0:
            continue
        mean = float(np.mean(v))
        line = ax.axhline(mean, **ANCHOR_LINE_STYLE[model], zorder=1)
        handles.setdefault(model_label(model), line)
        vals.append(mean)
    return vals
