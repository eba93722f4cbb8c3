"""mtdiff.report.stats / verdicts / convergence / summary: paired MT-vs-single-task statistics,
the convergence check, one precision per column, and the per-task tables of summary.md."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from mtdiff import report
from mtdiff.report.stats import BETTER, NO_DIFFERENCE, UNDEFINED, WORSE

from conftest import DOMAIN, _rec, _task

# ---------------------------------------------------------------------------------------------
# paired differences and verdicts


def test_paired_interval_contains_the_mean_and_matches_the_t_formula():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.normal(5, 1, 4), rng.normal(5, 1, 4)
        v = report.paired_difference(dict(enumerate(a)), dict(enumerate(b)), "lower")
        d = a - b
        half = scipy.stats.t.ppf(0.975, 3) * d.std(ddof=1) / math.sqrt(4)
        assert v["low"] <= v["mean"] <= v["high"]
        assert v["mean"] == pytest.approx(d.mean()) and v["high"] - v["mean"] == pytest.approx(half)
        assert v["p"] == pytest.approx(scipy.stats.ttest_1samp(d, 0).pvalue)
        # the verdict follows the interval, not the p-value's rounding
        assert (v["verdict"] == NO_DIFFERENCE) == (v["low"] <= 0 <= v["high"])


def test_identical_pairs_give_zero_difference_and_no_verdict():
    vals = {0: 4.0, 1: 4.5, 2: 3.9}
    v = report.paired_difference(vals, dict(vals), "lower")
    assert v["mean"] == 0 and v["low"] == 0 and v["high"] == 0 and v["n"] == 3
    assert v["verdict"] == NO_DIFFERENCE and v["p"] is None  # t undefined: every difference is 0
    assert "no detectable difference at 95%" in report.format_difference(v)


@pytest.mark.parametrize("direction, shift, verdict", [
    ("lower", +1.0, WORSE), ("lower", -1.0, BETTER), ("higher", +1.0, BETTER), ("higher", -1.0, WORSE),
])
def test_a_clear_shift_gets_the_direction_of_the_metric(direction, shift, verdict):
    base = {0: 10.0, 1: 12.0, 2: 11.0}
    mt = {s: v + shift + 0.01 * s for s, v in base.items()}  # MT minus base = shift (+ a little noise)
    v = report.paired_difference(mt, base, direction)
    assert v["verdict"] == verdict and v["p"] < 0.05 and np.sign(v["mean"]) == np.sign(shift)
    assert f"{verdict}, n=3" in report.format_difference(v)


def test_noisy_differences_straddling_zero_are_no_detectable_difference():
    v = report.paired_difference({0: 1.0, 1: 3.0, 2: 2.0}, {0: 2.0, 1: 2.0, 2: 2.1}, "lower")
    assert v["low"] < 0 < v["high"] and v["verdict"] == NO_DIFFERENCE and v["p"] > 0.05


def test_unpaired_seeds_are_dropped_and_said():
    v = report.paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {1: 1.0, 2: 2.0, 3: 5.0}, "lower")
    assert v["seeds"] == [1, 2] and v["n"] == 2 and v["differences"] == [1.0, 1.0]
    assert v["unpaired"] == {"mt": [0], "base": [3]}


def test_fewer_than_two_paired_seeds_is_undefined_with_the_reason():
    v = report.paired_difference({0: 1.0, 1: 2.0}, {1: 1.5}, "higher")
    assert v["verdict"] == UNDEFINED and v["n"] == 1 and "1 paired seed" in v["reason"] and v["mean"] == 0.5
    assert "undefined" in report.format_difference(v) and "n=1" in report.format_difference(v)
    none = report.paired_difference({0: 1.0}, {1: 1.0}, "higher")
    assert none["verdict"] == UNDEFINED and none["n"] == 0 and math.isnan(none["mean"])
    unranked = report.paired_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.5}, None)
    assert unranked["verdict"] == UNDEFINED and "not ranked" in unranked["reason"]


# ---------------------------------------------------------------------------------------------
# the convergence check


def test_convergence_check_cases():
    last = {0: 3.0, 1: 3.4, 2: 2.6}  # CI half-width = t(0.975, 2) * 0.4 / sqrt(3) = 0.99
    flat = report.convergence_check(last, {s: v + 0.1 for s, v in last.items()})
    assert flat["converged"] is True and flat["change"] == pytest.approx(-0.1)
    assert flat["ci95"] == pytest.approx(4.302652729911275 * 0.4 / math.sqrt(3))
    falling = report.convergence_check(last, {s: v + 2.0 for s, v in last.items()})
    assert falling["converged"] is False and falling["change"] == pytest.approx(-2.0)
    # equal seeds (zero spread) can never be shown converged unless the curve is exactly flat
    assert report.convergence_check({0: 1.0, 1: 1.0}, {0: 1.1, 1: 1.1})["converged"] is False
    one = report.convergence_check({0: 3.0}, {0: 5.0})
    assert one["converged"] is None and "1 seed" in one["reason"]
    assert report.format_convergence(one).startswith("undefined (1 seed")
    assert report.format_convergence(flat) == "yes: Δ -0.10 within ±0.99 (n=3)"
    assert report.format_convergence(falling) == "no: Δ -2.00 outside ±0.99 (n=3)"


# ---------------------------------------------------------------------------------------------
# fabricated 3-seed results of every task


def _three_seed_records(precision="fp32"):
    """Headline, curve, task, inpainting, memorization and anchor records, 3 seeds each."""
    recs = []
    fid = {"ddpm": [4.0, 4.2, 4.4], "mt_label": [3.0, 3.3, 3.4], "mt_mask": [4.1, 4.0, 4.6]}
    for model, values in fid.items():
        for seed, v in enumerate(values):
            recs.append(_rec("digits", model, seed, "fid", v))
            recs.append(_rec("digits", model, seed, "kid_mean", v / 100))
            # converged curves for ddpm (flat), still falling for mt_label
            drop = 0.0 if model == "ddpm" else 1.5
            for step, cv in ((500, v + 3), (750, v + drop), (1000, v)):
                recs.append(_rec("digits", model, seed, "fid", cv, step=step, n=200,
                                 extra={"condition": "none", "curve": "steps"}))
            recs.append(_rec("digits", model, seed, "memorized_fraction", 0.02 + 0.005 * seed + (0.3 if model == "mt_mask" else 0),
                             extractor=None, extra={"condition": "none"}))
    for seed, (c, m) in enumerate(((0.97, 0.95), (0.98, 0.96), (0.975, 0.955))):
        recs.append(_task("digits", "classifier", seed, "accuracy", c, "direct"))
        recs.append(_task("digits", "mt_label", seed, "accuracy", m, "head"))
        recs.append(_task("digits", "mt_label", seed, "accuracy", m - 0.2, "elbo"))  # a second procedure
    for seed in range(3):
        recs.append(_task("digits", "segmenter", seed, "miou", 0.9 + 0.01 * seed, "direct"))
        recs.append(_task("digits", "mt_mask", seed, "miou", 0.85 + 0.02 * seed, "head"))
        recs.append(_rec("digits", "ddpm_cond", seed, "cond_fid", 1.3 + 0.1 * seed, extra={"condition": "label=balanced"}))
        recs.append(_rec("digits", "mt_label", seed, "cond_fid", 1.3 + 0.1 * seed, extra={"condition": "label=balanced"}))
        for model, mse in (("ddpm", 0.11), ("mt_masked", 0.15)):
            recs.append(_rec("digits", model, seed, "inpaint_mse", mse + 0.002 * seed, extractor=None,
                             extra={"condition": "inpaint patches 0.5"}))
    for model, v in (("real_floor", 0.3), ("gaussian_baseline", 49.0)):
        recs.append(_rec("digits", model, 0, "fid", v, step=None, nfe=None, sampler=None, ema=None))
    for model, v in (("real_floor", 0.01), ("copier", 1.0)):  # test split ~1%, a copier of training images 100%
        recs.append(_rec("digits", model, 0, "memorized_fraction", v, step=None, nfe=None, sampler=None,
                         ema=None, extractor=None))
    df = pd.DataFrame(recs)
    df["extra.condition"] = [e.get("condition") for e in df["extra"]]
    df["extra.procedure"] = [e.get("procedure") for e in df["extra"]]
    df["extra.curve"] = [e.get("curve") for e in df["extra"]]
    anchors = df["model"].isin([*report.ANCHORS, "copier"])
    df["precision"] = [None if a else precision for a in anchors]
    df["device"] = [None if a else "cpu" for a in anchors]
    return df


def test_mixed_precisions_in_one_column_are_refused_naming_models_and_precisions():
    df = _three_seed_records()
    df.loc[(df["model"] == "mt_label") & (df["seed"] == 2), "precision"] = "bf16"
    with pytest.raises(report.ReportError, match=r"fid\[mtdiff-domain\] mixes numeric precisions "
                                                 r"\(ddpm=fp32, mt_label=bf16/fp32"):
        report.comparison_table(df, dataset="digits")
    # a record without a stamp takes its run's precision from summary.json
    df = _three_seed_records(precision=None)
    summaries = pd.DataFrame([{"model": m, "seed": s, "precision": "bf16" if m == "ddpm" else "fp32", "device": "cpu"}
                              for m in ("ddpm", "mt_label") for s in range(3)])
    with pytest.raises(report.ReportError, match=r"ddpm=bf16, mt_label=fp32"):
        report.comparison_table(df, summaries, dataset="digits")


def test_one_precision_is_carried_to_the_rows_and_tables():
    t = report.comparison_table(_three_seed_records(), dataset="digits")
    assert t.loc["ddpm", "numeric_precision"] == "fp32" and t.loc["ddpm", "device"] == "cpu"
    assert report.vocabulary.is_missing(t.loc["real_floor", "numeric_precision"])  # anchors have none
    for df in report.task_tables(t).values():
        assert df.attrs["protocol"].startswith("precision: fp32; device: cpu"), df.attrs
    assert report.table_caption(t).endswith("Numeric precision: fp32; device: cpu.")
    # different precisions in different columns are allowed, and said per model
    df = _three_seed_records()
    df.loc[df["metric"] == "accuracy", "precision"] = "bf16"
    t = report.comparison_table(df, dataset="digits")
    assert "precision: ddpm=fp32, " in report.table_caption(t) and "classifier=bf16" in report.table_caption(t)
    assert report.task_tables(t)["classification"].attrs["protocol"].startswith("precision: bf16; device: cpu")
    # ... but not across the procedures of one task metric, which share a column of the task tables
    df.loc[(df["model"] == "classifier"), "precision"] = "fp32"
    with pytest.raises(report.ReportError, match=r"column accuracy mixes numeric precisions \(mt_label=bf16, "
                                                 r"classifier=fp32\)|\(classifier=fp32, mt_label=bf16\)"):
        report.comparison_table(df, dataset="digits")


def test_per_task_tables_share_columns_and_give_verdicts():
    t = report.comparison_table(_three_seed_records(), dataset="digits")
    tabs = report.task_tables(t)
    assert list(tabs) == ["unconditional", "conditional", "classification", "segmentation", "inpainting"]
    gen = tabs["unconditional"].set_index("model")
    assert list(gen.columns[:4]) == ["seeds", f"FID ↓ [{DOMAIN}]", f"KID ↓ [{DOMAIN}]", "memorized fraction [pixels]"]
    assert list(gen.index)[:3] == ["ddpm", "mt_label", "mt_mask"]
    assert {"anchor: real data (train vs test)", "anchor: Gaussian baseline (independent pixels)"} < set(gen.index)
    assert gen.loc["ddpm", f"FID ↓ [{DOMAIN}]"] == "4.20 ± 0.50" and gen.loc["ddpm", "seeds"] == "3"
    # mt_label - ddpm = -1.0, -0.9, -1.0: better; the CI excludes 0
    vs = gen.loc["mt_label", "FID: MT − single-task"]
    assert vs.startswith("vs ddpm: -0.97 [") and "better, n=3, p=" in vs
    assert gen.loc["ddpm", "FID: MT − single-task"] == "—"
    # converged: ddpm's last two checkpoints are equal; mt_label still falls by 1.5
    assert gen.loc["ddpm", "converged"].startswith("yes: Δ +0.00 within ±")
    assert gen.loc["mt_label", "converged"].startswith("no: Δ -1.50 outside ±")
    # memorization: mt_mask's fraction (~0.3) is above 10x the test split's (0.01): flagged
    mem = gen["memorized fraction [pixels]"]
    assert mem["mt_mask"].endswith("COPIES") and not mem["ddpm"].endswith("COPIES")
    copier = next(lb for lb in gen.index if "copier" in lb)  # its label comes from the vocabulary
    assert mem[copier].startswith("1.0") and mem[copier].endswith("± — COPIES") and not mem["anchor: real data (train vs test)"].endswith("COPIES")
    assert any("10x the test split" in n for n in tabs["unconditional"].attrs["notes"])
    # classification: one accuracy column, procedure in the row label, verdict worse
    cls = tabs["classification"].set_index("model")
    assert list(cls.index) == ["classifier (direct)", "mt_label (elbo)", "mt_label (head)"]
    vs = cls["test accuracy: MT − single-task"]
    assert "test accuracy ↑" in cls.columns and vs["mt_label (head)"].startswith("vs classifier (direct): -0.020 [")
    assert vs["mt_label (elbo)"].startswith("vs classifier (direct): -0.220 [")  # its own procedure's verdict only
    assert all(x.count("vs classifier") == 1 for x in vs[1:]) and "worse, n=3" in vs["mt_label (head)"]
    # equal conditional FIDs: no detectable difference
    cond = tabs["conditional"].set_index("model")
    assert "no detectable difference at 95%" in cond.loc["mt_label", "conditional FID: MT − single-task"]
    inp = tabs["inpainting"].set_index("model")
    assert "worse, n=3" in inp.loc["mt_masked", "inpainting MSE (hidden): MT − single-task"]


def test_summary_markdown_names_its_source_and_every_task(tmp_path):
    t = report.comparison_table(_three_seed_records(), dataset="digits")
    md = report.summary_markdown(t, source="`make run` with config `config/config.yaml`")
    assert md.startswith("## Results: digits\n\nGenerated by `make run` with config `config/config.yaml`.")
    for title in ("### Unconditional generation", "### Classification", "### Segmentation", "### Inpainting",
                  "### Conditional generation"):
        assert title in md
    assert "over 3 seed(s)" in md and "*precision: fp32; device: cpu*" in md
    # every line of a table is a Markdown table row (pasted verbatim into the README)
    # (no "|" inside a cell: each table's lines have as many as its header)
    tables, current = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) == 5  # no training summaries given: no compute table
    for lines in tables:
        assert all(x.endswith("|") and x.count("|") == lines[0].count("|") for x in lines), lines


def test_convergence_uses_the_largest_two_shared_checkpoints():
    df = _three_seed_records()
    # seed 2 of ddpm lacks the last checkpoint: it is left out and said
    df = df[~((df["model"] == "ddpm") & (df["seed"] == 2) & (df["checkpoint_step"] == 1000) & (df["extra.curve"] == "steps"))]
    conv = {c["model"]: c for c in report.convergence_table(df)}
    assert conv["ddpm"]["steps"] == [750, 1000] and conv["ddpm"]["n"] == 2 and "seed(s) 2 lack" in conv["ddpm"]["reason"]
    assert conv["mt_label"]["steps"] == [750, 1000] and conv["mt_label"]["n"] == 3
    assert json.dumps(conv["mt_label"])  # stored in the table's attrs as JSON
