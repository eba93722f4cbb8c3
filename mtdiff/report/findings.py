"""A short reading of the comparison table, computed only from its numbers (no hand-written
claims): each multi-task model against its single-task baselines (``ModelSpec.baselines`` in
mtdiff/registry.py) as a paired verdict over seeds (:mod:`mtdiff.report.verdicts`), whether each
diffusion model's training converged (:mod:`mtdiff.report.convergence`), the best model per
metric and whether its 95% CI overlaps the runner-up's, FID/KID relative to the anchors, and the
protocol notes."""

from __future__ import annotations

import math

import pandas as pd

from mtdiff.report.stats import intervals_overlap
from mtdiff.report.convergence import format_convergence
from mtdiff.report.tables import (
    decimals_for, format_mean_ci, human_number, metric_columns, table_convergence, table_stats,
)
from mtdiff.report.verdicts import paired_verdicts, verdict_sentence
from mtdiff.report.vocabulary import (
    ANCHORS, TASK_METRICS, is_missing, metric_direction, metric_family, model_pairs, parse_column_key,
)


def table_entries(table: pd.DataFrame) -> list[dict]:
    """(model, column, family, mean, ci95, n) of every finite cell."""
    out = []
    for col in metric_columns(table):
        for m in table.index:
            mean = table.loc[m, f"{col}_mean"]
            if is_missing(mean) or not math.isfinite(mean):
                continue
            n = int(table.loc[m, f"{col}_n"]) if f"{col}_n" in table.columns else None
            out.append({"model": m, "column": col, "family": metric_family(col), "mean": float(mean),
                        "ci95": float(table.loc[m, f"{col}_ci95"]), "n": n})
    return out


def who(e: dict) -> str:
    """Model name, plus the procedure for task metrics (``mt_label (head)``)."""
    metric, quals = parse_column_key(e["column"])
    return f"{e['model']} ({', '.join(quals)})" if metric in TASK_METRICS and quals else e["model"]


def _fmt(e: dict, decimals: int, paren: bool = False) -> str:
    s = format_mean_ci(e["mean"], e["ci95"], decimals)
    if e.get("n") is None:
        return s
    return s + (f" (n={e['n']})" if paren else f", n={e['n']}")


def _verdict(a: dict, b: dict, direction: str) -> tuple[str, bool]:
    better = a["mean"] < b["mean"] if direction == "lower" else a["mean"] > b["mean"]
    ov = intervals_overlap(a["mean"], a["ci95"], b["mean"], b["ci95"])
    return ("no CI (a single seed): no clear difference can be claimed" if ov is None
            else "the 95% CIs overlap: no clear difference" if ov
            else "the 95% CIs do not overlap: a clear difference"), better


def findings(table: pd.DataFrame) -> list[str]:
    """A short reading of the comparison table, computed only from its numbers:

    * each MT model against its single-task counterpart: the paired verdict over seeds (from the
      per-seed values kept with the table; a table read back from CSV has none, and its means
      and CIs are compared instead), with the compute beside it;
    * converged yes/no per diffusion model (the curve records kept with the table);
    * per metric (family): the best model and whether its 95% CI overlaps the runner-up's;
    * each FID/KID relative to the anchors (share of the way from the Gaussian baseline to the
      real-data floor);
    * protocol notes collected while building the table."""
    out: list[str] = []
    entries = table_entries(table)
    nfe = table.attrs.get("headline_nfe")
    ns = sorted({int(table.loc[m, "n_seeds"]) for m in table.index
                 if m not in ANCHORS and "n_seeds" in table.columns and table.loc[m, "n_seeds"] > 0})
    if ns:
        nrange = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        out.append(f"Headline values: largest checkpoint step{f', nfe={nfe}' if nfe is not None else ''}; "
                   f"mean ± 95% CI (t-distribution) over {nrange} seed(s) per model.")
    decimals = {col: decimals_for(table[f"{col}_mean"]) for col in metric_columns(table)}
    stats = table_stats(table)
    if stats:
        out += _verdict_lines(table, stats, decimals)
    out += [f"Converged ({c['column']}, checkpoints {' -> '.join(map(str, c['steps']))}): {c['model']} "
            f"{format_convergence(c, decimals.get(c['column'], 2))}." for c in table_convergence(table)]
    # 1. winners per family
    families: dict[str, list[dict]] = {}
    for e in entries:
        families.setdefault(e["family"], []).append(e)
    for fam, es in families.items():
        metric = parse_column_key(es[0]["column"])[0]
        direction = metric_direction(metric)
        if direction is None:
            continue
        cands = [e for e in es if e["model"] not in ANCHORS]
        if not cands:
            continue
        cands.sort(key=lambda e: e["mean"], reverse=direction == "higher")
        d = max(decimals[e["column"]] for e in cands)
        extreme = "lowest" if direction == "lower" else "highest"
        best = cands[0]
        if len(cands) == 1:
            out.append(f"{fam}: only {who(best)} measured ({_fmt(best, d)}).")
            continue
        second = cands[1]
        ov = intervals_overlap(best["mean"], best["ci95"], second["mean"], second["ci95"])
        head = f"{fam} ({direction} is better): {who(best)} has the {extreme} value ({_fmt(best, d)})"
        if best["mean"] == second["mean"]:
            out.append(f"{head}, tied with {who(second)}: no winner.")
        elif ov is None:
            out.append(f"{head}; runner-up {who(second)} ({_fmt(second, d)}); no CI with a single seed: "
                       f"no clear winner can be claimed.")
        elif ov:
            out.append(f"{head} but its 95% CI overlaps that of {who(second)} ({_fmt(second, d)}): no clear winner.")
        else:
            out.append(f"{head} and its 95% CI does not overlap that of the runner-up {who(second)} "
                       f"({_fmt(second, d)}): {who(best)} is clearly best.")
    # 2. MT models against their single-task counterparts
    by = {(e["model"], e["column"]): e for e in entries}
    for mt, base, metrics in ([] if stats else model_pairs()):
        lines = []
        for e in entries:
            if e["model"] != mt or parse_column_key(e["column"])[0] not in metrics:
                continue
            metric = parse_column_key(e["column"])[0]
            direction = metric_direction(metric)
            if metric in TASK_METRICS:
                rivals = [r for r in entries if r["model"] == base and r["family"] == e["family"]]
            else:
                rivals = [by[(base, e["column"])]] if (base, e["column"]) in by else []
            for r in rivals:
                d = decimals[e["column"]]
                text, better = _verdict(e, r, direction)
                diff = round(e["mean"] - r["mean"], d) + 0.0  # + 0.0: no "-0.0"
                how = "equal at this precision" if diff == 0 else "better" if better else "worse"
                lines.append(f"{who(e)} vs {who(r)} on {e['family'] if metric in TASK_METRICS else e['column']} "
                             f"({direction} is better): {_fmt(e, d, True)} vs {_fmt(r, d, True)}, difference {diff:+.{d}f}; "
                             f"the MT model is {how}, {text}.")
        if lines:
            out += lines
            c = _compute_line(table, mt, base)
            if c:
                out.append(c)
    # 3. anchors
    for col in metric_columns(table):
        metric = parse_column_key(col)[0]
        if metric not in ("fid", "kid_mean", "cond_fid", "cond_kid_mean"):
            continue
        floor = by.get(("real_floor", col))
        gauss = by.get(("gaussian_baseline", col))
        models = [e for e in entries if e["column"] == col and e["model"] not in ANCHORS]
        if not models or (floor is None and gauss is None):
            continue
        d = decimals[col]
        models.sort(key=lambda e: e["mean"])
        if floor is not None and gauss is not None and gauss["mean"] > floor["mean"]:
            span = gauss["mean"] - floor["mean"]
            parts = []
            for e in models:
                frac = (gauss["mean"] - e["mean"]) / span
                tag = " (below the real-data floor: check N and splits)" if e["mean"] < floor["mean"] else \
                      " (worse than the Gaussian baseline)" if e["mean"] > gauss["mean"] else ""
                parts.append(f"{e['model']} {100 * frac:.0f}%{tag}")
            out.append(f"{col} relative to the anchors (Gaussian baseline {gauss['mean']:.{d}f} = 0%, real-data "
                       f"floor {floor['mean']:.{d}f} = 100%): " + ", ".join(parts) + ".")
        elif floor is not None and floor["mean"] > 0:
            parts = [f"{e['model']} {e['mean'] / floor['mean']:.1f}x" for e in models]
            out.append(f"{col} relative to the real-data floor ({floor['mean']:.{d}f}): " + ", ".join(parts) + ".")
        elif gauss is not None:
            parts = [f"{e['model']} {e['mean']:.{d}f}" for e in models]
            out.append(f"{col}: Gaussian baseline {gauss['mean']:.{d}f} (no real-data floor); " + ", ".join(parts) + ".")
    for note in table.attrs.get("notes", []):
        out.append(f"Protocol note: {note}.")
    return out


def _verdict_lines(table: pd.DataFrame, stats: list[dict], decimals: dict) -> list[str]:
    """The paired verdicts in plain words, each pair's compute after its verdicts."""
    out, last_pair = [], None
    for v in paired_verdicts(stats):
        pair = (v["mt"], v["base"])
        if last_pair is not None and pair != last_pair:
            c = _compute_line(table, *last_pair)
            out += [c] if c else []
        last_pair = pair
        out.append(verdict_sentence(v, decimals.get(v["mt_column"], 2)))
    if last_pair is not None:
        c = _compute_line(table, *last_pair)
        out += [c] if c else []
    return out


def _compute_line(table: pd.DataFrame, a: str, b: str) -> str | None:
    if a not in table.index or b not in table.index:
        return None
    parts = []
    for col, name in (("parameters", "parameters"), ("images_seen", "images seen"), ("wall_s", "wall time"),
                      ("peak_memory_mb", "peak memory")):
        if col not in table.columns:
            continue
        va, vb = table.loc[a, col], table.loc[b, col]
        if is_missing(va) or is_missing(vb) or not (math.isfinite(va) and math.isfinite(vb)):
            continue
        if col in ("wall_s", "peak_memory_mb"):
            unit = " s" if col == "wall_s" else " MB"
            a_s, b_s = f"{va:,.0f}{unit}", f"{vb:,.0f}{unit}"
        else:
            a_s, b_s = human_number(va), human_number(vb)
        ratio = f" (x{va / vb:.2f})" if vb else ""
        parts.append(f"{name} {a_s} vs {b_s}{ratio}")
    return f"Compute, {a} vs {b}: " + "; ".join(parts) + "." if parts else None
