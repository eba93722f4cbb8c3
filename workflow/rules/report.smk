rule report_tables:
    """Comparison tables (CSV, Markdown, LaTeX), plots (PNG, SVG) and findings of a dataset."""
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
        plots=report(
            directory(f"{RESULTS}/{{dataset}}/report/plots"),
            patterns=["{name}.png"],
            category="Plots",
            subcategory="{dataset}",
            caption="../report/plots.rst",
        ),
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
    """notebooks/report.ipynb executed on the records (the executed notebook is the output),
    and its HTML render."""
    input:
        tables=expand(f"{RESULTS}/{{dataset}}/report/comparison.csv", dataset=DATASETS),
        notebook=f"{ROOT}/notebooks/report.ipynb",
    output:
        notebook=f"{RESULTS}/report.ipynb",
        html=report(f"{RESULTS}/report.html", category="Report", caption="report/notebook.rst"),
    params:
        datasets=",".join(DATASETS),
    log:
        f"{RESULTS}/logs/report_notebook.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_notebook.tsv"
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "PYTHONPATH={ROOT} python -m mtdiff.report_notebook --notebook {input.notebook} --root {RESULTS} "
        "--datasets {params.datasets} --out {output.notebook} --html {output.html} > {log} 2>&1"
