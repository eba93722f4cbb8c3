"""The benchmark report: comparison tables, plots and a data-driven reading of the results.

Reads only what the workflow wrote under a results root ``R`` for a dataset ``D``:

* metric records ``R/D/metrics/*.jsonl`` (:mod:`mtdiff.metrics.records`),
* training summaries ``R/D/train/<model>/seed<k>/summary.json``,
* training logs ``R/D/train/<model>/seed<k>/train_log.jsonl``,
* sample grids ``R/D/samples/<model>/seed<k>/grid.png``,

and writes (``build_report``) into an output folder the files of :data:`REPORT_FILES`.

Protocol of the comparison table (:func:`comparison_table`)
----------------------------------------------------------
* One column per *measured quantity*: the metric name plus what changes its meaning, in
  brackets: the feature extractor for generation metrics (``fid[mtdiff-domain]`` and
  ``fid[inception-v3-compat]`` are never mixed), a non-trivial sampling condition
  (``cond_fid[mtdiff-domain, label=balanced]``) and the inference procedure of label/mask
  prediction (``accuracy[head]``, ``accuracy[direct]``).
* The headline value of a (model, seed, column) is the record at the largest
  ``checkpoint_step`` and the headline NFE (``headline_nfe``; default: the most common NFE of
  the non-curve records). Records without an NFE (task metrics, anchors) always qualify. At
  the same step, a main evaluation beats a curve point (``extra.curve``), EMA beats raw
  weights, a larger ``n_generated`` beats a smaller one, and a later record beats an earlier one.
* Each cell is the mean over seeds with a 95% confidence interval from the t-distribution,
  ``t(0.975, n-1) * s / sqrt(n)``; with one seed the CI is NaN (shown as "—").
* Anchors (``real_floor``: real data of the other split vs the reference split;
  ``gaussian_baseline``: an independent-pixel Gaussian) are rows of their own.
* Equal-compute control: parameters, training steps, images seen, wall time and peak memory
  (means over the seeds' ``summary.json``) sit beside the metrics.

The paper's own numbers (:func:`reference_table`, ``mtdiff/paper_reference.csv``) are quoted,
never merged into the measured table.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from mtdiff.errors import ConfigError, MtdiffError


class ReportError(MtdiffError, ValueError):
    """Results needed by the report are missing or malformed."""


# ---------------------------------------------------------------------------------------------
# vocabulary

ANCHORS = ("real_floor", "gaussian_baseline")
SINGLE_TASK = ("ddpm", "ddpm_cond", "classifier", "segmenter")
MULTI_TASK = ("mt_label", "mt_mask", "mt_masked", "mt_all")
MODEL_ORDER = SINGLE_TASK + MULTI_TASK + ANCHORS
MODEL_DESCRIPTIONS = {
    "ddpm": "ddpm (image only)",
    "ddpm_cond": "ddpm_cond (class-conditional)",
    "classifier": "classifier (single task)",
    "segmenter": "segmenter (single task)",
    "mt_label": "mt_label (MT: image + label)",
    "mt_mask": "mt_mask (MT: image + mask)",
    "mt_masked": "mt_masked (MT: image + masked image)",
    "mt_all": "mt_all (MT: image + label + mask)",
    "real_floor": "anchor: real data (train vs test)",
    "gaussian_baseline": "anchor: Gaussian baseline (independent pixels)",
}
# Metrics where smaller is better / larger is better; others (kid_std, unknown) are not ranked.
LOWER_IS_BETTER = {"fid", "kid_mean", "cond_fid", "cond_kid_mean"}
HIGHER_IS_BETTER = {"precision", "recall", "accuracy", "miou", "pixel_accuracy", "cond_accuracy",
                    "coherence_label", "coherence_miou", "isc_mean", "cond_precision", "cond_recall"}
# Task metrics: their bracket holds the inference procedure; procedures of one metric are one family.
TASK_METRICS = ("accuracy", "miou", "pixel_accuracy")
METRIC_ORDER = ("fid", "kid_mean", "kid_std", "precision", "recall", "isc_mean", "isc_std", "cond_fid",
                "cond_kid_mean", "cond_kid_std", "cond_accuracy", "coherence_label", "coherence_miou",
                "accuracy", "miou", "pixel_accuracy")
METRIC_NAMES = {
    "fid": "FID", "kid_mean": "KID", "kid_std": "KID std (subsets)", "precision": "precision",
    "recall": "recall", "isc_mean": "Inception score", "cond_fid": "conditional FID",
    "cond_kid_mean": "conditional KID", "cond_accuracy": "conditional accuracy",
    "coherence_label": "label coherence", "coherence_miou": "mask coherence (mIoU)",
    "accuracy": "test accuracy", "miou": "test mean IoU", "pixel_accuracy": "test pixel accuracy",
}
RESOURCE_COLUMNS = {  # summary.json field -> (table column, display header)
    "parameters": ("parameters", "parameters"),
    "steps": ("steps", "training steps"),
    "images_seen": ("images_seen", "images seen"),
    "wall_s": ("wall_s", "wall time (s)"),
    "peak_memory_mb": ("peak_memory_mb", "peak memory (MB)"),
}
SUMMARY_FIELDS = ("model", "dataset", "seed", "parameters", "steps", "images_seen", "batch_size", "wall_s",
                  "peak_memory_mb", "device", "precision", "world_size", "done")
# inpainting and image + representation: their anchor, models and metrics (mtdiff/report_inpainting.py)
from mtdiff.report_inpainting import extend_vocabulary, write_inpainting_tables  # noqa: E402

ANCHORS = extend_vocabulary(ANCHORS, MODEL_DESCRIPTIONS, LOWER_IS_BETTER, HIGHER_IS_BETTER, METRIC_NAMES)
REPORT_FILES = ("comparison.csv", "comparison.md", "comparison.tex", "paper_reference.csv", "paper_reference.md",
                "findings.md", "report.md", "headline_bars.png", "headline_bars.svg", "training_curves.png",
                "training_curves.svg", "metric_vs_nfe.png", "metric_vs_nfe.svg", "losses.png", "losses.svg")
PAPER_REFERENCE_CSV = Path(__file__).with_name("paper_reference.csv")
DEFAULT_NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "report.ipynb"
DASH = "—"

_MODEL_COLOURS = {
    "ddpm": "#1f77b4", "ddpm_cond": "#17becf", "classifier": "#2ca02c", "segmenter": "#8c564b",
    "mt_label": "#d62728", "mt_mask": "#ff7f0e", "mt_masked": "#9467bd", "mt_all": "#e377c2",
    "real_floor": "#2ca02c", "gaussian_baseline": "#7f7f7f",
}
_EXTRA_COLOURS = ("#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")


def model_kind(model: str) -> str:
    """``"anchor"``, ``"multi-task"`` (``mt_*``) or ``"single-task"``."""
    if model in ANCHORS:
        return "anchor"
    return "multi-task" if model.startswith("mt_") else "single-task"


def model_label(model: str) -> str:
    return MODEL_DESCRIPTIONS.get(model, model)


def model_colour(model: str) -> str:
    if model in _MODEL_COLOURS:
        return _MODEL_COLOURS[model]
    return _EXTRA_COLOURS[sum(map(ord, model)) % len(_EXTRA_COLOURS)]


def metric_direction(metric: str) -> str | None:
    """``"lower"``, ``"higher"`` or None (not ranked, e.g. ``kid_std``)."""
    if metric in LOWER_IS_BETTER:
        return "lower"
    if metric in HIGHER_IS_BETTER:
        return "higher"
    return None


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def column_key(metric: str, extractor=None, condition=None, procedure=None) -> str:
    """Column name of a measured quantity: ``metric[extractor, condition, procedure]`` (parts
    that are missing or trivial, e.g. condition ``none``, are left out)."""
    parts = []
    for q in (extractor, condition, procedure):
        if _is_missing(q):
            continue
        q = str(q)
        if q.lower() in ("", "none", "null"):
            continue
        parts.append(q)
    return f"{metric}[{', '.join(parts)}]" if parts else str(metric)


def parse_column_key(key: str) -> tuple[str, list[str]]:
    """Inverse of :func:`column_key`: ``"fid[a, b]"`` -> ``("fid", ["a", "b"])``."""
    m = re.fullmatch(r"([^\[\]]+)(?:\[(.*)\])?", key)
    if not m:
        return key, []
    quals = [q.strip() for q in m.group(2).split(",")] if m.group(2) else []
    return m.group(1), quals


def metric_family(key: str) -> str:
    """Columns compared against each other in findings and bar panels: a task metric's
    procedures form one family (``accuracy``); every other column is its own family."""
    metric, _ = parse_column_key(key)
    return metric if metric in TASK_METRICS else key


def pretty_column(key: str) -> str:
    metric, quals = parse_column_key(key)
    name = METRIC_NAMES.get(metric, metric)
    return f"{name} [{', '.join(quals)}]" if quals else name


# ---------------------------------------------------------------------------------------------
# statistics


def mean_ci95(values: Iterable[float]) -> tuple[float, float, int, float]:
    """(mean, half-width of the 95% t-interval, n, sample std) of the finite values.

    ``ci95 = t(0.975, n - 1) * std / sqrt(n)`` with the ddof=1 standard deviation; NaN when
    n < 2 (one seed says nothing about the spread)."""
    v = np.asarray([x for x in values if not _is_missing(x)], dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), 0, float("nan")
    mean = float(v.mean())
    if n < 2:
        return mean, float("nan"), n, float("nan")
    from scipy import stats

    std = float(v.std(ddof=1))
    return mean, float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)), n, std


def intervals_overlap(m1, c1, m2, c2) -> bool | None:
    """Whether [m1 - c1, m1 + c1] and [m2 - c2, m2 + c2] overlap; None if a CI is NaN."""
    if any(_is_missing(x) or not math.isfinite(x) for x in (m1, c1, m2, c2)):
        return None
    return (m1 - c1) <= (m2 + c2) and (m2 - c2) <= (m1 + c1)


# ---------------------------------------------------------------------------------------------
# loading


def _iter_jsonl_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out += sorted(p.glob("*.jsonl"))
        else:
            out.append(p)
    return out


_RECORD_COLUMNS = ("dataset", "model", "seed", "checkpoint_step", "ema", "sampler", "nfe", "n_generated",
                   "reference_split", "n_reference", "extractor", "metric", "value", "wall_time_s")


def load_records(paths) -> pd.DataFrame:
    """Metric records of one or several JSONL files (or folders of ``*.jsonl``) as a DataFrame.

    Uses :func:`mtdiff.metrics.records.read_records` (validation; a malformed line raises an
    error naming the file and line). ``extra`` is flattened to ``extra.<key>`` columns; the
    columns ``extra.condition``, ``extra.procedure`` and ``extra.curve`` always exist."""
    files = _iter_jsonl_paths(paths)
    if not files:
        raise ReportError(f"no metric records (*.jsonl) in {paths!s}; run the evaluation first")
    from mtdiff.metrics.records import read_records

    df = read_records(files)
    for c in _RECORD_COLUMNS + ("extra.condition", "extra.procedure", "extra.curve"):
        if c not in df.columns:
            df[c] = None
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df.reset_index(drop=True)


def _seed_from_dir(name: str):
    m = re.fullmatch(r"seed(\d+)", name)
    return int(m.group(1)) if m else None


def load_summaries(root, dataset: str) -> pd.DataFrame:
    """Training summaries ``root/dataset/train/<model>/seed<k>/summary.json`` (one row each;
    empty frame with the summary columns when there are none)."""
    rows = []
    for p in sorted(Path(root, dataset, "train").glob("*/seed*/summary.json")):
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ReportError(f"{p}: malformed summary JSON ({e}); rerun the training job or delete the file") from None
        if not isinstance(d, dict):
            raise ReportError(f"{p}: a summary must be a JSON object")
        d.setdefault("model", p.parent.parent.name)
        if d.get("seed") is None:
            d["seed"] = _seed_from_dir(p.parent.name)
        d["path"] = str(p)
        rows.append(d)
    df = pd.DataFrame(rows)
    for c in SUMMARY_FIELDS:
        if c not in df.columns:
            df[c] = pd.Series(dtype=float)
    return df


def load_train_logs(root, dataset: str) -> pd.DataFrame:
    """All ``train_log.jsonl`` files of a dataset, with ``model`` and ``seed`` columns.

    A malformed line raises an error naming file and line, except an unterminated last line
    (a run killed mid-write), which is skipped with a warning."""
    frames = []
    for p in sorted(Path(root, dataset, "train").glob("*/seed*/train_log.jsonl")):
        model, seed = p.parent.parent.name, _seed_from_dir(p.parent.name)
        text = p.read_text(encoding="utf-8")
        lines = text.split("\n")
        rows = []
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                if lineno == len(lines) and not text.endswith("\n"):
                    warnings.warn(f"{p}:{lineno}: skipped an unfinished last line", stacklevel=2)
                    continue
                raise ReportError(f"{p}:{lineno}: malformed JSON line ({e.msg}); fix or delete that line") from None
            rows.append(rec)
        if rows:
            df = pd.DataFrame(rows)
            df.insert(0, "seed", seed)
            df.insert(0, "model", model)
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["model", "seed", "step", "kimg", "loss"])
    return pd.concat(frames, ignore_index=True)


def find_sample_grids(root, dataset: str) -> list[dict]:
    """``[{"model", "seed", "path"}]`` of the sample grids, in model order."""
    out = []
    for p in Path(root, dataset, "samples").glob("*/seed*/grid.png"):
        out.append({"model": p.parent.parent.name, "seed": _seed_from_dir(p.parent.name), "path": p})
    return sorted(out, key=lambda d: (_model_rank(d["model"]), d["model"], d["seed"] if d["seed"] is not None else -1))


def _model_rank(model: str) -> float:
    return MODEL_ORDER.index(model) if model in MODEL_ORDER else len(SINGLE_TASK) + len(MULTI_TASK) - 0.5


# ---------------------------------------------------------------------------------------------
# headline selection


def _with_columns(records: pd.DataFrame) -> pd.DataFrame:
    df = records.copy()
    for c in ("extra.condition", "extra.procedure", "extra.curve", "extractor", "nfe", "checkpoint_step",
              "n_generated", "ema", "sampler"):
        if c not in df.columns:
            df[c] = None
    df = df[df["value"].notna()]
    df["column"] = [column_key(m, e, c, p) for m, e, c, p in
                    zip(df["metric"], df["extractor"], df["extra.condition"], df["extra.procedure"])]
    df["_order"] = np.arange(len(df))
    df["_is_curve"] = df["extra.curve"].map(lambda v: not _is_missing(v))
    return df


def default_headline_nfe(records: pd.DataFrame) -> int | None:
    """The most common NFE of the main (non-curve) records (ties: the larger); None if no
    record has an NFE."""
    df = _with_columns(records)
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
    df = _with_columns(records)
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


def _unique_or_mixed(s: pd.Series):
    vals = [v for v in s.tolist() if not _is_missing(v)]
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
            "seeds": [int(s) for s in g["seed"]], "extractor": _unique_or_mixed(g["extractor"]),
            "condition": _unique_or_mixed(g["extra.condition"]), "procedure": _unique_or_mixed(g["extra.procedure"]),
            "n_generated": _unique_or_mixed(g["n_generated"]), "n_reference": _unique_or_mixed(g["n_reference"]),
            "reference_split": _unique_or_mixed(g["reference_split"]), "nfe": _unique_or_mixed(g["nfe"]),
            "sampler": _unique_or_mixed(g["sampler"]), "checkpoint_step": _unique_or_mixed(g["checkpoint_step"]),
        })
    return pd.DataFrame(rows)


def _column_sort_key(col: str):
    """Generation metrics first, grouped by extractor (the domain extractor first), then the
    metrics judged without an extractor (task metrics, conditional accuracy, coherence)."""
    metric, quals = parse_column_key(col)
    m = METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER)
    judged = metric in TASK_METRICS or metric in ("cond_accuracy", "coherence_label", "coherence_miou")
    ext = "" if judged or not quals else ("0" if quals[0] == "mtdiff-domain" else "1" + quals[0])
    return (int(judged), ext, m, metric, ",".join(quals))


# ---------------------------------------------------------------------------------------------
# the comparison table


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
    stats = headline_stats(head)
    if stats.empty:
        raise ReportError("no finite metric values to tabulate")
    columns = sorted(stats["column"].unique(), key=_column_sort_key)
    models = sorted(stats["model"].unique(), key=lambda m: (_model_rank(m), m))
    if summaries is not None and len(summaries):
        models += sorted((set(summaries["model"].dropna()) - set(models)), key=lambda m: (_model_rank(m), m))
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
        gen = gen[[not _is_missing(v) for v in gen]]
        ns = set(gen)
        if parse_column_key(col)[0] not in TASK_METRICS and (len(ns) > 1 or "mixed" in ns):
            notes.append(f"{col}: models were evaluated on different numbers of generated images "
                         f"({', '.join(f'{m}={v}' for m, v in gen.items())}); FID/KID are biased in N, compare with care")
    seeds_per_model = head.groupby("model")["seed"].nunique()
    table["n_seeds"] = seeds_per_model.reindex(models).fillna(0).astype(int)
    # real-data anchor label names the splits it was computed from
    if "real_floor" in models:
        rf = head[head["model"] == "real_floor"]
        frm = _unique_or_mixed(rf["extra.images_from"]) if "extra.images_from" in rf.columns else None
        ref = _unique_or_mixed(rf["reference_split"])
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
    table.attrs.update(dataset=dataset, headline_nfe=nfe, metric_columns=list(columns),
                       stats=json.dumps(stats.to_dict("records"), default=_json_default), notes=notes)
    return table


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


def _decimals(values) -> int:
    v = np.abs(np.asarray([x for x in values if not _is_missing(x) and math.isfinite(x)], dtype=float))
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
    if _is_missing(mean) or not math.isfinite(mean):
        return DASH
    if _is_missing(ci) or not math.isfinite(ci):
        return f"{mean:.{decimals}f} ± {DASH}"
    return f"{mean:.{decimals}f} ± {ci:.{decimals}f}"


def _human(n, unit: str = "") -> str:
    if _is_missing(n) or not math.isfinite(n):
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
        d = _decimals(table[f"{col}_mean"])
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
            out[header] = [_human(v) for v in vals]
        elif field == "steps":
            out[header] = [DASH if _is_missing(v) or not math.isfinite(v) else f"{int(round(v)):,}" for v in vals]
        elif field == "wall_s":
            out[header] = [DASH if _is_missing(v) or not math.isfinite(v) else f"{v:,.0f}" for v in vals]
        else:
            out[header] = [DASH if _is_missing(v) or not math.isfinite(v) else f"{v:,.1f}" for v in vals]
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


def _atomic_write(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def table_caption(table: pd.DataFrame) -> str:
    ds = table.attrs.get("dataset") or "?"
    nfe = table.attrs.get("headline_nfe")
    return (f"{ds}: headline metrics, mean ± 95% CI (t-distribution) over seeds; largest checkpoint step, "
            f"nfe={nfe if nfe is not None else DASH}. Generation metrics name their feature extractor in brackets "
            f"(never comparable across extractors); ↓ lower is better, ↑ higher is better; {DASH}: not measured, "
            f"or CI undefined with one seed.")


def write_tables(df: pd.DataFrame, out_dir, stem: str, *, caption: str | None = None) -> dict[str, Path]:
    """Write a comparison table as ``<stem>.csv`` (raw numbers: ``*_mean``, ``*_ci95``, ``*_n``),
    ``<stem>.md`` (formatted ``12.3 ± 0.4``) and ``<stem>.tex`` (booktabs, escaped).

    A table without ``*_mean`` columns (e.g. :func:`reference_table`) is written as it is."""
    out_dir = Path(out_dir)
    is_comparison = bool(metric_columns(df))
    caption = caption if caption is not None else (table_caption(df) if is_comparison else None)
    paths = {"csv": out_dir / f"{stem}.csv", "md": out_dir / f"{stem}.md", "tex": out_dir / f"{stem}.tex"}
    _atomic_write(paths["csv"], df.to_csv(index=is_comparison))
    shown = format_table(df) if is_comparison else df.fillna(DASH).astype(str)
    md = shown.to_markdown(index=False, disable_numparse=True)
    _atomic_write(paths["md"], (f"{caption}\n\n" if caption else "") + md + "\n")
    tex_df = shown.map(latex_escape)
    tex_df.columns = [latex_escape(c) for c in shown.columns]
    align = "l" + ("l" * (1 if is_comparison else 0)) + "r" * (len(shown.columns) - 1 - (1 if is_comparison else 0))
    if not is_comparison:
        align = "l" * len(shown.columns)
    tex = tex_df.to_latex(index=False, escape=False, column_format=align)
    if caption:
        tex = (f"% {latex_escape(caption)}\n% requires \\usepackage{{booktabs}}\n" + tex)
    _atomic_write(paths["tex"], tex)
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
    return {"csv": _atomic_write(out_dir / f"{stem}.csv", ref.drop(columns=["value_min", "value_max"]).to_csv(index=False)),
            "md": _atomic_write(out_dir / f"{stem}.md", md)}


# ---------------------------------------------------------------------------------------------
# findings


def _entries(table: pd.DataFrame) -> list[dict]:
    """(model, column, family, mean, ci95, n) of every finite cell."""
    out = []
    for col in metric_columns(table):
        for m in table.index:
            mean = table.loc[m, f"{col}_mean"]
            if _is_missing(mean) or not math.isfinite(mean):
                continue
            n = int(table.loc[m, f"{col}_n"]) if f"{col}_n" in table.columns else None
            out.append({"model": m, "column": col, "family": metric_family(col), "mean": float(mean),
                        "ci95": float(table.loc[m, f"{col}_ci95"]), "n": n})
    return out


def _who(e: dict) -> str:
    """Model name, plus the procedure for task metrics (``mt_label (head)``)."""
    metric, quals = parse_column_key(e["column"])
    return f"{e['model']} ({', '.join(quals)})" if metric in TASK_METRICS and quals else e["model"]


def _fmt(e: dict, decimals: int, paren: bool = False) -> str:
    s = format_mean_ci(e["mean"], e["ci95"], decimals)
    if e.get("n") is None:
        return s
    return s + (f" (n={e['n']})" if paren else f", n={e['n']}")


PAIRS = (  # (multi-task model, single-task counterpart, primary metrics compared)
    ("mt_label", "ddpm", ("fid",)),
    ("mt_mask", "ddpm", ("fid",)),
    ("mt_masked", "ddpm", ("fid",)),
    ("mt_all", "ddpm", ("fid",)),
    ("mt_label", "ddpm_cond", ("cond_fid", "cond_accuracy")),
    ("mt_all", "ddpm_cond", ("cond_fid", "cond_accuracy")),
    ("mt_label", "classifier", ("accuracy",)),
    ("mt_all", "classifier", ("accuracy",)),
    ("mt_mask", "segmenter", ("miou",)),
    ("mt_all", "segmenter", ("miou",)),
)


def _verdict(a: dict, b: dict, direction: str) -> tuple[str, bool]:
    better = a["mean"] < b["mean"] if direction == "lower" else a["mean"] > b["mean"]
    ov = intervals_overlap(a["mean"], a["ci95"], b["mean"], b["ci95"])
    return ("no CI (a single seed): no clear difference can be claimed" if ov is None
            else "the 95% CIs overlap: no clear difference" if ov
            else "the 95% CIs do not overlap: a clear difference"), better


def findings(table: pd.DataFrame) -> list[str]:
    """A short reading of the comparison table, computed only from its numbers:

    * per metric (family): the best model and whether its 95% CI overlaps the runner-up's;
    * each MT model against its single-task counterpart (with the compute beside it);
    * each FID/KID relative to the anchors (share of the way from the Gaussian baseline to the
      real-data floor);
    * protocol notes collected while building the table."""
    out: list[str] = []
    entries = _entries(table)
    nfe = table.attrs.get("headline_nfe")
    ns = sorted({int(table.loc[m, "n_seeds"]) for m in table.index
                 if m not in ANCHORS and "n_seeds" in table.columns and table.loc[m, "n_seeds"] > 0})
    if ns:
        nrange = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        out.append(f"Headline values: largest checkpoint step{f', nfe={nfe}' if nfe is not None else ''}; "
                   f"mean ± 95% CI (t-distribution) over {nrange} seed(s) per model.")
    decimals = {col: _decimals(table[f"{col}_mean"]) for col in metric_columns(table)}
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
            out.append(f"{fam}: only {_who(best)} measured ({_fmt(best, d)}).")
            continue
        second = cands[1]
        ov = intervals_overlap(best["mean"], best["ci95"], second["mean"], second["ci95"])
        head = f"{fam} ({direction} is better): {_who(best)} has the {extreme} value ({_fmt(best, d)})"
        if best["mean"] == second["mean"]:
            out.append(f"{head}, tied with {_who(second)}: no winner.")
        elif ov is None:
            out.append(f"{head}; runner-up {_who(second)} ({_fmt(second, d)}); no CI with a single seed: "
                       f"no clear winner can be claimed.")
        elif ov:
            out.append(f"{head} but its 95% CI overlaps that of {_who(second)} ({_fmt(second, d)}): no clear winner.")
        else:
            out.append(f"{head} and its 95% CI does not overlap that of the runner-up {_who(second)} "
                       f"({_fmt(second, d)}): {_who(best)} is clearly best.")
    # 2. MT models against their single-task counterparts
    by = {(e["model"], e["column"]): e for e in entries}
    for mt, base, metrics in PAIRS:
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
                lines.append(f"{_who(e)} vs {_who(r)} on {e['family'] if metric in TASK_METRICS else e['column']} "
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


def _compute_line(table: pd.DataFrame, a: str, b: str) -> str | None:
    if a not in table.index or b not in table.index:
        return None
    parts = []
    for col, name in (("parameters", "parameters"), ("images_seen", "images seen"), ("wall_s", "wall time"),
                      ("peak_memory_mb", "peak memory")):
        if col not in table.columns:
            continue
        va, vb = table.loc[a, col], table.loc[b, col]
        if _is_missing(va) or _is_missing(vb) or not (math.isfinite(va) and math.isfinite(vb)):
            continue
        if col in ("wall_s", "peak_memory_mb"):
            unit = " s" if col == "wall_s" else " MB"
            a_s, b_s = f"{va:,.0f}{unit}", f"{vb:,.0f}{unit}"
        else:
            a_s, b_s = _human(va), _human(vb)
        ratio = f" (x{va / vb:.2f})" if vb else ""
        parts.append(f"{name} {a_s} vs {b_s}{ratio}")
    return f"Compute, {a} vs {b}: " + "; ".join(parts) + "." if parts else None


# ---------------------------------------------------------------------------------------------
# plots


def _style():
    import contextlib

    import seaborn as sns

    stack = contextlib.ExitStack()
    stack.enter_context(sns.axes_style("whitegrid"))
    stack.enter_context(sns.plotting_context("notebook", font_scale=0.85))
    import matplotlib as mpl

    stack.enter_context(mpl.rc_context({"svg.fonttype": "none", "axes.titleweight": "bold",
                                        "axes.titlesize": 10.5, "figure.titlesize": 12, "legend.fontsize": 9,
                                        "svg.hashsalt": "mtdiff", "path.simplify": True}))
    return stack


def _figure(n_panels: int, ncols: int, w: float, h: float, extra_h: float = 0.0):
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(max(w * ncols, 8.5), h * nrows + extra_h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def _save(fig, out_dir, stem: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{stem}.{ext}"
        tmp = out_dir / f".{stem}.tmp.{ext}"
        fig.savefig(tmp, dpi=150 if ext == "png" else None, metadata={"Date": None} if ext == "svg" else None)
        os.replace(tmp, p)
        paths.append(p)
        fig.set_layout_engine("none")  # the constrained layout is computed: keep it for the next format
    return paths


def _placeholder(out_dir, stem: str, title: str, message: str) -> list[Path]:
    with _style():
        fig, (ax,) = _figure(1, 1, 6.0, 2.2)
        ax.axis("off")
        ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, color="#555555",
                transform=ax.transAxes)
        _suptitle(fig, title)
        return _save(fig, out_dir, stem)


def _model_style(model: str) -> dict:
    mt = model_kind(model) == "multi-task"
    return {"color": model_colour(model), "linestyle": "--" if mt else "-", "marker": "s" if mt else "o"}


def _agg_over_seeds(df: pd.DataFrame, by: list[str], value: str = "value") -> pd.DataFrame:
    rows = []
    for key, g in df.groupby(by, sort=True):
        mean, ci, n, _ = mean_ci95(g[value])
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "mean": mean, "ci95": 0.0 if math.isnan(ci) else ci, "n": n})
    return pd.DataFrame(rows)


def _maybe_log(ax, values, axis: str = "y", ratio: float = 30.0) -> None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size and v.min() > 0 and v.max() / v.min() > ratio:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        a = ax.yaxis if axis == "y" else ax.xaxis
        # plain numbers at 1, 2, 5 x 10^k (readable FIDs: 5, 10, 20, 50, ...), not 10^k labels
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        a.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        a.set_minor_formatter(NullFormatter())


def _panel_title(col: str, n_gen=None, direction=None) -> str:
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


def _legend_below(fig, handles, labels) -> None:
    """One legend for all panels, under them; as many columns as the width holds."""
    if not handles:
        return
    longest = max(len(str(x)) for x in labels)
    per_col = 0.75 + 0.075 * longest  # inches at legend.fontsize 9
    ncol = max(1, min(len(handles), int(fig.get_figwidth() // per_col)))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)


def _suptitle(fig, text: str) -> None:
    """Figure title wrapped to the figure's width (constrained layout does not wrap it)."""
    import textwrap

    fig.suptitle(textwrap.fill(text, width=max(40, int(fig.get_figwidth() * 9.5))))


def _curve_rows(records: pd.DataFrame, headline_nfe) -> tuple[pd.DataFrame, int | None]:
    df = _with_columns(records)
    nfe = headline_nfe if headline_nfe is not None else default_headline_nfe(df)
    return df, nfe


def _images_per_step(summaries: pd.DataFrame | None) -> dict:
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


def _curve_points(g: pd.DataFrame, x: str) -> tuple[pd.DataFrame, float | None]:
    """One curve per (model, seed) along ``x``: only the most common N (n_generated), and at
    each x the preferred duplicate (EMA first, then the latest record), as for headlines."""
    g = g.copy()
    n_main = None
    if g["n_generated"].notna().any():
        n_main = g["n_generated"].mode().iloc[0]
        g = g[g["n_generated"].isna() | (g["n_generated"] == n_main)].copy()
    g["_ema"] = g["ema"].map(lambda v: v is True)
    return g.sort_values(["_ema", "_order"]).groupby(["model", "seed", x]).tail(1), n_main


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
    dataset = dataset or _single(df.get("dataset"))
    title = f"{dataset or ''}: metric vs training".strip(": ")
    pts = df[df["checkpoint_step"].notna() & ~df["model"].isin(ANCHORS)]
    if nfe is not None:
        pts = pts[pts["nfe"].isna() | (pts["nfe"] == nfe)]
    cols = []
    for col, g in pts.groupby("column"):
        if metric_direction(parse_column_key(col)[0]) is None:
            continue
        if (g.groupby(["model", "seed"])["checkpoint_step"].nunique() >= 2).any():
            cols.append(col)
    cols.sort(key=_column_sort_key)
    if not cols:
        return _placeholder(out_dir, stem, title, "no records at two or more checkpoint steps\n"
                            "(run the curve evaluation: mtdiff evaluate curve --what steps)") if placeholder else []
    ips = _images_per_step(summaries)
    anchors = df[df["model"].isin(ANCHORS)]
    use_images = x == "images_seen"
    with _style():
        fig, axes = _figure(len(cols), 2, 5.4, 3.7, extra_h=0.5)
        handles: dict[str, object] = {}
        nseeds = set()
        for ax, col in zip(axes, cols):
            g, n_main = _curve_points(pts[pts["column"] == col], "checkpoint_step")
            xs = []
            for _, r in g.iterrows():
                v = None
                if use_images:
                    v = r.get("extra.images_seen") if "extra.images_seen" in g.columns else None
                    if _is_missing(v):
                        k = ips.get((r["model"], r["seed"]))
                        v = r["checkpoint_step"] * k if k else None
                xs.append(v)
            if use_images and all(v is not None and not _is_missing(v) for v in xs):
                g["_x"] = np.asarray(xs, dtype=float)
                xlabel = "training images seen"
            else:
                g["_x"] = g["checkpoint_step"].astype(float)
                xlabel = "training step" + (" (images seen unknown)" if use_images else "")
            allv = list(g["value"])
            direction = metric_direction(parse_column_key(col)[0])
            for model in sorted(g["model"].unique(), key=lambda m: (_model_rank(m), m)):
                gm = g[g["model"] == model]
                agg = _agg_over_seeds(gm, ["checkpoint_step"])
                agg["_x"] = gm.groupby("checkpoint_step")["_x"].mean().reindex(agg["checkpoint_step"]).to_numpy()
                agg = agg.sort_values("_x")
                st = _model_style(model)
                n = gm["seed"].nunique()
                nseeds.add(n)
                (line,) = ax.plot(agg["_x"], agg["mean"], label=model, markersize=4, linewidth=1.8, **st)
                ax.fill_between(agg["_x"], agg["mean"] - agg["ci95"], agg["mean"] + agg["ci95"],
                                color=st["color"], alpha=0.15, linewidth=0)
                handles.setdefault(f"{model} ({model_kind(model)}, n={n})", line)
                allv += list(agg["mean"] - agg["ci95"]) + list(agg["mean"] + agg["ci95"])
            allv += _draw_anchor_lines(ax, anchors, col, handles, orientation="h")
            _maybe_log(ax, allv)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(METRIC_NAMES.get(parse_column_key(col)[0], parse_column_key(col)[0]))
            ax.set_title(_panel_title(col, _int_or(n_main), direction))
            if use_images and xlabel == "training images seen":
                from matplotlib.ticker import EngFormatter

                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        _legend_below(fig, list(handles.values()), list(handles.keys()))
        _suptitle(fig, f"{title} (nfe={nfe}; mean ± 95% CI over {_range(nseeds)} seeds)")
        return _save(fig, out_dir, stem)


def _int_or(v):
    if v is None or _is_missing(v):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return v


def _range(ns) -> str:
    ns = sorted(ns)
    if not ns:
        return "0"
    return str(ns[0]) if ns[0] == ns[-1] else f"{ns[0]}-{ns[-1]}"


def _single(s):
    if s is None:
        return None
    vals = [v for v in pd.Series(s).dropna().unique()]
    return vals[0] if len(vals) == 1 else None


_ANCHOR_LINE = {"real_floor": dict(color="#2ca02c", linestyle=":", linewidth=1.6),
                "gaussian_baseline": dict(color="#555555", linestyle="-.", linewidth=1.4),
                "nearest_neighbour": dict(color="#8c564b", linestyle="--", linewidth=1.4)}  # inpainting anchor


def _draw_anchor_lines(ax, anchors: pd.DataFrame, col: str, handles: dict, orientation="h") -> list[float]:
    """Anchor values of ``col`` (mean over seeds) as reference lines; returns the values."""
    vals = []
    a = anchors[anchors["column"] == col] if len(anchors) else anchors
    for model in ANCHORS:
        v = a.loc[a["model"] == model, "value"] if len(a) else []
        if len(v) == 0:
            continue
        mean = float(np.mean(v))
        line = ax.axhline(mean, **_ANCHOR_LINE[model], zorder=1)
        handles.setdefault(model_label(model), line)
        vals.append(mean)
    return vals


def plot_metric_vs_nfe(records: pd.DataFrame, out_dir, *, dataset: str | None = None, stem: str = "metric_vs_nfe",
                       placeholder: bool = True) -> list[Path]:
    """Metric vs number of function evaluations at each (model, seed)'s last checkpoint: one
    panel per column with two or more NFE values, mean ± 95% CI over seeds, anchors as lines."""
    df = _with_columns(records)
    dataset = dataset or _single(df.get("dataset"))
    title = f"{dataset or ''}: metric vs NFE".strip(": ")
    pts = df[df["nfe"].notna() & ~df["model"].isin(ANCHORS)].copy()
    if len(pts):
        pts["_step"] = pts["checkpoint_step"].fillna(-1)
        last = pts.groupby(["model", "seed", "column"])["_step"].transform("max")
        pts = pts[pts["_step"] == last]
    cols = []
    for col, g in pts.groupby("column"):
        if metric_direction(parse_column_key(col)[0]) is None:
            continue
        if (g.groupby(["model", "seed"])["nfe"].nunique() >= 2).any():
            cols.append(col)
    cols.sort(key=_column_sort_key)
    if not cols:
        return _placeholder(out_dir, stem, title, "no records at two or more NFE values\n"
                            "(run the curve evaluation: mtdiff evaluate curve --what nfe)") if placeholder else []
    anchors = df[df["model"].isin(ANCHORS)]
    with _style():
        from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

        fig, axes = _figure(len(cols), 2, 5.4, 3.7, extra_h=0.5)
        handles: dict[str, object] = {}
        nseeds = set()
        for ax, col in zip(axes, cols):
            g, n_main = _curve_points(pts[pts["column"] == col], "nfe")
            allv = list(g["value"])
            direction = metric_direction(parse_column_key(col)[0])
            for model in sorted(g["model"].unique(), key=lambda m: (_model_rank(m), m)):
                gm = g[g["model"] == model]
                agg = _agg_over_seeds(gm, ["nfe"]).sort_values("nfe")
                st = _model_style(model)
                n = gm["seed"].nunique()
                nseeds.add(n)
                (line,) = ax.plot(agg["nfe"], agg["mean"], markersize=4, linewidth=1.8, **st)
                ax.fill_between(agg["nfe"], agg["mean"] - agg["ci95"], agg["mean"] + agg["ci95"], color=st["color"],
                                alpha=0.15, linewidth=0)
                handles.setdefault(f"{model} ({model_kind(model)}, n={n})", line)
                allv += list(agg["mean"] - agg["ci95"]) + list(agg["mean"] + agg["ci95"])
            allv += _draw_anchor_lines(ax, anchors, col, handles)
            _maybe_log(ax, allv)
            ticks = sorted(int(v) for v in g["nfe"].unique())
            if ticks[-1] / max(ticks[0], 1) > 4:
                ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(ticks))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.set_xlabel("NFE (network evaluations per sample)")
            ax.set_ylabel(METRIC_NAMES.get(parse_column_key(col)[0], parse_column_key(col)[0]))
            ax.set_title(_panel_title(col, _int_or(n_main), direction))
        _legend_below(fig, list(handles.values()), list(handles.keys()))
        _suptitle(fig, f"{title} (last checkpoint; mean ± 95% CI over {_range(nseeds)} seeds)")
        return _save(fig, out_dir, stem)


def plot_bars(table: pd.DataFrame, out_dir, *, dataset: str | None = None, stem: str = "headline_bars",
              placeholder: bool = True) -> list[Path]:
    """Headline metrics as bars with 95% CI error bars and each seed's value as a dot: one
    panel per ranked metric family (a task metric's procedures share a panel); anchors as
    horizontal reference lines; log scale where values span more than 30x."""
    dataset = dataset or table.attrs.get("dataset")
    nfe = table.attrs.get("headline_nfe")
    stats = {(s["model"], s["column"]): s for s in table_stats(table)}
    entries = [e for e in _entries(table) if metric_direction(parse_column_key(e["column"])[0]) is not None]
    fams: dict[str, list[dict]] = {}
    for e in entries:
        fams.setdefault(e["family"], []).append(e)
    fam_list = [f for f in sorted(fams, key=_column_sort_key) if any(e["model"] not in ANCHORS for e in fams[f])]
    title = f"{dataset or ''}: headline metrics".strip(": ")
    if not fam_list:
        return _placeholder(out_dir, stem, title, "no ranked metrics in the table") if placeholder else []
    with _style():
        fig, axes = _figure(len(fam_list), 3, 4.3, 3.9, extra_h=0.4)
        handles: dict[str, object] = {}
        nseeds = set()
        for ax, fam in zip(axes, fam_list):
            es = sorted([e for e in fams[fam] if e["model"] not in ANCHORS],
                        key=lambda e: (_model_rank(e["model"]), e["model"], e["column"]))
            metric = parse_column_key(es[0]["column"])[0]
            direction = metric_direction(metric)
            xs = np.arange(len(es))
            allv = []
            for i, e in enumerate(es):
                st = _model_style(e["model"])
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
                line = ax.axhline(a["mean"], **_ANCHOR_LINE[a["model"]], zorder=1)
                handles.setdefault(model_label(a["model"]), line)
                allv.append(a["mean"])
            lo, hi = min(0.0, min(allv)), max(allv)
            ax.set_ylim(lo, hi * 1.12 if hi > 0 else 1.0)
            ax.set_xlim(-0.6, max(len(es), 2.2) - 0.4)
            ax.set_xticks(xs)
            ax.set_xticklabels([_who(e) for e in es], rotation=35, ha="right", rotation_mode="anchor")
            ax.grid(axis="x", visible=False)
            n_gen = None
            cols = {e["column"] for e in es}
            if len(cols) == 1 and (es[0]["model"], es[0]["column"]) in stats:
                n_gen = _unique_or_mixed(pd.Series([stats[(e["model"], e["column"])]["n_generated"] for e in es]))
            ptitle = _panel_title(fam if metric in TASK_METRICS else es[0]["column"], _int_or(n_gen), direction)
            d = _decimals([a["mean"] for a in fams[fam]])
            for a in off_scale:
                name = "Gaussian baseline" if a["model"] == "gaussian_baseline" else model_label(a["model"])
                ptitle += f"\n{name} {a['mean']:.{d}f} (off scale)"
            ax.set_title(ptitle)
        _legend_below(fig, list(handles.values()), list(handles.keys()))
        _suptitle(fig, f"{title} (largest step{f', nfe={nfe}' if nfe is not None else ''}; bars: mean ± 95% CI over "
                     f"{_range(nseeds)} seeds; dots: seeds; hatched: MT)")
        return _save(fig, out_dir, stem)


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
        return _placeholder(out_dir, stem, title, "no training logs (train_log.jsonl)") if placeholder else []
    loss_cols = ["loss"] + sorted(c for c in loss_cols if c != "loss") if "loss" in loss_cols else sorted(loss_cols)
    xcol = "kimg" if "kimg" in logs.columns and logs["kimg"].notna().all() else "step"
    with _style():
        fig, axes = _figure(len(loss_cols), 3, 4.6, 3.4, extra_h=0.5)
        handles: dict[str, object] = {}
        nseeds = set()
        for ax, lc in zip(axes, loss_cols):
            allv = []
            for model in sorted(logs["model"].unique(), key=lambda m: (_model_rank(m), m)):
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
                st = _model_style(model)
                n = gm["seed"].nunique()
                nseeds.add(n)
                (line,) = ax.plot(agg["_x"], agg["mean"], color=st["color"], linestyle=st["linestyle"], linewidth=1.5)
                if n > 1:
                    ax.fill_between(agg["_x"], agg["lo"], agg["hi"], color=st["color"], alpha=0.15, linewidth=0)
                handles.setdefault(f"{model} ({model_kind(model)}, n={n})", line)
                allv += list(agg["lo"]) + list(agg["hi"])
            _maybe_log(ax, allv, ratio=10)
            if xcol == "kimg":
                from matplotlib.ticker import EngFormatter

                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.set_xlabel("training images seen" if xcol == "kimg" else "training step")
            ax.set_ylabel("loss")
            ax.set_title("total loss" if lc == "loss" else f"{lc[5:]} term")
        _legend_below(fig, list(handles.values()), list(handles.keys()))
        _suptitle(fig, f"{title} (moving average; line: mean, band: range over {_range(nseeds)} seeds)")
        return _save(fig, out_dir, stem)


# ---------------------------------------------------------------------------------------------
# the whole report


def build_report(root, dataset: str, out_dir, *, headline_nfe: int | None = None) -> dict[str, Path]:
    """Everything of one dataset into ``out_dir``: the files of :data:`REPORT_FILES` (tables,
    quoted paper numbers, plots as PNG and SVG, findings.md and a report.md that links them).
    Plots without data are written as placeholders, so the file list is fixed. Returns
    ``{file name: path}`` plus ``grid:<model>/seed<k>`` entries for the sample grids found."""
    return make_report(root, dataset, out_dir, headline_nfe=headline_nfe)["files"]


def make_report(root, dataset: str, out_dir, *, headline_nfe: int | None = None) -> dict:
    """:func:`build_report` returning also what it computed: ``{"files": {name: path},
    "table": comparison table, "findings": [str], "grids": [{"model", "seed", "path"}],
    "plots": {name: [png, svg]}}``."""
    root, out_dir = Path(root), Path(out_dir)
    metrics_dir = root / dataset / "metrics"
    files = sorted(metrics_dir.glob("*.jsonl"))
    if not files:
        raise ReportError(f"no metric records in {metrics_dir} (expected *.jsonl); run the evaluation for "
                          f"dataset {dataset!r} first, or check --root")
    records = load_records(files)
    summaries = load_summaries(root, dataset)
    logs = load_train_logs(root, dataset)
    table = comparison_table(records, summaries, headline_nfe=headline_nfe, dataset=dataset)
    nfe = table.attrs["headline_nfe"]
    written: dict[str, Path] = {}
    for p in write_tables(table, out_dir, "comparison").values():
        written[p.name] = p
    for p in write_reference_table(out_dir).values():
        written[p.name] = p
    ds_records = records[records["dataset"] == dataset]
    plots = {
        "headline_bars": plot_bars(table, out_dir, dataset=dataset),
        "training_curves": plot_training_curves(ds_records, out_dir, summaries=summaries, headline_nfe=nfe,
                                                dataset=dataset),
        "metric_vs_nfe": plot_metric_vs_nfe(ds_records, out_dir, dataset=dataset),
        "losses": plot_losses(logs, out_dir, dataset=dataset),
    }
    for paths in plots.values():
        for p in paths:
            written[p.name] = p
    written.update(write_inpainting_tables(ds_records, out_dir))  # mtdiff/report_inpainting.py
    lines = findings(table)
    fmd = f"# Findings: {dataset}\n\nComputed from the comparison table only (no hand-written claims).\n\n" + \
          "".join(f"- {line}\n" for line in lines)
    written["findings.md"] = _atomic_write(out_dir / "findings.md", fmd)
    grids = find_sample_grids(root, dataset)
    for g in grids:
        written[f"grid:{g['model']}/seed{g['seed']}"] = g["path"]
    written["report.md"] = _atomic_write(out_dir / "report.md", _report_md(dataset, table, lines, plots, grids, out_dir))
    return {"files": written, "table": table, "findings": lines, "grids": grids, "plots": plots}


def _rel(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path, start).replace(os.sep, "/")
    except ValueError:
        return str(path)


def _report_md(dataset, table, lines, plots, grids, out_dir) -> str:
    md = [f"# mtdiff report: {dataset}", "", table_caption(table), "",
          format_table(table).to_markdown(index=False, disable_numparse=True), "",
          "Raw numbers: [comparison.csv](comparison.csv); LaTeX: [comparison.tex](comparison.tex).", "",
          "## Findings", "", *[f"- {x}" for x in lines], "", "## Plots", ""]
    for name, paths in plots.items():
        png = [p for p in paths if p.suffix == ".png"]
        if png:
            md += [f"![{name}]({_rel(png[0], out_dir)})", ""]
    if grids:
        md += ["## Sample grids", ""]
        for g in grids:
            md += [f"**{g['model']}**, seed {g['seed']}", "", f"![{g['model']} seed {g['seed']}]({_rel(g['path'], out_dir)})", ""]
    md += ["## The paper's numbers (quoted, not reproduced)", "",
           "See [paper_reference.md](paper_reference.md): " + QUOTED_NOTE + ".", ""]
    return "\n".join(md)


# ---------------------------------------------------------------------------------------------
# the notebook


def render_notebook(out_html=None, *, root="results", datasets: Sequence[str] = ("digits",),
                    headline_nfe: int | None = None, notebook=None, out_ipynb=None, timeout: int = 600,
                    kernel_name: str = "python3", show_code: bool = False) -> dict[str, Path]:
    """Execute the report notebook (``notebooks/report.ipynb``) for ``datasets`` under ``root``
    with the papermill convention (a cell tagged ``injected-parameters`` after the one tagged
    ``parameters``), save the executed notebook (``out_ipynb``) and/or its HTML (``out_html``;
    a self-contained page, code cells hidden unless ``show_code``)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    if isinstance(datasets, str):
        datasets = [datasets]
    nb_path = Path(notebook) if notebook is not None else DEFAULT_NOTEBOOK
    if not nb_path.is_file():
        raise ReportError(f"report notebook {str(nb_path)!r} not found; pass --notebook")
    if out_html is None and out_ipynb is None:
        raise ConfigError("render_notebook needs out_html and/or out_ipynb")
    nb = nbformat.read(nb_path, as_version=4)
    params = {"root": str(Path(root).resolve()), "datasets": list(datasets), "headline_nfe": headline_nfe}
    inject_parameters(nb, params)
    workdir = Path(out_html or out_ipynb).resolve().parent
    workdir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except CellExecutionError as e:
        msg = str(e).strip().splitlines()
        raise ReportError(f"the report notebook failed: {msg[-1] if msg else e}") from None
    out: dict[str, Path] = {}
    if out_ipynb is not None:
        out["ipynb"] = _atomic_write(Path(out_ipynb), nbformat.writes(nb))
    if out_html is not None:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter(exclude_input=not show_code, exclude_input_prompt=True,
                               exclude_output_prompt=True).from_notebook_node(nb)
        out["html"] = _atomic_write(Path(out_html), body)
    return out


def inject_parameters(nb, params: dict) -> None:
    """Papermill-style: insert (or replace) a cell tagged ``injected-parameters`` right after the
    cell tagged ``parameters`` (at the top if none)."""
    import nbformat

    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    at = next((i + 1 for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])), 0)
    cells.insert(at, cell)
    nb.cells = cells


# ---------------------------------------------------------------------------------------------
# CLI


def _cmd_report(args) -> None:
    datasets = args.dataset
    if args.notebook_only and not (args.html or args.executed_notebook):
        raise ConfigError("--notebook-only needs --html and/or --executed-notebook")
    for ds in ([] if args.notebook_only else datasets):
        out = args.out.format(dataset=ds, root=args.root) if args.out else str(Path(args.root, ds, "report"))
        if args.out and len(datasets) > 1 and "{dataset}" not in args.out:
            raise ConfigError("--out must contain {dataset} when several --dataset are given, "
                              "e.g. --out results/{dataset}/report")
        written = build_report(args.root, ds, out, headline_nfe=args.headline_nfe)
        n_files = sum(1 for k in written if not k.startswith("grid:"))
        print(f"wrote {n_files} report files to {out} ({ds})")
    if args.html or args.executed_notebook:
        paths = render_notebook(args.html, root=args.root, datasets=datasets, headline_nfe=args.headline_nfe,
                                notebook=args.notebook, out_ipynb=args.executed_notebook, timeout=args.timeout,
                                show_code=args.show_code)
        print("wrote " + ", ".join(str(p) for p in paths.values()))


def add_report_parser(subparsers) -> None:
    """``mtdiff report --root results --dataset digits [--out results/digits/report] [--html report.html]``."""
    p = subparsers.add_parser("report", help="comparison tables, plots, findings (and the HTML notebook) from the records")
    p.add_argument("--root", default="results", help="results root holding <dataset>/metrics, train, samples")
    p.add_argument("--dataset", action="append", required=True, help="dataset name (repeatable)")
    p.add_argument("--out", default=None,
                   help="output folder (default: <root>/<dataset>/report; may contain {dataset})")
    p.add_argument("--headline-nfe", type=int, default=None,
                   help="NFE of the headline values (default: the most common NFE of the records)")
    p.add_argument("--html", default=None, help="also execute notebooks/report.ipynb for the datasets and write HTML")
    p.add_argument("--executed-notebook", default=None, help="also save the executed notebook (.ipynb) here")
    p.add_argument("--notebook", default=None, help="report notebook to execute (default: notebooks/report.ipynb)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per notebook cell")
    p.add_argument("--show-code", action="store_true", help="keep the notebook's code cells in the HTML")
    p.add_argument("--notebook-only", action="store_true",
                   help="only execute the notebook (--html / --executed-notebook); write no per-dataset files")
    p.set_defaults(func=_cmd_report)


__all__ = [
    "ANCHORS", "REPORT_FILES", "ReportError", "add_report_parser", "build_report", "make_report", "column_key", "comparison_table",
    "find_sample_grids", "findings", "format_table", "table_stats", "table_caption", "headline_records", "headline_stats", "inject_parameters",
    "load_records", "load_summaries", "load_train_logs", "mean_ci95", "metric_columns", "parse_column_key",
    "plot_bars", "plot_losses", "plot_metric_vs_nfe", "plot_training_curves", "reference_table", "render_notebook",
    "write_reference_table", "write_tables",
]
