# Guided conditional generation (docs/method.md, section 7): for every label-conditioned model,
# conditional accuracy and class-balanced conditional FID/KID against the guidance scale
# (eval.guidance_scales), as metric records, and one accuracy-vs-FID plot per dataset.
# Switched off per dataset with guidance_sweep: false; the helpers that choose the jobs are in
# common.smk (guidance_models, guidance_records, guidance_outputs, mask_to_image_records).


rule guidance_sweep:
    """Guided samples given classes 0..K-1 in turn at every scale of eval.guidance_scales (head
    guidance for MT models, classifier-free for ddpm_cond): accuracy and FID/KID records."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        judge=f"{RESULTS}/{{dataset}}/train/classifier/seed{{seed}}/final.pt",
        extractor=extractor_input,  # the domain extractor; none for Inception configs
        reference=lambda wc: reference_cache(wc.dataset),  # cached reference features (evaluate.smk)
    output:
        f"{RESULTS}/{{dataset}}/metrics/guidance_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/guidance_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/guidance_{{model}}_seed{{seed}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config.get("threads_per_job", 1)
    resources:
        gpu=lambda wc: as_gpu(sample_gpus(wc.dataset)),
        gres=lambda wc: as_gres(sample_gpus(wc.dataset)),
    params:
        current=current_settings(("eval", "sample")),
        weights=extractor_args,
        run=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        samples=lambda wc: f"{RESULTS}/{wc.dataset}/samples_guided/{wc.model}/seed{wc.seed}",
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.guidance_sweep "
        "--run {params.run} --judge $(dirname {input.judge}) {params.weights} "
        "--samples-root {params.samples} {params.current} --cache-dir $(dirname {input.reference}) "
        "--out {output} > {log} 2>&1"


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
        "../envs/report.yaml"
    threads: 1
    shell:
        "PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.report.guidance {input} "
        "--plot {output.plot} --table {output.table} > {log} 2>&1"


rule mask_to_image:
    """Images generated given the test masks: segmenter mIoU vs the given masks, and FID/KID."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        segmenter=f"{RESULTS}/{{dataset}}/train/segmenter/seed{{seed}}/final.pt",
        extractor=extractor_input,  # the domain extractor; none for Inception configs
        reference=lambda wc: reference_cache(wc.dataset),  # cached reference features (evaluate.smk)
    output:
        f"{RESULTS}/{{dataset}}/metrics/m2i_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/m2i_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/m2i_{{model}}_seed{{seed}}.tsv"
    wildcard_constraints:
        model="mt_mask|mt_all|ddpm",
    conda:
        "../envs/torch.yaml"
    threads: config.get("threads_per_job", 1)
    resources:
        gpu=lambda wc: as_gpu(sample_gpus(wc.dataset)),
        gres=lambda wc: as_gres(sample_gpus(wc.dataset)),
    params:
        weights=extractor_args,
        run=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        samples=lambda wc: f"{RESULTS}/{wc.dataset}/samples_m2i/{wc.model}/seed{wc.seed}",
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.mask_to_image "
        "--run {params.run} --segmenter $(dirname {input.segmenter}) {params.weights} "
        "--samples-root {params.samples} --cache-dir $(dirname {input.reference}) --out {output} > {log} 2>&1"
