"""Reading what the workflow wrote under a results root ``R`` for a dataset ``D``: metric records
(``R/D/metrics/*.jsonl``), training summaries and logs (``R/D/train/<model>/seed<k>/``) and the
sample grids (``R/D/samples/<model>/seed<k>/grid.png``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd

from mtdiff.io import JsonLinesError, read_json, read_jsonl
from mtdiff.metrics.records import read_records
from mtdiff.report.vocabulary import SUMMARY_FIELDS, ReportError, model_rank


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
                   "reference_split", "n_reference", "extractor", "metric", "value", "wall_time_s",
                   # stamped by newer runs (null for anchors and older records): read as missing if absent
                   "precision", "device")


def load_records(paths) -> pd.DataFrame:
    """Metric records of one or several JSONL files (or folders of ``*.jsonl``) as a DataFrame.

    Uses :func:`mtdiff.metrics.records.read_records` (validation; a malformed line raises an
    error naming the file and line). ``extra`` is flattened to ``extra.<key>`` columns; the
    columns ``extra.condition``, ``extra.procedure`` and ``extra.curve`` always exist."""
    files = _iter_jsonl_paths(paths)
    if not files:
        raise ReportError(f"no metric records (*.jsonl) in {paths!s}; run the evaluation first")
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
            d = read_json(p)
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
        try:
            rows = [rec for _, rec in read_jsonl(p, skip_unfinished_last_line=True)]
        except JsonLinesError as e:
            raise ReportError(str(e)) from None
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
    return sorted(out, key=lambda d: (model_rank(d["model"]), d["model"], d["seed"] if d["seed"] is not None else -1))
