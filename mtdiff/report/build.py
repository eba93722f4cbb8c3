"""One dataset's whole report: tables, quoted paper numbers, plots, findings and a report.md
that links them (the files of :data:`mtdiff.report.vocabulary.REPORT_FILES`)."""

from __future__ import annotations

import os
from pathlib import Path

from mtdiff.io import atomic_write_text
from mtdiff.report.findings import findings
from mtdiff.report.inpainting import inpainting_table, write_inpainting_tables
from mtdiff.report.load import find_sample_grids, load_records, load_summaries, load_train_logs
from mtdiff.report.plots import plot_bars, plot_losses, plot_metric_vs_nfe, plot_training_curves
from mtdiff.report.summary import summary_markdown
from mtdiff.report.tables import (
    QUOTED_NOTE, comparison_table, format_table, table_caption, write_reference_table, write_tables,
)
from mtdiff.report.vocabulary import ReportError


def build_report(root, dataset: str, out_dir, *, headline_nfe: int | None = None,
                 source: str | None = None) -> dict[str, Path]:
    """Everything of one dataset into ``out_dir``: the files of :data:`REPORT_FILES` (tables,
    quoted paper numbers, plots as PNG and SVG, findings.md and a report.md that links them).
    Plots without data are written as placeholders, so the file list is fixed. Returns
    ``{file name: path}`` plus ``grid:<model>/seed<k>`` entries for the sample grids found.
    ``source`` (e.g. the command and config) heads summary.md, the per-task tables."""
    return make_report(root, dataset, out_dir, headline_nfe=headline_nfe, source=source)["files"]


def make_report(root, dataset: str, out_dir, *, headline_nfe: int | None = None, source: str | None = None) -> dict:
    """:func:`build_report` returning also what it computed: ``{"files": {name: path},
    "table": comparison table, "findings": [str], "summary": summary.md's text,
    "grids": [{"model", "seed", "path"}], "plots": {name: [png, svg]}}``."""
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
    written.update(write_inpainting_tables(ds_records, out_dir))
    lines = findings(table)
    fmd = f"# Findings: {dataset}\n\nComputed from the comparison table only (no hand-written claims).\n\n" + \
          "".join(f"- {line}\n" for line in lines)
    written["findings.md"] = atomic_write_text(out_dir / "findings.md", fmd)
    summary = summary_markdown(table, source=source, inpainting=inpainting_table(ds_records))
    written["summary.md"] = atomic_write_text(out_dir / "summary.md", summary + "\n")
    grids = find_sample_grids(root, dataset)
    for g in grids:
        written[f"grid:{g['model']}/seed{g['seed']}"] = g["path"]
    written["report.md"] = atomic_write_text(out_dir / "report.md", _report_md(dataset, table, lines, plots, grids, out_dir))
    return {"files": written, "table": table, "findings": lines, "summary": summary, "grids": grids, "plots": plots}


def _rel(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path, start).replace(os.sep, "/")
    except ValueError:
        return str(path)


def _report_md(dataset, table, lines, plots, grids, out_dir) -> str:
    md = [f"# mtdiff report: {dataset}", "", "Per-task tables with the MT-vs-single-task verdicts: "
          "[summary.md](summary.md).", "", "Everything in one table: " + table_caption(table), "",
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
