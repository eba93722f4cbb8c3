"""mtdiff.report.stats / headline / tables: CIs, headline values, the comparison table and its files."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from mtdiff import report

from conftest import DOMAIN, INCEPTION, T975_1, T975_2


# ---------------------------------------------------------------------------------------------
# statistics and the table


def test_mean_ci95_known_numbers():
    mean, ci, n, std = report.mean_ci95([1, 2, 3])
    assert (mean, n, std) == (2.0, 3, 1.0)
    assert ci == pytest.approx(T975_2 * 1.0 / math.sqrt(3)) and ci == pytest.approx(2.484, abs=1e-3)
    mean, ci, n, _ = report.mean_ci95([7.0])
    assert mean == 7.0 and n == 1 and math.isnan(ci)
    assert report.mean_ci95([1.0, float("nan"), 3.0])[2] == 2


def test_table_rows_columns_and_values(digits_table):
    records, summaries, table = digits_table
    assert {"ddpm", "mt_label", "classifier", "segmenter", "mt_mask", "real_floor", "gaussian_baseline"} <= set(table.index)
    assert table.loc["real_floor", "label"] == "anchor: real data (train vs test)"
    assert table.loc["gaussian_baseline", "label"].startswith("anchor: ")
    assert (table.loc[["real_floor", "gaussian_baseline"], "kind"] == "anchor").all()
    cols = report.metric_columns(table)
    assert f"fid[{DOMAIN}]" in cols and f"fid[{INCEPTION}]" in cols
    assert "accuracy[direct]" in cols and "accuracy[head]" in cols and "coherence_label" in cols
    # headline = largest step, nfe 50, main evaluation (N=1000), not the curve point at the same step
    assert table.loc["ddpm", f"fid[{DOMAIN}]_mean"] == pytest.approx(32.0)
    assert table.loc["ddpm", f"fid[{DOMAIN}]_ci95"] == pytest.approx(T975_2 * 2 / math.sqrt(3))
    assert table.loc["ddpm", f"fid[{INCEPTION}]_mean"] == pytest.approx(32.0 * 3 + 7)
    assert table.loc["classifier", "accuracy[direct]_mean"] == pytest.approx(0.96)
    assert table.loc["classifier", "accuracy[direct]_ci95"] == pytest.approx(T975_1 * np.std([0.95, 0.97], ddof=1) / math.sqrt(2))
    assert table.loc["ddpm", "n_seeds"] == 3 and table.loc["classifier", "n_seeds"] == 2
    assert table.attrs["headline_nfe"] == 50
    # equal-compute columns from the summaries
    assert table.loc["mt_label", "parameters"] == 520_000 and table.loc["ddpm", "images_seen"] == 64000
    assert table.loc["mt_label", "wall_s"] == pytest.approx(130.0)
    assert math.isnan(table.loc["real_floor", "parameters"])


def test_two_extractors_never_share_a_column(digits_table):
    records, _, table = digits_table
    for col in report.metric_columns(table):
        metric, quals = report.parse_column_key(col)
        if metric in ("fid", "kid_mean", "kid_std"):
            assert len(quals) >= 1 and quals[0] in (DOMAIN, INCEPTION), col
    head = report.headline_records(records)
    assert head.groupby("column")["extractor"].nunique(dropna=True).max() == 1


def test_one_seed_ci_is_nan_and_shown_as_dash(digits_table):
    _, _, table = digits_table
    assert table.loc["segmenter", "miou[direct]_n"] == 1
    assert math.isnan(table.loc["segmenter", "miou[direct]_ci95"])
    shown = report.format_table(table).set_index(report.format_table(table)["model"])
    cell = shown.loc["segmenter (single task)", "miou[direct] ↑"]
    assert cell == "0.810 ± —"
    assert shown.loc["ddpm (image only)", f"fid[{DOMAIN}] ↓"] == f"32.0 ± {T975_2 * 2 / math.sqrt(3):.1f}"
    assert shown.loc["ddpm (image only)", "accuracy[direct] ↑"] == "—"


def test_headline_nfe_override(digits_table):
    records, summaries, _ = digits_table
    t = report.comparison_table(records, summaries, headline_nfe=10, dataset="digits")
    assert t.loc["ddpm", f"fid[{DOMAIN}]_mean"] == pytest.approx(32.0 * (1 + 6 / 10 ** 1.2))
    # anchors and task metrics have no NFE: they stay
    assert t.loc["real_floor", f"fid[{DOMAIN}]_mean"] == 5.0 and t.loc["classifier", "accuracy[direct]_mean"] == 0.96
    # inception FID exists only at nfe 50: left out and said so
    assert math.isnan(t.loc["ddpm", f"fid[{INCEPTION}]_mean"])
    assert any("nfe=10" in n and INCEPTION in n for n in t.attrs["notes"])


def test_write_tables_markdown_latex_csv(digits_table, tmp_path):
    _, _, table = digits_table
    paths = report.write_tables(table, tmp_path, "comparison")
    csv = pd.read_csv(paths["csv"], index_col="model")
    assert csv.loc["ddpm", f"fid[{DOMAIN}]_mean"] == pytest.approx(32.0)
    assert f"fid[{DOMAIN}]_ci95" in csv.columns and "wall_s" in csv.columns
    md = paths["md"].read_text().splitlines()
    rows = [line for line in md if line.startswith("|")]
    assert re.fullmatch(r"\|[-:| ]+\|", rows[1])  # header separator
    assert len({line.count("|") for line in rows}) == 1  # same number of cells in every row
    assert any("32.0 ± 5.0" in line for line in rows) and any("anchor: real data" in line for line in rows)
    tex = paths["tex"].read_text()
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    body = tex[tex.index("\\begin{tabular}"):]
    assert not re.search(r"(?<!\\)_", body), "unescaped underscore in LaTeX"
    assert "$\\pm$" in body and "±" not in body and "—" not in body
    assert body.count("\\begin{tabular}") == body.count("\\end{tabular}") == 1


def test_reference_table_is_quoted_and_separate(tmp_path):
    ref = report.reference_table()
    assert list(ref.columns[:6]) == ["dataset", "setting", "model", "metric", "value", "source_note"]
    assert ref["source_note"].str.contains("QUOTED").all()
    got = {(r.dataset, r.model): r.value for r in ref.itertuples()}
    assert got[("ImageNet-64", "MT-Diffusion-X")] == "9.85" and got[("ImageNet-128", "ADM_g*")] == "3.56"
    lp = ref[ref["metric"] == "LPIPS"].set_index("model")
    assert (lp.loc["MT-Diffusion", "value_min"], lp.loc["MT-Diffusion", "value_max"]) == (0.035, 0.133)
    assert (lp.loc["SDEdit", "value_min"], lp.loc["SDEdit", "value_max"]) == (0.400, 0.513)
    assert len(ref[ref["metric"] == "FID"]) == 10
    paths = report.write_reference_table(tmp_path)
    assert "QUOTED" in paths["md"].read_text()
