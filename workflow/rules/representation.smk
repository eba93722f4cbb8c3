# Joint image + representation (model mt_repr; docs/method.md, "Representation"): active for a
# dataset whose config lists mt_repr. Its training needs the dataset's domain extractor (the
# train rule asks for it through train_extractor_input / train_extractor_args in common.smk),
# and its records join the dataset's metric files (representation_metric_files).


rule representation:
    """mt_repr: eval.num_samples joint samples; cosine of the generated representations vs the
    extractor's features of the generated images (and the shuffled-pair level), FID/KID."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        extractor=f"{RESULTS}/{{dataset}}/extractor/domain.pt",
    output:
        f"{RESULTS}/{{dataset}}/metrics/repr_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/repr_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/repr_{{model}}_seed{{seed}}.tsv"
    wildcard_constraints:
        model="mt_repr",
    conda:
        "../envs/torch.yaml"
    threads: config.get("threads_per_job", 1)
    resources:
        gpu=lambda wc: as_gpu(sample_gpus(wc.dataset)),
        gres=lambda wc: as_gres(sample_gpus(wc.dataset)),
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate representation --run $(dirname {input.final}) "
        "--extractor-weights {input.extractor} --out {output} > {log} 2>&1"
