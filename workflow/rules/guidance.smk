# Guided conditional generation (docs/method.md, section 7): for every label-conditioned model,
# conditional accuracy and class-balanced conditional FID/KID against the guidance scale
# (eval.guidance_scales), as metric records, and one accuracy-vs-FID plot per dataset.
# Kept apart from evaluate.smk / report.smk; switched off per dataset with guidance_sweep: false.


def guidance_models(dataset):
    d = ds(dataset)
    if not d.get("guidance_sweep", True) or "classifier" not in d["models"]:
        return []  # conditional accuracy needs the trained classifier as judge
    return [m for m in d["models"] if m in LABEL_CONDITIONED]


def guidance_records(dataset):
    return [
        f"{RESULTS}/{dataset}/metrics/guidance_{m}_seed{s}.jsonl"
        for m in guidance_models(dataset)
        for s in ds(dataset)["seeds"]
    ]


def guidance_outputs():
    out = [f"{RESULTS}/{dataset}/report/guidance.png" for dataset in DATASETS if guidance_models(dataset)]
    return out + [f for dataset in DATASETS for f in mask_to_image_records(dataset)]


rule guidance_sweep:
    """Guided samples given classes 0..K-1 in turn at every scale of eval.guidance_scales (head
    guidance for MT models, classifier-free for ddpm_cond): accuracy and FID/KID records."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        judge=f"{RESULTS}/{{dataset}}/train/classifier/seed{{seed}}/final.pt",
        extractor=f"{RESULTS}/{{dataset}}/extractor/domain.pt",
    output:
        f"{RESULTS}/{{dataset}}/metrics/guidance_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/guidance_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/guidance_{{model}}_seed{{seed}}.tsv"
    conda:
        "../../environment.yml"
    threads: config.get("threads_per_job", 1)
    resources:
        gpu=lambda wc: sample_gpus(wc.dataset),
    params:
        run=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        samples=lambda wc: f"{RESULTS}/{wc.dataset}/samples_guided/{wc.model}/seed{wc.seed}",
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}} python -m mtdiff.guidance_sweep "
        "--run {params.run} --judge $(dirname {input.judge}) --extractor-weights {input.extractor} "
        "--samples-root {params.samples} --out {output} > {log} 2>&1"


rule guidance_plot:
    """Accuracy vs class-balanced FID, one line per model (points: guidance scales), and the
    table of the sweep."""
    input:
        lambda wc: guidance_records(wc.dataset),
    output:
        plot=report(
            f"{RESULTS}/{{dataset}}/report/guidance.png",
            category="Conditional generation",
            subcategory="{dataset}",
            labels={"figure": "guidance sweep"},
        ),
        table=f"{RESULTS}/{{dataset}}/report/guidance.csv",
    log:
        f"{RESULTS}/{{dataset}}/logs/guidance_plot.log",
    conda:
        "../../environment.yml"
    threads: 1
    shell:
        "PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}} python -m mtdiff.report_guidance {input} "
        "--plot {output.plot} --table {output.table} > {log} 2>&1"


def mask_to_image_records(dataset):
    """Mask-to-image records (opt-in: datasets.<name>.mask_to_image: true): mt_mask / mt_all with
    head guidance on the mask, and ddpm with segmenter (universal) guidance as the baseline."""
    d = ds(dataset)
    if not d.get("mask_to_image", False) or "segmenter" not in d["models"]:
        return []
    return [
        f"{RESULTS}/{dataset}/metrics/m2i_{m}_seed{s}.jsonl"
        for m in d["models"]
        if m in {"mt_mask", "mt_all", "ddpm"}
        for s in d["seeds"]
    ]


rule mask_to_image:
    """Images generated given the test masks: segmenter mIoU vs the given masks, and FID/KID."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        segmenter=f"{RESULTS}/{{dataset}}/train/segmenter/seed{{seed}}/final.pt",
        extractor=f"{RESULTS}/{{dataset}}/extractor/domain.pt",
    output:
        f"{RESULTS}/{{dataset}}/metrics/m2i_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/m2i_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/m2i_{{model}}_seed{{seed}}.tsv"
    wildcard_constraints:
        model="mt_mask|mt_all|ddpm",
    conda:
        "../../environment.yml"
    threads: config.get("threads_per_job", 1)
    params:
        run=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        samples=lambda wc: f"{RESULTS}/{wc.dataset}/samples_m2i/{wc.model}/seed{wc.seed}",
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}} python -m mtdiff.mask_to_image "
        "--run {params.run} --segmenter $(dirname {input.segmenter}) --extractor-weights {input.extractor} "
        "--samples-root {params.samples} --out {output} > {log} 2>&1"
