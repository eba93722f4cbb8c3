"""``mtdiff report``: the command line of the report (also ``python -m mtdiff.report``)."""

from __future__ import annotations

from pathlib import Path

from mtdiff.errors import ConfigError


def _cmd_report(args) -> None:
    # Imported here, not at the top: `mtdiff.cli` builds this parser for every subcommand
    # (train, sample, ...), which should not pay seconds for matplotlib, seaborn and nbconvert.
    from mtdiff.report.build import build_report
    from mtdiff.report.notebook import render_notebook

    datasets = args.dataset
    if args.notebook_only and not (args.html or args.executed_notebook):
        raise ConfigError("--notebook-only needs --html and/or --executed-notebook")
    for ds in ([] if args.notebook_only else datasets):
        out = args.out.format(dataset=ds, root=args.root) if args.out else str(Path(args.root, ds, "report"))
        if args.out and len(datasets) > 1 and "{dataset}" not in args.out:
            raise ConfigError("--out must contain {dataset} when several --dataset are given, "
                              "e.g. --out results/{dataset}/report")
        source = args.source or f"`mtdiff report --root {args.root} --dataset {ds}`"
        written = build_report(args.root, ds, out, headline_nfe=args.headline_nfe, source=source)
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
    p.add_argument("--source", default=None,
                   help="where the results came from (command and config), shown at the top of summary.md "
                        "(default: this report command)")
    p.add_argument("--html", default=None, help="also execute notebooks/report.ipynb for the datasets and write HTML")
    p.add_argument("--executed-notebook", default=None, help="also save the executed notebook (.ipynb) here")
    p.add_argument("--notebook", default=None, help="report notebook to execute (default: notebooks/report.ipynb)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per notebook cell")
    p.add_argument("--show-code", action="store_true", help="keep the notebook's code cells in the HTML")
    p.add_argument("--notebook-only", action="store_true",
                   help="only execute the notebook (--html / --executed-notebook); write no per-dataset files")
    p.set_defaults(func=_cmd_report)
