"""The report's vocabulary: which rows are models or anchors, how they are named and coloured,
which metrics exist, which way each is better, and how a measured quantity is named as a table
column (``metric[extractor, condition, procedure]``).

Everything about a model comes from its entry in :data:`mtdiff.models.MODELS` (display label,
colour, single- or multi-task, the single-task baselines it is compared with), read when asked,
so a newly registered model shows up in tables, plots and findings with no edit here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from mtdiff.errors import MtdiffError
from mtdiff.registry import MODELS


class ReportError(MtdiffError, ValueError):
    """Results needed by the report are missing or malformed."""


# ---------------------------------------------------------------------------------------------
# models and anchors

# Reference rows that are not models: real data of the other split, an independent-pixel
# Gaussian, (inpainting) the nearest training image copied into the hole, and (memorization
# check) a copier that returns training images.
ANCHORS = ("real_floor", "gaussian_baseline", "nearest_neighbour", "copier")
ANCHOR_LABELS = {
    "real_floor": "anchor: real data (train vs test)",
    "gaussian_baseline": "anchor: Gaussian baseline (independent pixels)",
    "nearest_neighbour": "anchor: nearest training image copied into the hole",
    "copier": "anchor: copier (returns training images)",
}
ANCHOR_COLOURS = {"real_floor": "#2ca02c", "gaussian_baseline": "#7f7f7f", "nearest_neighbour": "#8c564b",
                  "copier": "#d62728"}
# colours of models registered without one (picked by a hash of the name: stable across runs)
SPARE_COLOURS = ("#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")


def single_task_models() -> list[str]:
    return [name for name, spec in MODELS.items() if not spec.multi_task]


def multi_task_models() -> list[str]:
    return [name for name, spec in MODELS.items() if spec.multi_task]


def model_order() -> list[str]:
    """Row order of tables and legends: single-task models, multi-task models (each in registry
    order), then the anchors."""
    return single_task_models() + multi_task_models() + list(ANCHORS)


def model_rank(model: str) -> float:
    """Position in :func:`model_order`; an unregistered name sorts just before the last MT model."""
    order = model_order()
    return order.index(model) if model in order else len(MODELS) - 0.5


def model_kind(model: str) -> str:
    """``"anchor"``, ``"multi-task"`` or ``"single-task"`` (an unregistered name: by its
    ``mt_`` prefix)."""
    if model in ANCHORS:
        return "anchor"
    multi = MODELS[model].multi_task if model in MODELS else model.startswith("mt_")
    return "multi-task" if multi else "single-task"


def model_label(model: str) -> str:
    if model in ANCHORS:
        return ANCHOR_LABELS[model]
    return MODELS[model].label or model if model in MODELS else model


def model_colour(model: str) -> str:
    colour = ANCHOR_COLOURS.get(model) or (MODELS[model].colour if model in MODELS else "")
    return colour or SPARE_COLOURS[sum(map(ord, model)) % len(SPARE_COLOURS)]


def model_pairs() -> list[tuple[str, str, tuple[str, ...]]]:
    """``(multi-task model, single-task baseline, primary metrics compared)`` from each MT
    model's ``baselines`` and each baseline's ``compared_on``, grouped by baseline."""
    return [(mt, base, MODELS[base].compared_on) for base in single_task_models() for mt in multi_task_models()
            if base in MODELS[mt].baselines]


# ---------------------------------------------------------------------------------------------
# metrics and table columns

# Metrics where smaller is better / larger is better; others (kid_std, unknown) are not ranked.
LOWER_IS_BETTER = {"fid", "kid_mean", "cond_fid", "cond_kid_mean", "inpaint_mse", "inpaint_fid", "inpaint_kid_mean"}
HIGHER_IS_BETTER = {"precision", "recall", "accuracy", "miou", "pixel_accuracy", "cond_accuracy",
                    "coherence_label", "coherence_miou", "isc_mean", "cond_precision", "cond_recall",
                    "inpaint_psnr", "repr_cosine"}
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
    "inpaint_mse": "inpainting MSE (hidden)", "inpaint_psnr": "inpainting PSNR (hidden, dB)",
    "inpaint_fid": "inpainting FID", "inpaint_kid_mean": "inpainting KID",
    "repr_cosine": "representation cosine", "repr_cosine_shuffled": "representation cosine (shuffled pairs)",
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
REPORT_FILES = ("comparison.csv", "comparison.md", "comparison.tex", "paper_reference.csv", "paper_reference.md",
                "findings.md", "summary.md", "report.md", "headline_bars.png", "headline_bars.svg", "training_curves.png",
                "training_curves.svg", "metric_vs_nfe.png", "metric_vs_nfe.svg", "losses.png", "losses.svg")
# the package data file mtdiff/paper_reference.csv, and the repository's notebooks/report.ipynb
PAPER_REFERENCE_CSV = Path(__file__).resolve().parents[1] / "paper_reference.csv"
DEFAULT_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "report.ipynb"
DASH = "—"


def metric_direction(metric: str) -> str | None:
    """``"lower"``, ``"higher"`` or None (not ranked, e.g. ``kid_std``)."""
    if metric in LOWER_IS_BETTER:
        return "lower"
    if metric in HIGHER_IS_BETTER:
        return "higher"
    return None


def is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def column_key(metric: str, extractor=None, condition=None, procedure=None) -> str:
    """Column name of a measured quantity: ``metric[extractor, condition, procedure]`` (parts
    that are missing or trivial, e.g. condition ``none``, are left out)."""
    parts = []
    for q in (extractor, condition, procedure):
        if is_missing(q):
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
