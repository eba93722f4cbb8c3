REPORT_PLOTS = ("headline_bars", "training_curves", "metric_vs_nfe", "losses")


rule report_tables:
    """Comparison tables (CSV, Markdown, LaTeX), the per-task summary tables with the
    MT-vs-single-task verdicts (summary.md), the quoted paper table, plots (PNG, SVG) and
    data-driven findings of one dataset, from the metric records and training summaries."""
    input:
        records=lambda wc: metric_files(wc.dataset),
        summaries=lambda wc: summary_files(wc.dataset),
        grids=lambda wc: grid_files(wc.dataset),
        memorization_grids=lambda wc: memorization_grid_files(wc.dataset),
    output:
        table=report(
            f"{RESULTS}/{{dataset}}/report/comparison.csv",
            category="Tables",
            subcategory="{dataset}",
            caption="../report/comparison.rst",
        ),
        markdown=f"{RESULTS}/{{dataset}}/report/comparison.md",
        latex=f"{RESULTS}/{{dataset}}/report/comparison.tex",
        findings=f"{RESULTS}/{{dataset}}/report/findings.md",
        summary=report(
            f"{RESULTS}/{{dataset}}/report/summary.md",
            category="Tables",
            subcategory="{dataset}",
            caption="../report/summary.rst",
        ),
        plots=[
            report(
                f"{RESULTS}/{{dataset}}/report/{name}.png",
                category="Plots",
                subcategory="{dataset}",
                caption="../report/plots.rst",
                labels={"plot": name},
            )
            for name in REPORT_PLOTS
        ],
    log:
        f"{RESULTS}/{{dataset}}/logs/report_tables.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/report_tables.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    params:
        root=lambda wc, output: Path(output.table).parents[2],  # <root>/<dataset>/report/comparison.csv
        # summary.md's top line: the command and the config files the results came from
        source=lambda wc: "`snakemake` (`make run`) with config "
        + ", ".join(
            f"`{os.path.relpath(Path(f).resolve(), ROOT)}`"
            for f in workflow.configfiles or [ROOT / "config" / "config.yaml"]
        )
        + " (plus any --config overrides), rule report_tables",
    shell:
        "PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.report --root {params.root} --dataset {wildcards.dataset} "
        "--out $(dirname {output.table}) --source {params.source:q} > {log} 2>&1"


rule report_notebook:
    """notebooks/report.ipynb executed on the records through Snakemake's notebook directive
    (the `snakemake` object gives it the results root and the datasets; change it with
    `snakemake --edit-notebook results/report.ipynb`). The executed notebook is the output."""
    input:
        tables=expand(f"{RESULTS}/{{dataset}}/report/comparison.csv", dataset=DATASETS),
    output:
        notebook=f"{RESULTS}/report.ipynb",
    log:
        # the notebook directive writes the executed notebook to log.notebook; it is this
        # rule's output, so it is replaced, not appended to, and the HTML rule can read it
        notebook=f"{RESULTS}/report.ipynb",
    benchmark:
        f"{RESULTS}/benchmarks/report_notebook.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    params:
        root=lambda wc, input: str(Path(input.tables[0]).parents[2]),  # <root>/<dataset>/report/...
        datasets=list(DATASETS),
    notebook:
        "../../notebooks/report.ipynb"


rule report_html:
    """The executed report notebook rendered to one self-contained HTML page (code hidden)."""
    input:
        notebook=f"{RESULTS}/report.ipynb",
    output:
        html=report(f"{RESULTS}/report.html", category="Report", caption="../report/notebook.rst"),
    log:
        f"{RESULTS}/logs/report_html.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    shell:
        "jupyter nbconvert --to html --no-input --no-prompt --output $(basename {output.html}) "
        "--output-dir $(dirname {output.html}) {input.notebook} > {log} 2>&1"
