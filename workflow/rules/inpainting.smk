# Inpainting comparison (mtdiff evaluate inpainting; docs/method.md, "Inpainting"): active for a
# dataset whose config lists both mt_masked and ddpm. Its records join the dataset's metric
# files (metric_files in common.smk adds inpainting_metric_files), so they land in
# all_records.csv and the report.


rule inpainting:
    """Complete the test images (seeded masks, the mt_masked run's mask law) with mt_masked
    (conditional sampling with head guidance; with replacement and resampling as well), ddpm
    with RePaint-style replacement and resampling (equal NFE to mt_masked's replacement method)
    and the nearest-training-image copy; hidden-region PSNR/MSE and FID of the completions, and
    the posterior-mean PSNR/MSE of each diffusion method (eval.inpaint_*)."""
    input:
        mt=f"{RESULTS}/{{dataset}}/train/mt_masked/seed{{seed}}/final.pt",
        ddpm=f"{RESULTS}/{{dataset}}/train/ddpm/seed{{seed}}/final.pt",
        extractor=extractor_input,  # the domain extractor; none for Inception configs
        reference=lambda wc: reference_cache(wc.dataset),  # cached reference features (evaluate.smk)
    output:
        records=f"{RESULTS}/{{dataset}}/metrics/inpainting_seed{{seed}}.jsonl",
        grid=report(
            f"{RESULTS}/{{dataset}}/inpainting/seed{{seed}}/grid.png",
            category="Samples",
            subcategory="{dataset}",
            caption="../report/inpainting.rst",
            labels={"model": "inpainting", "seed": "{seed}"},
        ),
    log:
        f"{RESULTS}/{{dataset}}/logs/inpainting_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/inpainting_seed{{seed}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config.get("threads_per_job", 1)
    resources:
        gpu=lambda wc: as_gpu(sample_gpus(wc.dataset)),
        gres=lambda wc: as_gres(sample_gpus(wc.dataset)),
    params:
        weights=extractor_args,
        current=current_settings(("eval", "sample")),  # eval.inpaint_* and sample.steps of the config now
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate inpainting --mt-run $(dirname {input.mt}) "
        "--baseline-run $(dirname {input.ddpm}) {params.weights} {params.current} "
        "--cache-dir $(dirname {input.reference}) --out {output.records} --grid {output.grid} > {log} 2>&1"
