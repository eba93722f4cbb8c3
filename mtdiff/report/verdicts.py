"""Each multi-task model against its single-task baselines: paired differences over seeds, their
95% t-interval, a paired t-test and a verdict (design.md section 9).

The pairs and the metrics they are compared on come from the registry
(:func:`mtdiff.report.vocabulary.model_pairs`: ``ModelSpec.baselines`` of the MT model,
``ModelSpec.compared_on`` of the baseline). A task metric is compared across procedures (the MT
model's ``accuracy[head]`` against the classifier's ``accuracy[direct]``); every other metric only
within its own column (same extractor and condition). A derived row ``<model>+<procedure>`` (e.g.
``mt_masked+repaint``) is compared like its model.
"""

from __future__ import annotations

import math

from mtdiff.report.stats import BETTER, NO_DIFFERENCE, UNDEFINED, WORSE, paired_difference
from mtdiff.report.vocabulary import TASK_METRICS, metric_direction, model_pairs, parse_column_key


def base_model(model: str) -> str:
    """``mt_masked+repaint`` -> ``mt_masked`` (a model run with another procedure)."""
    return model.split("+", 1)[0]


def paired_verdicts(stats: list[dict]) -> list[dict]:
    """One entry per (MT row, baseline row, compared column) found in ``stats`` (the long table of
    :func:`mtdiff.report.table_stats`, which keeps each seed's value): ``mt``, ``base``, ``metric``,
    ``mt_column``, ``base_column``, ``direction``, plus the fields of
    :func:`mtdiff.report.stats.paired_difference`."""
    cells = {(s["model"], s["column"]): s for s in stats}
    out = []
    for mt, base, metrics in model_pairs():
        mt_rows = sorted({m for m, _ in cells if base_model(m) == mt})
        for mt_row in mt_rows:
            for (model, col), cell in cells.items():
                metric = parse_column_key(col)[0]
                if model != mt_row or metric not in metrics:
                    continue
                if metric in TASK_METRICS:
                    rivals = [c for (m, c) in cells if m == base and parse_column_key(c)[0] == metric]
                else:
                    rivals = [col] if (base, col) in cells else []
                for rcol in rivals:
                    rival = cells[(base, rcol)]
                    direction = metric_direction(metric)
                    res = paired_difference(dict(zip(cell["seeds"], cell["values"])),
                                            dict(zip(rival["seeds"], rival["values"])), direction)
                    out.append({"mt": mt_row, "base": base, "metric": metric, "mt_column": col,
                                "base_column": rcol, "direction": direction, **res})
    return out


def _num(x: float, decimals: int, sign: bool = True) -> str:
    return f"{x + 0.0:{'+' if sign else ''}.{decimals}f}"


def format_difference(v: dict, decimals: int = 2) -> str:
    """``"+0.30 [+0.10, +0.50] worse, n=3, p=0.020"``; with fewer than two paired seeds
    ``"+0.30, n=1: undefined (needs 2 paired seeds)"``."""
    if v["n"] == 0:
        return f"{UNDEFINED} (no paired seed)"
    mean = _num(v["mean"], decimals)
    if v["verdict"] == UNDEFINED:
        why = "needs 2 paired seeds" if v["n"] < 2 else v["reason"]
        return f"{mean}, n={v['n']}: {UNDEFINED} ({why})"
    return f"{mean} [{_num(v['low'], decimals)}, {_num(v['high'], decimals)}] {v['verdict']}, n={v['n']}, {_p(v)}"


def _p(v: dict) -> str:
    if v["p"] is None:
        return "p undefined (equal differences)"
    return f"p={v['p']:.3f}" if v["p"] >= 0.001 else "p<0.001"


def who(model: str, column: str) -> str:
    """``mt_label (head)`` for a task metric's procedure, ``mt_masked (repaint)`` for a derived
    row, else the model name."""
    metric, quals = parse_column_key(column)
    if "+" in model:
        return f"{base_model(model)} ({model.split('+', 1)[1]})"
    return f"{model} ({', '.join(quals)})" if metric in TASK_METRICS and quals else model


def verdict_sentence(v: dict, decimals: int = 2) -> str:
    """The verdict in plain words: ``"mt_label's fid[mtdiff-domain] is worse than ddpm's: +0.30
    [+0.10, +0.50], n=3, p=0.020 (lower is better; MT minus single-task, paired by seed)."``"""
    a, b = who(v["mt"], v["mt_column"]), who(v["base"], v["base_column"])
    what = v["metric"] if v["metric"] in TASK_METRICS else v["mt_column"]
    unpaired = [f"{who(m, c)} seed(s) {', '.join(map(str, v['unpaired'][k]))}"
                for k, m, c in (("mt", v["mt"], v["mt_column"]), ("base", v["base"], v["base_column"]))
                if v["unpaired"][k]]
    tail = f" Unpaired, left out: {'; '.join(unpaired)}." if unpaired else ""
    how = f"({v['direction']} is better; MT minus single-task, paired by seed)" if v["direction"] else "(not ranked)"
    if v["verdict"] in (BETTER, WORSE):
        head = f"{a}'s {what} is {v['verdict']} than {b}'s"
    elif v["verdict"] == NO_DIFFERENCE:
        head = f"{a} vs {b} on {what}: no detectable difference at 95%"
    else:
        diff = "" if v["n"] == 0 or math.isnan(v["mean"]) else f" (difference {_num(v['mean'], decimals)}, n={v['n']})"
        return f"{a} vs {b} on {what}: verdict undefined, {v['reason']}{diff}.{tail}"
    return (f"{head}: {_num(v['mean'], decimals)} [{_num(v['low'], decimals)}, {_num(v['high'], decimals)}], "
            f"n={v['n']}, {_p(v)} {how}.{tail}")
