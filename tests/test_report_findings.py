"""mtdiff.report.findings: the reading of the comparison table, computed from its numbers."""

from __future__ import annotations


import pandas as pd

from mtdiff import report

from conftest import DOMAIN, fabricate


# ---------------------------------------------------------------------------------------------
# findings


def test_findings_name_the_winner_and_flip_with_the_numbers(tmp_path):
    fabricate(tmp_path / "a", "digits", curves=False, logs=False, grids=False)
    fabricate(tmp_path / "b", "digits", fid={"ddpm": [20.0, 22.0, 24.0], "mt_label": [30.0, 32.0, 34.0]},
              accuracy={"classifier": [0.90, 0.92], "mt_label": [0.95, 0.97, 0.96]},
              curves=False, logs=False, grids=False)
    out = {}
    for k in ("a", "b"):
        recs = report.load_records(tmp_path / k / "digits" / "metrics")
        t = report.comparison_table(recs, report.load_summaries(tmp_path / k, "digits"))
        out[k] = report.findings(t)
    fa = next(f for f in out["a"] if f.startswith(f"fid[{DOMAIN}] ("))
    fb = next(f for f in out["b"] if f.startswith(f"fid[{DOMAIN}] ("))
    assert "mt_label has the lowest value (22.0 ± 5.0, n=3)" in fa and "clearly best" in fa
    assert "ddpm has the lowest value (22.0 ± 5.0, n=3)" in fb and "clearly best" in fb
    acc_a = next(f for f in out["a"] if f.startswith("accuracy ("))
    acc_b = next(f for f in out["b"] if f.startswith("accuracy ("))
    assert "classifier (direct) has the highest value" in acc_a
    assert "mt_label (head) has the highest value" in acc_b
    # paired verdicts: every seed's difference is -10 (a) / +10 (b): a zero-width interval
    assert f"mt_label's fid[{DOMAIN}] is better than ddpm's: -10.0 [-10.0, -10.0], n=3" in "\n".join(out["a"])
    assert f"mt_label's fid[{DOMAIN}] is worse than ddpm's: +10.0 [+10.0, +10.0], n=3" in "\n".join(out["b"])
    # accuracy: classifier has seeds 0 and 1 only, so mt_label's seed 2 is unpaired and said
    acc = next(f for f in out["a"] if f.startswith("mt_label (head)'s accuracy is worse than classifier (direct)'s"))
    assert "-0.050 [-0.050, -0.050], n=2" in acc and "Unpaired, left out: mt_label (head) seed(s) 2" in acc
    miou = next(f for f in out["a"] if f.startswith("mt_mask (head) vs segmenter (direct) on miou"))
    assert "verdict undefined, 1 paired seed" in miou
    assert any(f.startswith("Compute, mt_label vs ddpm: parameters 520k vs 500k (x1.04)") for f in out["a"])
    # anchors: (300 - 22) / (300 - 5) = 94%, (300 - 32) / 295 = 91%
    anc = next(f for f in out["a"] if f.startswith(f"fid[{DOMAIN}] relative to the anchors"))
    assert "mt_label 94%" in anc and "ddpm 91%" in anc


def test_findings_overlap_and_single_seed(tmp_path):
    fabricate(tmp_path, "digits", fid={"ddpm": [20.0, 30.0, 25.0], "mt_label": [22.0, 26.0, 24.0]},
              curves=False, logs=False, grids=False)
    t = report.comparison_table(report.load_records(tmp_path / "digits" / "metrics"),
                                report.load_summaries(tmp_path, "digits"))
    f = report.findings(t)
    fid = next(x for x in f if x.startswith(f"fid[{DOMAIN}] ("))
    assert "mt_label has the lowest value" in fid and "overlaps that of ddpm" in fid and "no clear winner" in fid
    miou = next(x for x in f if x.startswith("miou ("))
    assert "segmenter (direct) has the highest value (0.810 ± —, n=1)" in miou and "single seed" in miou
    assert any("only one seed for segmenter" in x for x in f)


def test_findings_work_from_the_csv_alone(digits_table, tmp_path):
    _, _, table = digits_table
    paths = report.write_tables(table, tmp_path, "c")
    back = pd.read_csv(paths["csv"], index_col="model")
    # the CSV keeps means and CIs only: no per-seed values (paired verdicts) and no curves (converged)
    f1 = [x for x in report.findings(table) if not x.startswith(("Protocol", "Converged"))]
    f2 = report.findings(back)
    assert not any(x.startswith("Converged") for x in f2)
    assert any(x.startswith(f"fid[{DOMAIN}] (lower is better): mt_label") for x in f2)
    assert len(f2) >= len(f1) - 1
