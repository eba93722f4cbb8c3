REPORT_PLOTS = ("headline_bars", "training_curves", "metric_vs_nfe", "losses")


rule report_tables:
    """Comparison tables (CSV, Markdown, LaTeX), the quoted paper table, plots (PNG, SVG) and
    data-driven findings of one dataset, from the metric records and training summaries."""
    input:
        records=lambda wc: metric_files(wc.dataset),
        summaries=lambda wc: summary_files(wc.dataset),
        grids=lambda wc: grid_files(wc.dataset),
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
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "{MTDIFF} report --root {RESULTS} --dataset {wildcards.dataset} --out {RESULTS}/{wildcards.dataset}/report "
        "> {log} 2>&1"


rule report_notebook:
    """notebooks/report.ipynb executed on the records (the executed notebook is an output, not
    a log) and rendered to HTML."""
    input:
        tables=expand(f"{RESULTS}/{{dataset}}/report/comparison.csv", dataset=DATASETS),
        notebook=f"{ROOT}/notebooks/report.ipynb",
    output:
        notebook=f"{RESULTS}/report.ipynb",
        html=report(f"{RESULTS}/report.html", category="Report", caption="report/notebook.rst"),
    params:
        datasets=" ".join(f"--dataset {d}" for d in DATASETS),
    log:
        f"{RESULTS}/logs/report_notebook.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_notebook.tsv"
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "{MTDIFF} report --root {RESULTS} {params.datasets} --notebook {input.notebook} --notebook-only "
        "--html {output.html} --executed-notebook {output.notebook} > {log} 2>&1"
