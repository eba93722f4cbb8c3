"""mtdiff.report.plots / build / cli: the figures, one dataset's whole report and `mtdiff report`."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtdiff import cli, report
from mtdiff.errors import MtdiffError

from conftest import ENV


# ---------------------------------------------------------------------------------------------
# plots and the whole report


def _png_ok(path: Path, min_side=300):
    with Image.open(path) as im:
        im.load()
        assert im.size[0] >= min_side and im.size[1] >= 200, (path, im.size)
        arr = np.asarray(im.convert("L"))
        assert arr.std() > 5, f"{path} looks blank"


@pytest.fixture(scope="module")
def built(report_results, tmp_path_factory):
    """The reports, written once: digits through the CLI entry point, shapes through make_report."""
    out = tmp_path_factory.mktemp("reports")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    report.add_report_parser(sub)
    args = parser.parse_args(["report", "--root", str(report_results), "--dataset", "digits", "--out", str(out / "{dataset}")])
    args.func(args)
    rep = report.make_report(report_results, "shapes", out / "shapes")
    return out, rep


def test_cli_report_writes_every_file_for_each_dataset(built):
    built, _ = built
    for ds in ("digits", "shapes"):
        for name in report.REPORT_FILES:
            assert (built / ds / name).is_file(), (ds, name)
    assert (built / "shapes" / "comparison.tex").read_text().count("\\toprule") == 1


def test_report_plots_and_findings(built):
    built, _ = built
    out = built / "digits"
    for name in ("headline_bars", "training_curves", "metric_vs_nfe", "losses"):
        _png_ok(out / f"{name}.png")
        assert (out / f"{name}.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    # titles say the dataset, the extractor and N (SVG keeps text as text)
    bars = (out / "headline_bars.svg").read_text()
    assert "digits: headline metrics" in bars and "mtdiff-domain; N=1000" in bars and "inception-v3-compat" in bars
    curves = (out / "training_curves.svg").read_text()
    assert "digits: metric vs training" in curves and "mtdiff-domain; N=500" in curves
    fmd = (out / "findings.md").read_text()
    assert "mt_label has the lowest value (22.0 ± 5.0, n=3)" in fmd
    rmd = (out / "report.md").read_text()
    assert "![headline_bars](headline_bars.png)" in rmd and "samples/ddpm/seed0/grid.png" in rmd
    assert "QUOTED" in (out / "paper_reference.md").read_text()
    # shapes: mt_label is worse there; the findings say so
    assert "ddpm has the lowest value" in (built / "shapes" / "findings.md").read_text()


def test_make_report_returns_what_it_wrote(built):
    _, rep = built
    assert set(rep) == {"files", "table", "findings", "grids", "plots"}
    assert rep["grids"] == [] and "mt_label" in rep["table"].index
    assert all(p.is_file() for p in rep["files"].values())


def test_plots_without_curves_are_placeholders(report_results, tmp_path):
    recs = report.load_records(report_results / "shapes" / "metrics")
    recs = recs[recs["extra.curve"].isna()]
    paths = report.plot_training_curves(recs, tmp_path, dataset="shapes")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    _png_ok(paths[0])
    assert report.plot_training_curves(recs, tmp_path, stem="x", placeholder=False) == []


def test_cli_notebook_only_needs_an_output():
    parser = argparse.ArgumentParser()
    report.add_report_parser(parser.add_subparsers())
    args = parser.parse_args(["report", "--dataset", "digits", "--notebook-only"])
    with pytest.raises(MtdiffError, match="--html"):
        args.func(args)


def test_cli_is_wired_into_mtdiff():
    parser = cli.build_parser()
    if "report" not in parser._subparsers._group_actions[0].choices:  # pragma: no cover - integrator's step
        pytest.skip("mtdiff.cli does not call add_report_parser yet")
    args = parser.parse_args(["report", "--dataset", "digits"])
    assert args.root == "results" and args.func is report._cmd_report


def test_python_dash_m_mtdiff_report_is_the_report_command():
    res = subprocess.run([sys.executable, "-m", "mtdiff.report", "--help"], capture_output=True, text=True,
                         env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: mtdiff report") and "--headline-nfe" in res.stdout
