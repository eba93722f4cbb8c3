rule prepare_data:
    """Prepared splits (.npz), dataset card and preview grid of one dataset."""
    output:
        card=f"{RESULTS}/{{dataset}}/data/card.json",
        preview=report(
            f"{RESULTS}/{{dataset}}/data/preview.png",
            category="Data",
            subcategory="{dataset}",
            caption="../report/preview.rst",
        ),
    log:
        f"{RESULTS}/{{dataset}}/logs/prepare_data.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/prepare_data.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        data=lambda wc: data_args(wc.dataset),  # data.root / image_size / download of the run config
    shell:
        "PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli data --dataset {wildcards.dataset} "
        "--out $(dirname {output.card}) {params.data} > {log} 2>&1"
