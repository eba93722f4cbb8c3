"""The tables people read: per dataset, one small table per task (unconditional generation,
conditional generation, classification, segmentation, inpainting, compute), written together as
``summary.md`` (the README shows it verbatim).

Rows are models (the procedure in the row label, e.g. ``mt_all (head)``, ``classifier (direct)``),
columns a few metrics shared by single-task and MT models (mean ± 95% t-interval over seeds), and
a "vs single-task" column with the paired difference MT minus single-task, its 95% CI and the
verdict (:mod:`mtdiff.report.verdicts`). The generation table carries the convergence check
(:mod:`mtdiff.report.convergence`) and, when memorization records exist, the memorized fraction
with a flag; every table says the numeric precision and device of its numbers.
"""

from __future__ import annotations

import math

import pandas as pd

from mtdiff.registry import MODELS
from mtdiff.report.convergence import format_convergence
from mtdiff.report.headline import column_sort_key, unique_or_mixed
from mtdiff.report.tables import decimals_for, format_mean_ci, human_number, table_convergence, table_stats
from mtdiff.report.verdicts import base_model, format_difference, paired_verdicts, who
from mtdiff.report.vocabulary import (
    ANCHORS, DASH, METRIC_NAMES, column_key, is_missing, metric_direction, model_label, model_rank, parse_column_key,
)

# (key, title, metrics): the task tables, in this order; the compute table follows them.
TASKS = (
    ("unconditional", "Unconditional generation", ("fid", "kid_mean", "memorized_fraction")),
    ("conditional", "Conditional generation (and joint samples' coherence)",
     ("cond_fid", "cond_accuracy", "coherence_label", "coherence_miou")),
    ("classification", "Classification", ("accuracy",)),
    ("segmentation", "Segmentation", ("miou", "pixel_accuracy")),
    ("inpainting", "Inpainting", ("inpaint_mse", "inpaint_psnr", "inpaint_fid")),
)
MEMORIZATION_METRIC = "memorized_fraction"
# A model is flagged as copying training images when its memorized fraction (samples closer to a
# training image than the 1st percentile of test-to-train distances) exceeds this multiple of the
# test split's own fraction (the real_floor anchor, ~1% by construction): a generator of new
# digits sits near the anchor, a copier near 100%; 10x leaves room for seed noise at N of a few
# hundred while still catching a model that reproduces one sample in ten.
MEMORIZATION_FLAG_FACTOR = 10.0
COMPUTE_COLUMNS = (("parameters", "parameters"), ("steps", "training steps"), ("images_seen", "images seen"),
                   ("wall_s", "wall time (s)"), ("peak_memory_mb", "peak memory (MB)"))


def _shared_column(s: dict) -> str:
    """The column a cell goes to: the metric with extractor and condition, not the procedure
    (single-task and MT models share it; the procedure goes into the row label)."""
    return column_key(s["metric"], s.get("extractor"), s.get("condition"))


def _row_label(model: str, column: str) -> str:
    if model in ANCHORS:
        return model_label(model)
    return who(model, column)


def _header(col: str) -> str:
    metric, quals = parse_column_key(col)
    arrow = {"lower": " ↓", "higher": " ↑"}.get(metric_direction(metric), "")
    name = METRIC_NAMES.get(metric, "memorized fraction" if metric == MEMORIZATION_METRIC else metric)
    if metric == MEMORIZATION_METRIC:
        quals = quals or ["pixels"]
    return f"{name}{arrow}" + (f" [{', '.join(quals)}]" if quals else "")


def _protocol_line(cells: list[dict]) -> str:
    """``precision: fp32; device: cpu`` of a table's model rows (anchors have none); when rows
    differ, which models have which."""
    parts = []
    for field in ("precision", "device"):
        by: dict[str, list[str]] = {}
        for s in cells:
            v = s.get(field)
            if s["model"] in ANCHORS or is_missing(v):
                continue
            by.setdefault(str(v), [])
            if s["model"] not in by[str(v)]:
                by[str(v)].append(s["model"])
        if not by:
            parts.append(f"{field}: not recorded")
        elif len(by) == 1:
            parts.append(f"{field}: {next(iter(by))}")
        else:
            parts.append(f"{field}: " + ", ".join(f"{v} ({', '.join(ms)})" for v, ms in by.items()))
    return "; ".join(parts)


def task_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The per-task display tables of a comparison table (keys of :data:`TASKS` plus ``compute``;
    a task without records is left out). Each frame's ``attrs``: ``title``, ``protocol`` (precision
    and device), ``notes``."""
    stats = table_stats(table)
    verdicts = paired_verdicts(stats)
    convergence = table_convergence(table)
    out: dict[str, pd.DataFrame] = {}
    for key, title, metrics in TASKS:
        cells = [s for s in stats if s["metric"] in metrics]
        if not cells:
            continue
        # columns in the task's metric order, then by extractor (the domain extractor first)
        columns = sorted({_shared_column(s) for s in cells},
                         key=lambda c: (metrics.index(parse_column_key(c)[0]), column_sort_key(c)))
        rows: dict[str, dict] = {}
        for s in cells:
            label = _row_label(s["model"], s["column"])
            r = rows.setdefault(label, {"_model": s["model"], "_n": 0})
            r[_shared_column(s)] = s
            r["_n"] = max(r["_n"], int(s["n"]))
        order = sorted(rows, key=lambda lb: (model_rank(base_model(rows[lb]["_model"])), rows[lb]["_model"], lb))
        notes: list[str] = []
        df = pd.DataFrame({"model": order, "seeds": [str(rows[lb]["_n"]) for lb in order]})
        for col in columns:
            d = decimals_for([rows[lb][col]["mean"] for lb in order if col in rows[lb]])
            df[_header(col)] = [format_mean_ci(rows[lb][col]["mean"], rows[lb][col]["ci95"], d) if col in rows[lb]
                                else DASH for lb in order]
            if col.split("[")[0] == MEMORIZATION_METRIC:
                df[_header(col)] = _flag_memorization(df[_header(col)].tolist(), [rows[lb].get(col) for lb in order],
                                                      notes, col)
        if key == "unconditional" and convergence:
            _add_converged(df, rows, order, convergence, stats, notes)
        _add_vs_columns(df, rows, order, cells, [v for v in verdicts if v["metric"] in metrics], metrics, notes)
        df.attrs.update(title=title, protocol=_protocol_line(cells), notes=notes)
        out[key] = df
    compute = compute_table(table)
    if compute is not None:
        out["compute"] = compute
    return out


def _add_converged(df, rows, order, convergence, stats, notes) -> None:
    """The "converged" column of the generation table (the domain extractor's FID curve first)."""
    conv = {c["model"]: c for c in sorted(convergence, key=lambda c: column_sort_key(c["column"]), reverse=True)}
    first = min((c["column"] for c in convergence), key=column_sort_key)
    d = decimals_for([s["mean"] for s in stats if s["column"] == first])  # as the FID column
    df["converged"] = [format_convergence(conv[rows[lb]["_model"]], d) if rows[lb]["_model"] in conv else DASH
                       for lb in order]
    notes.append(f"converged: Δ, the change of {first} between the last two checkpoints (mean over seeds), "
                 f"lies within ± the 95% CI half-width over seeds of the last one (design.md section 9)")


def _add_vs_columns(df, rows, order, cells, verdicts, metrics, notes) -> None:
    """One "MT − single-task" column per compared metric (registry: ``ModelSpec.compared_on``);
    a row's cell holds the verdicts of its own cells (a procedure is a row of its own:
    ``mt_label (head)``, ``mt_label (elbo)``). Unpaired seeds go to ``notes``."""
    for metric in [m for m in metrics if any(v["metric"] == m for v in verdicts)]:
        shown = []
        for lb in order:
            own = {c["column"] for k, c in rows[lb].items() if not k.startswith("_")}
            parts = []
            for v in verdicts:
                if v["metric"] != metric or v["mt"] != rows[lb]["_model"] or v["mt_column"] not in own:
                    continue
                d = decimals_for([s["mean"] for s in cells if s["column"] == v["mt_column"]])
                parts.append(f"vs {who(v['base'], v['base_column'])}: {format_difference(v, d)}")
                notes += [f"{who(m, c)} seed(s) {', '.join(map(str, v['unpaired'][k]))} have no partner in the "
                          f"{metric} comparison {who(v['mt'], v['mt_column'])} vs {who(v['base'], v['base_column'])}: "
                          f"left out" for k, m, c in (("mt", v["mt"], v["mt_column"]),
                                                      ("base", v["base"], v["base_column"])) if v["unpaired"][k]]
            shown.append("; ".join(parts) or DASH)
        df[f"{METRIC_NAMES.get(metric, metric)}: MT − single-task"] = shown


def _flag_memorization(shown: list[str], cells: list, notes: list[str], col: str) -> list[str]:
    anchor = next((c for c in cells if c is not None and c["model"] == "real_floor"), None)
    if anchor is None or is_missing(anchor["mean"]):
        notes.append(f"{col}: no test-split anchor (real_floor), so no model is flagged")
        return shown
    limit = MEMORIZATION_FLAG_FACTOR * anchor["mean"]
    notes.append(f"{col}: flagged (COPIES) above {MEMORIZATION_FLAG_FACTOR:g}x the test split's own fraction "
                 f"({anchor['mean']:.3f}), i.e. above {limit:.3f}")
    # anchors are flagged too: the "copier" anchor (returns training images) must be, as a check
    return [text + " COPIES" if c is not None and c["model"] != "real_floor" and c["mean"] > limit else text
            for text, c in zip(shown, cells)]


def compute_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """Parameters, training steps, images seen, wall time and peak memory (means over seeds), and
    the numeric precision and device, per trained model; None without training summaries."""
    have = [c for c, _ in COMPUTE_COLUMNS if c in table.columns]
    if not have:
        return None
    models = [m for m in table.index if m not in ANCHORS and any(not is_missing(table.loc[m, c]) and
                                                                 math.isfinite(table.loc[m, c]) for c in have)]
    if not models:
        return None
    df = pd.DataFrame({"model": models})
    if "n_seeds" in table.columns:
        df["seeds"] = [str(int(table.loc[m, "n_seeds"])) for m in models]
    for c, header in COMPUTE_COLUMNS:
        if c not in table.columns:
            continue
        vals = [table.loc[m, c] for m in models]
        if c in ("parameters", "images_seen"):
            df[header] = [human_number(v) for v in vals]
        else:
            df[header] = [DASH if is_missing(v) or not math.isfinite(v) else
                          (f"{v:,.0f}" if c != "peak_memory_mb" else f"{v:,.1f}") for v in vals]
    for c, header in (("numeric_precision", "precision"), ("device", "device")):
        if c in table.columns:
            df[header] = [DASH if is_missing(table.loc[m, c]) else str(table.loc[m, c]) for m in models]
    precisions = unique_or_mixed(table.loc[models, "numeric_precision"]) if "numeric_precision" in table.columns else None
    df.attrs.update(title="Compute (equal-compute control)",
                    protocol=f"precision: {precisions if precisions is not None else 'not recorded'}", notes=[])
    return df


INPAINTING_COLUMNS = {"method": "method", "model": "model", "nfe": "NFE", "posterior_samples": "K", "seeds": "seeds",
                      "inpaint_psnr": "PSNR (hidden, dB) ↑", "inpaint_mse": "MSE (hidden) ↓",
                      "inpaint_fid": "FID ↓ [completions]", "beats_anchor": "beats the copy anchor"}


def inpainting_markdown(per_method: pd.DataFrame) -> list[str]:
    """The inpainting section from :func:`mtdiff.report.inpainting.inpainting_table` (one row per
    method at its own NFE: the headline table keeps one NFE, which would drop RePaint's rows)."""
    df = per_method[[c for c in INPAINTING_COLUMNS if c in per_method.columns]].rename(columns=INPAINTING_COLUMNS)
    return ["### Inpainting (per method, mean over seeds; inpainting.md has every setting)", "",
            df.to_markdown(index=False, floatfmt=".4g"), "",
            "- K: completions averaged per image (posterior mean: the MMSE estimate PSNR/MSE reward; no FID); "
            "the per-sample rows are the methods' own outputs", ""]


def summary_markdown(table: pd.DataFrame, *, source: str | None = None,
                     inpainting: pd.DataFrame | None = None) -> str:
    """``summary.md``: where the numbers came from, then each task table with its protocol line
    and notes, in Markdown that also reads in a terminal. ``inpainting``: the per-method
    inpainting table, which then replaces the headline-based one."""
    ds = table.attrs.get("dataset") or "?"
    nfe = table.attrs.get("headline_nfe")
    # seeds of the trained models (registered, or run with another procedure: mt_masked+repaint)
    seeds = sorted({int(n) for m, n in table["n_seeds"].items() if base_model(m) in MODELS and n > 0}) \
        if "n_seeds" in table.columns else []
    md = [f"## Results: {ds}", ""]
    if source:
        md += [f"Generated by {source}.", ""]
    md += [f"Mean ± 95% CI (t-distribution) over {'/'.join(map(str, seeds)) or '?'} seed(s) per model, at the last "
           f"checkpoint{f' and nfe={nfe}' if nfe is not None else ''}. ↓ lower is better, ↑ higher is better; "
           f"{DASH}: not measured or no interval (one seed). \"MT − single-task\": per-seed differences MT minus "
           f"single-task (seeds matched): their mean [95% CI], the verdict (better/worse only when the CI excludes 0), "
           f"n paired seeds and the paired t-test's p (scipy.stats.ttest_rel). Generation metrics name their feature extractor in brackets.", ""]
    for key, df in task_tables(table).items():
        if key == "inpainting" and inpainting is not None and not inpainting.empty:
            md += inpainting_markdown(inpainting)
            continue
        md += [f"### {df.attrs['title']}", "", df.to_markdown(index=False, disable_numparse=True), "",
               f"*{df.attrs['protocol']}*", ""]
        md += [f"- {n}" for n in df.attrs["notes"]] + ([""] if df.attrs["notes"] else [])
    return "\n".join(md)
