"""mtdiff.report: tables, CIs, findings, plots and the report notebook on fabricated results."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtdiff import report
from mtdiff.errors import MtdiffError

ROOT = Path(__file__).resolve().parents[1]
T975_2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)
T975_1 = 12.706204736174698  # scipy.stats.t.ppf(0.975, 1)
DOMAIN, INCEPTION = "mtdiff-domain", "inception-v3-compat"


# ---------------------------------------------------------------------------------------------
# fabricated results


def _rec(dataset, model, seed, metric, value, *, step=1000, nfe=50, n=1000, extractor=DOMAIN, ema=True,
         sampler="ddim", extra=None, **kw):
    r = dict(dataset=dataset, model=model, seed=seed, checkpoint_step=step, ema=ema, sampler=sampler, nfe=nfe,
             n_generated=n, reference_split="test", n_reference=360, extractor=extractor, metric=metric,
             value=value, wall_time_s=1.5, extra=extra if extra is not None else {"condition": "none"})
    r.update(kw)
    return r


def _task(dataset, model, seed, metric, value, procedure):
    return _rec(dataset, model, seed, metric, value, nfe=None, sampler=None, n=None, extractor=None,
                extra={"procedure": procedure})


DEFAULT_FID = {"ddpm": [30.0, 32.0, 34.0], "mt_label": [20.0, 22.0, 24.0]}


def fabricate(root: Path, dataset: str = "digits", *, fid=None, accuracy=None, curves=True, extra_models=True,
              grids=True, logs=True) -> Path:
    """Results of one dataset under ``root`` in the workflow's layout; returns the metrics dir."""
    fid = fid or DEFAULT_FID
    accuracy = accuracy or {"classifier": [0.95, 0.97], "mt_label": [0.90, 0.92, 0.91]}
    recs = []
    rng = np.random.default_rng(0)
    for model, values in fid.items():
        for seed, v in enumerate(values):
            recs.append(_rec(dataset, model, seed, "fid", v))
            recs.append(_rec(dataset, model, seed, "kid_mean", v / 1000))
            recs.append(_rec(dataset, model, seed, "kid_std", v / 10000))
            recs.append(_rec(dataset, model, seed, "fid", v * 3 + 7, extractor=INCEPTION))  # other extractor
            if curves:
                for step in (250, 500, 750, 1000):  # training-efficiency curve (N=500 per point)
                    cv = v * (1000 / step) ** 0.8 + rng.normal(0, 0.5)
                    recs.append(_rec(dataset, model, seed, "fid", cv, step=step, n=500,
                                     extra={"condition": "none", "curve": "steps", "images_seen": step * 64}))
                for nfe in (10, 25):  # metric vs NFE at the final checkpoint
                    recs.append(_rec(dataset, model, seed, "fid", v * (1 + 6 / nfe ** 1.2), nfe=nfe, n=500,
                                     extra={"condition": "none", "curve": "nfe", "images_seen": 64000}))
    for model, values in accuracy.items():
        for seed, v in enumerate(values):
            recs.append(_task(dataset, model, seed, "accuracy", v, "direct" if model == "classifier" else "head"))
    if extra_models:
        recs.append(_task(dataset, "segmenter", 0, "miou", 0.81, "direct"))  # one seed -> no CI
        for seed, v in enumerate([0.70, 0.74]):
            recs.append(_task(dataset, "mt_mask", seed, "miou", v, "head"))
        for seed, v in enumerate([0.88, 0.90, 0.86]):
            recs.append(_rec(dataset, "mt_label", seed, "coherence_label", v, extractor=None,
                             extra={"judge": "clf"}))
    for model, v in (("real_floor", 5.0), ("gaussian_baseline", 300.0)):
        for ext, val in ((DOMAIN, v), (INCEPTION, v * 3 + 7)):
            recs.append(_rec(dataset, model, 0, "fid", val, step=None, nfe=None, sampler=None, ema=None,
                             extractor=ext, extra={"images_from": "train" if model == "real_floor" else "gauss"}))
        recs.append(_rec(dataset, model, 0, "kid_mean", v / 1000, step=None, nfe=None, sampler=None, ema=None,
                         extra={"images_from": "train"}))
    mdir = root / dataset / "metrics"
    mdir.mkdir(parents=True, exist_ok=True)
    half = len(recs) // 2
    for name, part in (("a.jsonl", recs[:half]), ("b.jsonl", recs[half:])):
        (mdir / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    params = {"ddpm": 500_000, "mt_label": 520_000, "classifier": 120_000, "segmenter": 130_000, "mt_mask": 525_000}
    seeds = {"ddpm": 3, "mt_label": 3, "classifier": 2, "segmenter": 1, "mt_mask": 2}
    for model, k in seeds.items():
        if not extra_models and model in ("segmenter", "mt_mask"):
            continue
        for seed in range(k):
            d = root / dataset / "train" / model / f"seed{seed}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "summary.json").write_text(json.dumps(dict(
                model=model, dataset=dataset, seed=seed, parameters=params[model], steps=1000, images_seen=64000,
                batch_size=64, wall_s=100.0 + 10 * seed + (20 if model.startswith("mt_") else 0),
                peak_memory_mb=800.0 + seed, device="cpu", precision="bf16", world_size=1, done=True)))
            if logs:
                lines = []
                for step in range(10, 1001, 10):
                    base = 0.05 + 0.5 / (1 + step / 50) + rng.normal(0, 0.01)
                    rec = {"step": step, "kimg": step * 64 / 1000, "loss": base * (1.3 if model.startswith("mt_") else 1),
                           "lr": 2e-4, "images_per_s": 600.0, "wall_s": step / 10, "peak_memory_mb": 800.0}
                    if model in ("ddpm", "mt_label", "mt_mask"):
                        rec["loss_eps"] = base
                    if model == "mt_label":
                        rec["loss_label"] = 2.3 / (1 + step / 100)
                    if model in ("classifier", "segmenter"):
                        rec = {**rec, "loss": 2.3 / (1 + step / 80)}
                    lines.append(json.dumps(rec))
                (d / "train_log.jsonl").write_text("\n".join(lines) + "\n")
    if grids:
        from PIL import Image

        for model in ("ddpm", "mt_label"):
            d = root / dataset / "samples" / model / "seed0"
            d.mkdir(parents=True, exist_ok=True)
            arr = (rng.random((40, 80, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(d / "grid.png")
    return mdir


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    fabricate(root, "digits")
    fabricate(root, "shapes", fid={"ddpm": [40.0, 41.0], "mt_label": [45.0, 47.0]}, extra_models=False, grids=False)
    return root


@pytest.fixture(scope="module")
def digits(results):
    records = report.load_records(sorted((results / "digits" / "metrics").glob("*.jsonl")))
    summaries = report.load_summaries(results, "digits")
    return records, summaries, report.comparison_table(records, summaries, dataset="digits")


# ---------------------------------------------------------------------------------------------
# statistics and the table


def test_mean_ci95_known_numbers():
    mean, ci, n, std = report.mean_ci95([1, 2, 3])
    assert (mean, n, std) == (2.0, 3, 1.0)
    assert ci == pytest.approx(T975_2 * 1.0 / math.sqrt(3)) and ci == pytest.approx(2.484, abs=1e-3)
    mean, ci, n, _ = report.mean_ci95([7.0])
    assert mean == 7.0 and n == 1 and math.isnan(ci)
    assert report.mean_ci95([1.0, float("nan"), 3.0])[2] == 2


def test_table_rows_columns_and_values(digits):
    records, summaries, table = digits
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


def test_two_extractors_never_share_a_column(digits):
    records, _, table = digits
    for col in report.metric_columns(table):
        metric, quals = report.parse_column_key(col)
        if metric in ("fid", "kid_mean", "kid_std"):
            assert len(quals) >= 1 and quals[0] in (DOMAIN, INCEPTION), col
    head = report.headline_records(records)
    assert head.groupby("column")["extractor"].nunique(dropna=True).max() == 1


def test_one_seed_ci_is_nan_and_shown_as_dash(digits):
    _, _, table = digits
    assert table.loc["segmenter", "miou[direct]_n"] == 1
    assert math.isnan(table.loc["segmenter", "miou[direct]_ci95"])
    shown = report.format_table(table).set_index(report.format_table(table)["model"])
    cell = shown.loc["segmenter (single task)", "miou[direct] ↑"]
    assert cell == "0.810 ± —"
    assert shown.loc["ddpm (image only)", f"fid[{DOMAIN}] ↓"] == f"32.0 ± {T975_2 * 2 / math.sqrt(3):.1f}"
    assert shown.loc["ddpm (image only)", "accuracy[direct] ↑"] == "—"


def test_headline_nfe_override(digits):
    records, summaries, _ = digits
    t = report.comparison_table(records, summaries, headline_nfe=10, dataset="digits")
    assert t.loc["ddpm", f"fid[{DOMAIN}]_mean"] == pytest.approx(32.0 * (1 + 6 / 10 ** 1.2))
    # anchors and task metrics have no NFE: they stay
    assert t.loc["real_floor", f"fid[{DOMAIN}]_mean"] == 5.0 and t.loc["classifier", "accuracy[direct]_mean"] == 0.96
    # inception FID exists only at nfe 50: left out and said so
    assert math.isnan(t.loc["ddpm", f"fid[{INCEPTION}]_mean"])
    assert any("nfe=10" in n and INCEPTION in n for n in t.attrs["notes"])


def test_write_tables_markdown_latex_csv(digits, tmp_path):
    _, _, table = digits
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
    pair_a = next(f for f in out["a"] if f.startswith(f"mt_label vs ddpm on fid[{DOMAIN}]"))
    pair_b = next(f for f in out["b"] if f.startswith(f"mt_label vs ddpm on fid[{DOMAIN}]"))
    assert "MT model is better" in pair_a and "MT model is worse" in pair_b
    assert "difference -10.0" in pair_a and "difference +10.0" in pair_b
    assert any(f.startswith("mt_label (head) vs classifier (direct) on accuracy") for f in out["a"])
    assert any(f.startswith("mt_mask (head) vs segmenter (direct) on miou") for f in out["a"])
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


def test_findings_work_from_the_csv_alone(digits, tmp_path):
    _, _, table = digits
    paths = report.write_tables(table, tmp_path, "c")
    back = pd.read_csv(paths["csv"], index_col="model")
    f1 = [x for x in report.findings(table) if not x.startswith("Protocol")]
    f2 = report.findings(back)
    assert any(x.startswith(f"fid[{DOMAIN}] (lower is better): mt_label") for x in f2)
    assert len(f2) >= len(f1) - 1


# ---------------------------------------------------------------------------------------------
# errors


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    p = tmp_path / "m.jsonl"
    good = json.dumps(_rec("digits", "ddpm", 0, "fid", 1.0))
    p.write_text(good + "\n" + good + "\n{not json\n")
    with pytest.raises(MtdiffError, match=r"m\.jsonl:3"):
        report.load_records(p)


def test_missing_records_is_a_one_line_error(tmp_path):
    with pytest.raises(MtdiffError, match="no metric records"):
        report.build_report(tmp_path, "digits", tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# plots and the whole report


def _png_ok(path: Path, min_side=300):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        assert im.size[0] >= min_side and im.size[1] >= 200, (path, im.size)
        arr = np.asarray(im.convert("L"))
        assert arr.std() > 5, f"{path} looks blank"


@pytest.fixture(scope="module")
def built(results, tmp_path_factory):
    """The reports, written once: digits through the CLI entry point, shapes through make_report."""
    import argparse

    out = tmp_path_factory.mktemp("reports")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    report.add_report_parser(sub)
    args = parser.parse_args(["report", "--root", str(results), "--dataset", "digits", "--out", str(out / "{dataset}")])
    args.func(args)
    rep = report.make_report(results, "shapes", out / "shapes")
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


def test_plots_without_curves_are_placeholders(results, tmp_path):
    recs = report.load_records(results / "shapes" / "metrics")
    recs = recs[recs["extra.curve"].isna()]
    paths = report.plot_training_curves(recs, tmp_path, dataset="shapes")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    _png_ok(paths[0])
    assert report.plot_training_curves(recs, tmp_path, stem="x", placeholder=False) == []


def test_cli_notebook_only_needs_an_output():
    import argparse

    parser = argparse.ArgumentParser()
    report.add_report_parser(parser.add_subparsers())
    args = parser.parse_args(["report", "--dataset", "digits", "--notebook-only"])
    with pytest.raises(MtdiffError, match="--html"):
        args.func(args)


def test_cli_is_wired_into_mtdiff():
    from mtdiff import cli

    parser = cli.build_parser()
    if "report" not in parser._subparsers._group_actions[0].choices:  # pragma: no cover - integrator's step
        pytest.skip("mtdiff.cli does not call add_report_parser yet")
    args = parser.parse_args(["report", "--dataset", "digits"])
    assert args.root == "results" and args.func is report._cmd_report


# ---------------------------------------------------------------------------------------------
# the notebook


def test_notebook_metadata():
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "report.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata["language_info"]["name"] == "python"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    src = params[0].source
    assert 'root = "results"' in src and 'datasets = ["digits"]' in src and "headline_nfe = None" in src
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_notebook_executes_on_fabricated_results(results, tmp_path):
    paths = report.render_notebook(tmp_path / "report.html", root=results, datasets=["digits", "shapes"],
                                   out_ipynb=tmp_path / "report.ipynb", timeout=120)
    html = paths["html"].read_text()
    for text in ("digits", "shapes", "mt_label (MT: image + label)", "anchor: real data (train vs test)",
                 "32.0 ± 5.0", "QUOTED", "mt_label has the lowest value", "data:image/png;base64"):
        assert text in html, text
    import nbformat

    nb = nbformat.read(paths["ipynb"], as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert nb.cells[[i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])][0] + 1] \
        .metadata["tags"] == ["injected-parameters"]
