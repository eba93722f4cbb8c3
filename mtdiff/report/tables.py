"""The comparison table (one row per model, mean ± 95% CI per measured quantity, compute beside
it), its display formatting, its CSV / Markdown / LaTeX files, and the paper's quoted numbers
(kept apart: never merged into the measured table)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mtdiff.io import atomic_write_text
from mtdiff.report.convergence import convergence_table
from mtdiff.report.headline import (
    column_sort_key, headline_records, headline_stats, refuse_mixed_precision, unique_or_mixed,
)
from mtdiff.report.vocabulary import (
    ANCHORS, DASH, PAPER_REFERENCE_CSV, RESOURCE_COLUMNS, TASK_METRICS, ReportError, is_missing, metric_direction,
    model_kind, model_label, model_rank, parse_column_key,
)


def comparison_table(records: pd.DataFrame, summaries: pd.DataFrame | None = None, *,
                     headline_nfe: int | None = None, dataset: str | None = None) -> pd.DataFrame:
    """One row per model (index ``model``): ``label``, ``kind``, ``n_seeds``; for each column
    ``<col>_mean``, ``<col>_ci95`` (NaN with one seed), ``<col>_n``; then the means over seeds of
    ``parameters``, ``steps``, ``images_seen``, ``wall_s``, ``peak_memory_mb`` from the summaries.

    ``attrs``: ``dataset``, ``headline_nfe``, ``metric_columns`` (ordered), ``stats`` (the long
    table of :func:`headline_stats`, read it with :func:`table_stats`) and ``notes`` (protocol
    remarks)."""
    notes: list[str] = []
    if records is None or len(records) == 0:
        raise ReportError("no metric records to tabulate; run the evaluation first")
    if dataset is None:
        ds = [d for d in records["dataset"].dropna().unique()]
        dataset = ds[0] if len(ds) == 1 else None
    elif "dataset" in records.columns and (records["dataset"] != dataset).any():
        other = sorted(set(records["dataset"].dropna()) - {dataset})
        if other:
            notes.append(f"records of other dataset(s) {', '.join(other)} ignored")
        records = records[records["dataset"] == dataset]
    dropped = int(records["value"].isna().sum())
    if dropped:
        notes.append(f"{dropped} record(s) with a null (non-finite) value left out")
    head = headline_records(records, headline_nfe=headline_nfe, notes=notes)
    nfe = head.attrs.get("headline_nfe")
    head = with_run_precision(head, summaries)
    refuse_mixed_precision(head)
    stats = headline_stats(head)
    if stats.empty:
        raise ReportError("no finite metric values to tabulate")
    columns = sorted(stats["column"].unique(), key=column_sort_key)
    models = sorted(stats["model"].unique(), key=lambda m: (model_rank(m), m))
    if summaries is not None and len(summaries):
        models += sorted((set(summaries["model"].dropna()) - set(models)), key=lambda m: (model_rank(m), m))
    table = pd.DataFrame(index=pd.Index(models, name="model"))
    table["label"] = [model_label(m) for m in models]
    table["kind"] = [model_kind(m) for m in models]
    table["n_seeds"] = 0
    for col in columns:
        s = stats[stats["column"] == col].set_index("model")
        table[f"{col}_mean"] = s["mean"].reindex(models).astype(float)
        table[f"{col}_ci95"] = s["ci95"].reindex(models).astype(float)
        table[f"{col}_n"] = s["n"].reindex(models).fillna(0).astype(int)
        # protocol check within a generation column: one N for all models
        gen = s.loc[[m for m in s.index if m not in ANCHORS], "n_generated"]
        gen = gen[[not is_missing(v) for v in gen]]
        ns = set(gen)
        if parse_column_key(col)[0] not in TASK_METRICS and (len(ns) > 1 or "mixed" in ns):
            notes.append(f"{col}: models were evaluated on different numbers of generated images "
                         f"({', '.join(f'{m}={v}' for m, v in gen.items())}); FID/KID are biased in N, compare with care")
    # numeric precision and device of each row's numbers (one per column, checked above)
    table["numeric_precision"] = [unique_or_mixed(head.loc[head["model"] == m, "precision"]) for m in models]
    table["device"] = [unique_or_mixed(head.loc[head["model"] == m, "device"]) for m in models]
    seeds_per_model = head.groupby("model")["seed"].nunique()
    table["n_seeds"] = seeds_per_model.reindex(models).fillna(0).astype(int)
    # real-data anchor label names the splits it was computed from
    if "real_floor" in models:
        rf = head[head["model"] == "real_floor"]
        frm = unique_or_mixed(rf["extra.images_from"]) if "extra.images_from" in rf.columns else None
        ref = unique_or_mixed(rf["reference_split"])
        if isinstance(frm, str) and isinstance(ref, str):
            table.loc["real_floor", "label"] = f"anchor: real data ({frm} vs {ref})"
    # equal-compute control
    if summaries is not None and len(summaries):
        sm = summaries
        if dataset is not None and "dataset" in sm.columns:
            sm = sm[sm["dataset"].isna() | (sm["dataset"] == dataset)]
        not_done = sm[sm["done"].notna() & (sm["done"] == False)]  # noqa: E712
        for _, r in not_done.iterrows():
            notes.append(f"{r['model']} seed {r['seed']}: training summary says done=false (incomplete run)")
        agg = sm.groupby("model")[[c for c in RESOURCE_COLUMNS]].agg(lambda s: pd.to_numeric(s, errors="coerce").mean())
        for field, (col, _) in RESOURCE_COLUMNS.items():
            table[col] = agg[field].reindex(models).astype(float) if field in agg else np.nan
        nsum = sm.groupby("model")["seed"].nunique()
        for m in models:
            if m in ANCHORS or m not in nsum.index or table.loc[m, "n_seeds"] == 0:
                continue
            if nsum[m] != table.loc[m, "n_seeds"]:
                notes.append(f"{m}: {table.loc[m, 'n_seeds']} seed(s) with metrics but {nsum[m]} training summaries")
    else:
        for _, (col, _) in RESOURCE_COLUMNS.items():
            table[col] = np.nan
    single = [m for m in models if m not in ANCHORS and 0 < table.loc[m, "n_seeds"] < 2]
    if single:
        notes.append(f"only one seed for {', '.join(single)}: no confidence interval (shown as {DASH})")
    convergence = convergence_table(records, headline_nfe=nfe)
    table.attrs.update(dataset=dataset, headline_nfe=nfe, metric_columns=list(columns),
                       stats=json.dumps(stats.to_dict("records"), default=_json_default), notes=notes,
                       convergence=json.dumps(convergence, default=_json_default))
    return table


def with_run_precision(head: pd.DataFrame, summaries: pd.DataFrame | None) -> pd.DataFrame:
    """Records without a ``precision``/``device`` stamp (older runs) take their training run's
    from ``summary.json`` (same model and seed); anchors have no run and stay null."""
    head = head.copy()
    for c in ("precision", "device"):
        if c not in head.columns:
            head[c] = None
    if summaries is None or not len(summaries):
        return head
    runs = {(r["model"], int(r["seed"])): r for _, r in summaries.iterrows() if not is_missing(r["seed"])}
    for c in ("precision", "device"):
        if c not in summaries.columns:
            continue
        fill = [runs[(m, int(s))][c] if is_missing(v) and not is_missing(s) and (m, int(s)) in runs else v
                for m, s, v in zip(head["model"], head["seed"], head[c])]
        head[c] = [None if is_missing(v) else v for v in fill]
    return head


def table_convergence(table: pd.DataFrame) -> list[dict]:
    """The convergence checks (:func:`mtdiff.report.convergence.convergence_table`) computed with
    a comparison table; [] for a table read back from CSV."""
    raw = table.attrs.get("convergence")
    if not raw:
        return []
    return json.loads(raw) if isinstance(raw, str) else list(raw)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return str(o)


def table_stats(table: pd.DataFrame) -> list[dict]:
    """The long per-(model, column) statistics behind a comparison table (each seed's value,
    N generated, ...); [] for a table read back from CSV. Kept in ``attrs`` as JSON text, as
    pandas deep-copies ``attrs`` on every derived frame."""
    raw = table.attrs.get("stats")
    if not raw:
        return []
    return json.loads(raw) if isinstance(raw, str) else list(raw)


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The measured-quantity columns of a comparison table (from attrs, or its ``*_mean`` columns)."""
    cols = table.attrs.get("metric_columns")
    if cols:
        return list(cols)
    return [c[: -len("_mean")] for c in table.columns if c.endswith("_mean") and f"{c[:-5]}_ci95" in table.columns]


def decimals_for(values) -> int:
    v = np.abs(np.asarray([x for x in values if not is_missing(x) and math.isfinite(x)], dtype=float))
    if v.size == 0:
        return 2
    med = float(np.median(v))
    if med >= 10:
        return 1
    if med >= 1:
        return 2
    if med >= 0.1 or med == 0:
        return 3
    return max(4, min(6, 1 - int(math.floor(math.log10(med))) + 1))


def format_mean_ci(mean, ci, decimals: int = 2) -> str:
    """``"12.3 ± 0.4"``; a NaN CI as ``"12.3 ± —"``; a NaN mean as ``"—"``."""
    if is_missing(mean) or not math.isfinite(mean):
        return DASH
    if is_missing(ci) or not math.isfinite(ci):
        return f"{mean:.{decimals}f} ± {DASH}"
    return f"{mean:.{decimals}f} ± {ci:.{decimals}f}"


def human_number(n, unit: str = "") -> str:
    if is_missing(n) or not math.isfinite(n):
        return DASH
    n = float(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}" if not n.is_integer() else f"{int(n)}{unit}"


def format_table(table: pd.DataFrame, *, arrows: bool = True) -> pd.DataFrame:
    """The comparison table as display strings: ``mean ± ci95`` per metric column (decimals per
    column), "—" where missing, ``(n=k)`` where a cell has fewer seeds than its row, and the
    compute columns in readable units."""
    cols = metric_columns(table)
    out = pd.DataFrame(index=table.index)
    out["model"] = table["label"] if "label" in table.columns else list(table.index)
    if "n_seeds" in table.columns:
        out["n seeds"] = table["n_seeds"].astype(int).astype(str)
    for col in cols:
        d = decimals_for(table[f"{col}_mean"])
        cells = []
        for m in table.index:
            mean, ci = table.loc[m, f"{col}_mean"], table.loc[m, f"{col}_ci95"]
            cell = format_mean_ci(mean, ci, d)
            n = table.loc[m, f"{col}_n"] if f"{col}_n" in table.columns else None
            if cell != DASH and n is not None and "n_seeds" in table.columns and 0 < n < table.loc[m, "n_seeds"]:
                cell += f" (n={int(n)})"
            cells.append(cell)
        direction = metric_direction(parse_column_key(col)[0])
        header = col + ({"lower": " ↓", "higher": " ↑"}.get(direction, "") if arrows else "")
        out[header] = cells
    for field, (col, header) in RESOURCE_COLUMNS.items():
        if col not in table.columns:
            continue
        vals = table[col]
        if field in ("parameters", "images_seen"):
            out[header] = [human_number(v) for v in vals]
        elif field == "steps":
            out[header] = [DASH if is_missing(v) or not math.isfinite(v) else f"{int(round(v)):,}" for v in vals]
        elif field == "wall_s":
            out[header] = [DASH if is_missing(v) or not math.isfinite(v) else f"{v:,.0f}" for v in vals]
        else:
            out[header] = [DASH if is_missing(v) or not math.isfinite(v) else f"{v:,.1f}" for v in vals]
    return out.reset_index(drop=True)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "—": "---", "–": "--", "↓": r"$\downarrow$", "↑": r"$\uparrow$",
                  "→": r"$\rightarrow$", "×": r"$\times$"}


def latex_escape(text) -> str:
    """Escape LaTeX specials (``_`` -> ``\\_`` ...) and map ±, —, ↓, ↑ to LaTeX."""
    s = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for k, v in _LATEX_UNICODE.items():
        s = s.replace(k, v)
    return s


def table_caption(table: pd.DataFrame) -> str:
    ds = table.attrs.get("dataset") or "?"
    nfe = table.attrs.get("headline_nfe")
    return (f"{ds}: headline metrics, mean ± 95% CI (t-distribution) over seeds; largest checkpoint step, "
            f"nfe={nfe if nfe is not None else DASH}. Generation metrics name their feature extractor in brackets "
            f"(never comparable across extractors); ↓ lower is better, ↑ higher is better; {DASH}: not measured, "
            f"or CI undefined with one seed.{_precision_note(table)}")


def _precision_note(table: pd.DataFrame) -> str:
    """`` Precision: fp32; device: cpu.`` of the model rows (per model where they differ)."""
    parts = []
    for col, name in (("numeric_precision", "precision"), ("device", "device")):
        if col not in table.columns:
            continue
        vals = {m: str(v) for m, v in table[col].items() if m not in ANCHORS and not is_missing(v)}
        if len(set(vals.values())) == 1:
            parts.append(f"{name}: {next(iter(vals.values()))}")
        elif vals:
            parts.append(f"{name}: " + ", ".join(f"{m}={v}" for m, v in vals.items()))
    return f" Numeric {'; '.join(parts)}." if parts else ""


def write_tables(df: pd.DataFrame, out_dir, stem: str, *, caption: str | None = None) -> dict[str, Path]:
    """Write a comparison table as ``<stem>.csv`` (raw numbers: ``*_mean``, ``*_ci95``, ``*_n``),
    ``<stem>.md`` (formatted ``12.3 ± 0.4``) and ``<stem>.tex`` (booktabs, escaped).

    A table without ``*_mean`` columns (e.g. :func:`reference_table`) is written as it is."""
    out_dir = Path(out_dir)
    is_comparison = bool(metric_columns(df))
    caption = caption if caption is not None else (table_caption(df) if is_comparison else None)
    paths = {"csv": out_dir / f"{stem}.csv", "md": out_dir / f"{stem}.md", "tex": out_dir / f"{stem}.tex"}
    atomic_write_text(paths["csv"], df.to_csv(index=is_comparison))
    shown = format_table(df) if is_comparison else df.fillna(DASH).astype(str)
    md = shown.to_markdown(index=False, disable_numparse=True)
    atomic_write_text(paths["md"], (f"{caption}\n\n" if caption else "") + md + "\n")
    tex_df = shown.map(latex_escape)
    tex_df.columns = [latex_escape(c) for c in shown.columns]
    align = "l" + ("l" * (1 if is_comparison else 0)) + "r" * (len(shown.columns) - 1 - (1 if is_comparison else 0))
    if not is_comparison:
        align = "l" * len(shown.columns)
    tex = tex_df.to_latex(index=False, escape=False, column_format=align)
    if caption:
        tex = (f"% {latex_escape(caption)}\n% requires \\usepackage{{booktabs}}\n" + tex)
    atomic_write_text(paths["tex"], tex)
    return paths


# ---------------------------------------------------------------------------------------------
# the paper's numbers (quoted, never merged)

QUOTED_NOTE = ("QUOTED from Chen et al. (ICLR 2024) as recovered from a review of the full text; "
               "not checked against the paper and not reproduced here")


def reference_table(path=None) -> pd.DataFrame:
    """The paper's reported numbers (``mtdiff/paper_reference.csv``), QUOTED, not reproduced.

    Columns: dataset, setting, model, metric, value (text, as quoted; a range is written
    ``min-max``), source_note, plus ``value_min`` / ``value_max`` parsed from ``value`` (equal
    for a single number)."""
    path = Path(path) if path is not None else PAPER_REFERENCE_CSV
    if not path.is_file():
        raise ReportError(f"paper reference table {str(path)!r} not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    want = ["dataset", "setting", "model", "metric", "value", "source_note"]
    missing = [c for c in want if c not in df.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
    lo, hi = [], []
    for v in df["value"]:
        m = re.fullmatch(r"\s*([0-9.]+)\s*(?:[-–]\s*([0-9.]+))?\s*", v)
        if not m:
            raise ReportError(f"{path}: value {v!r} is neither a number nor a range 'min-max'")
        lo.append(float(m.group(1)))
        hi.append(float(m.group(2) or m.group(1)))
    df["value_min"], df["value_max"] = lo, hi
    return df


def write_reference_table(out_dir, stem: str = "paper_reference", path=None) -> dict[str, Path]:
    """``<stem>.csv`` and ``<stem>.md`` of :func:`reference_table`, headed as quoted."""
    ref = reference_table(path)
    out_dir = Path(out_dir)
    shown = ref[["dataset", "setting", "model", "metric", "value"]]
    md = ("**Numbers QUOTED from the paper** (Chen et al., ICLR 2024), recovered from a review of the full text; "
          "not checked against the paper and not reproduced by this benchmark (different data, scale and "
          "extractor: never compare them with the measured table).\n\n"
          + shown.to_markdown(index=False, disable_numparse=True) + "\n")
    return {"csv": atomic_write_text(out_dir / f"{stem}.csv", ref.drop(columns=["value_min", "value_max"]).to_csv(index=False)),
            "md": atomic_write_text(out_dir / f"{stem}.md", md)}
