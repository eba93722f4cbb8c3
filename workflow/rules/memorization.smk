# Memorization check (docs/method.md, "Memorization check"; mtdiff evaluate memorization): every
# diffusion model's joint samples (those of the FID rule) against the training split, in pixels
# and in the FID extractor's features, and the anchors of each dataset (the test split, about
# 1% by construction; a copier of training images, 100%). Records join the dataset's metric
# files (memorization_metric_files in common.smk), grids the report's inputs.


rule memorization:
    """Memorized fraction of the joint samples (share closer to a training image than the 1st
    percentile of the test images' nearest-training distances) and the closest pairs' grid."""
    input:
        samples=f"{RESULTS}/{{dataset}}/samples/{{model}}/seed{{seed}}/samples.npz",
        extractor=extractor_input,  # the domain extractor; none for Inception configs
    output:
        records=f"{RESULTS}/{{dataset}}/metrics/memo_{{model}}_seed{{seed}}.jsonl",
        grid=report(
            f"{RESULTS}/{{dataset}}/metrics/memo_{{model}}_seed{{seed}}.png",
            category="Memorization",
            subcategory="{dataset}",
            caption="../report/memorization.rst",
            labels={"model": "{model}", "seed": "{seed}"},
        ),
    log:
        f"{RESULTS}/{{dataset}}/logs/memo_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/memo_{{model}}_seed{{seed}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        gpu=lambda wc: as_gpu(sample_gpus(wc.dataset)),  # Inception features on the GPU of GPU configs
        gres=lambda wc: as_gres(sample_gpus(wc.dataset)),
    params:
        current=current_settings(("eval",)),
        weights=extractor_args,
        settings=lambda wc: config_params(wc.dataset, wc.model, only=("eval",)),
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate memorization "
        "--samples $(dirname {input.samples}) {params.weights} {params.current} --out {output.records} "
        "--grid {output.grid} > {log} 2>&1"


rule memorization_anchors:
    """The memorization anchors of a dataset: real_floor (the test split) and copier
    (eval.num_samples training images), with the test split's closest pairs as a grid."""
    input:
        extractor=extractor_input,  # the domain extractor; none for Inception configs
    output:
        records=f"{RESULTS}/{{dataset}}/metrics/memo_anchors.jsonl",
        grid=report(
            f"{RESULTS}/{{dataset}}/metrics/memo_anchors.png",
            category="Memorization",
            subcategory="{dataset}",
            caption="../report/memorization.rst",
            labels={"model": "real_floor (test split)", "seed": "-"},
        ),
    log:
        f"{RESULTS}/{{dataset}}/logs/memo_anchors.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/memo_anchors.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        gpu=lambda wc: as_gpu(sample_gpus(wc.dataset)),  # Inception features on the GPU of GPU configs
        gres=lambda wc: as_gres(sample_gpus(wc.dataset)),
    params:
        weights=extractor_args,
        config=lambda wc: run_config(wc.dataset),
        overrides=lambda wc: run_overrides(wc.dataset),
        settings=lambda wc: config_params(wc.dataset, only=("data", "eval")),
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate memorization-anchors "
        "--config {params.config} {params.overrides} {params.weights} --out {output.records} "
        "--grid {output.grid} > {log} 2>&1"
