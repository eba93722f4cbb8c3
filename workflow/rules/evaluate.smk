# Each rule writes one JSONL file of protocol-stamped metric records under
# results/<dataset>/metrics/; the report reads only these (and the training summaries).
# FID/KID jobs read the reference split's features from one cache per (dataset, extractor,
# reference split), filled once by reference_features (records: extra.reference_cache).

REFERENCE = f"{RESULTS}/{{dataset}}/reference/{{extractor}}_{{split}}/reference.json"


rule reference_features:
    """Features (and FID statistics) of the reference split, extracted once and cached for
    every FID job of the dataset; reference.json is written last, when the cache is complete."""
    input:
        extractor=extractor_input,  # the domain extractor; none for Inception configs
    output:
        REFERENCE,
    log:
        f"{RESULTS}/{{dataset}}/logs/reference_{{extractor}}_{{split}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/reference_{{extractor}}_{{split}}.tsv"
    wildcard_constraints:
        extractor="domain|inception",
        split="train|test",
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
    shell:
        "PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate reference --config {params.config} "
        "{params.overrides} {params.weights} --cache-dir $(dirname {output}) --out {output} "
        "--progress log > {log} 2>&1"


rule anchors:
    """FID/KID anchors: real-data floor (test vs train) and an independent-pixel Gaussian."""
    input:
        extractor=extractor_input,  # the domain extractor; none for Inception configs
        reference=lambda wc: reference_cache(wc.dataset),
    output:
        f"{RESULTS}/{{dataset}}/metrics/anchors.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/anchors.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/anchors.tsv"
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
        "PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate anchors --config {params.config} {params.overrides} "
        "{params.weights} --cache-dir $(dirname {input.reference}) --progress log "
        "--out {output} > {log} 2>&1"


rule fid:
    """FID/KID of the joint samples against the reference split."""
    input:
        samples=f"{RESULTS}/{{dataset}}/samples/{{model}}/seed{{seed}}/samples.npz",
        extractor=extractor_input,  # the domain extractor; none for Inception configs
        reference=lambda wc: reference_cache(wc.dataset),
    output:
        f"{RESULTS}/{{dataset}}/metrics/fid_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/fid_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/fid_{{model}}_seed{{seed}}.tsv"
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
        "PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate generation --samples $(dirname {input.samples}) "
        "{params.weights} --cache-dir $(dirname {input.reference}) --progress log "
        "{params.current} --out {output} > {log} 2>&1"


rule fid_conditional:
    """Conditional FID: samples generated given class k (k = 0..K-1 in turn) against the
    reference split (records named cond_fid, cond_kid_mean, ...)."""
    input:
        samples=f"{RESULTS}/{{dataset}}/samples_cond/{{model}}/seed{{seed}}/samples.npz",
        extractor=extractor_input,  # the domain extractor; none for Inception configs
        reference=lambda wc: reference_cache(wc.dataset),
    output:
        f"{RESULTS}/{{dataset}}/metrics/condfid_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/condfid_{{model}}_seed{{seed}}.log",
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
        "PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate generation --samples $(dirname {input.samples}) "
        "{params.weights} --cache-dir $(dirname {input.reference}) --progress log "
        "{params.current} --metric-prefix cond_ --out {output} > {log} 2>&1"


rule curve:
    """FID/KID against training progress (kept snapshots, every seed) and against NFE (first
    seed only: curve_kind in common.smk); the log gets one line per point (checkpoint step,
    NFE, values)."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        extractor=extractor_input,  # the domain extractor; none for Inception configs
        reference=lambda wc: reference_cache(wc.dataset),
    output:
        f"{RESULTS}/{{dataset}}/metrics/curve_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/curve_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/curve_{{model}}_seed{{seed}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config.get("threads_per_job", 1)
    resources:
        gpu=lambda wc: as_gpu(sample_gpus(wc.dataset)),  # sampling and Inception features on the GPU
        gres=lambda wc: as_gres(sample_gpus(wc.dataset)),
    params:
        current=current_settings(("eval", "sample")),
        weights=extractor_args,
        run=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        what=curve_kind,
        settings=lambda wc: config_params(wc.dataset, wc.model, only=("eval", "sample")),
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate curve --run {params.run} "
        "--what {params.what} {params.weights} --cache-dir $(dirname {input.reference}) --progress log "
        "{params.current} --out {output} > {log} 2>&1"


rule task:
    """Accuracy (labels) or mean IoU (masks) on the test split; MT models through the
    inference procedure in the file name (head | elbo), baselines directly."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
    output:
        f"{RESULTS}/{{dataset}}/metrics/task_{{model}}_seed{{seed}}_{{task}}_{{procedure}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/task_{{model}}_seed{{seed}}_{{task}}_{{procedure}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/task_{{model}}_seed{{seed}}_{{task}}_{{procedure}}.tsv"
    wildcard_constraints:
        task="label|mask",
        procedure="head|elbo|elbo_joint|direct",
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        current=current_settings(("inference",)),
        run=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        procedure=lambda wc: "" if wc.procedure == "direct" else f"--procedure {wc.procedure}",
        settings=lambda wc: config_params(wc.dataset, wc.model, only=("inference",)),
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate task --run {params.run} "
        "--task {wildcards.task} {params.procedure} {params.current} --out {output} > {log} 2>&1"


rule conditional:
    """Conditional accuracy of class-conditional samples, judged by the trained classifier."""
    input:
        samples=f"{RESULTS}/{{dataset}}/samples_cond/{{model}}/seed{{seed}}/samples.npz",
        judge=f"{RESULTS}/{{dataset}}/train/classifier/seed{{seed}}/final.pt",
    output:
        f"{RESULTS}/{{dataset}}/metrics/cond_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/cond_{{model}}_seed{{seed}}.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    shell:
        "PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate conditional --samples $(dirname {input.samples}) "
        "--judge $(dirname {input.judge}) --out {output} > {log} 2>&1"


rule coherence:
    """Joint coherence: generated labels/masks vs the trained classifier/segmenter on the
    generated images."""
    input:
        unpack(coherence_judges),
    output:
        f"{RESULTS}/{{dataset}}/metrics/coherence_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/coherence_{{model}}_seed{{seed}}.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        judges=lambda wc, input: " ".join(
            f"--{flag} $(dirname {input[kind]})"
            for kind, flag in (("classifier", "label-judge"), ("segmenter", "mask-judge"))
            if kind in input.keys()
        ),
    shell:
        "PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate coherence --samples $(dirname {input.samples}) "
        "{params.judges} --out {output} > {log} 2>&1"


rule collect_records:
    """All metric records of a dataset in one CSV (what notebooks and plots read)."""
    input:
        lambda wc: metric_files(wc.dataset),
    output:
        f"{RESULTS}/{{dataset}}/metrics/all_records.csv",
    log:
        f"{RESULTS}/{{dataset}}/logs/collect_records.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    shell:
        "PYTHONPATH=$MTDIFF_ROOT python -c 'import sys; from mtdiff.metrics import records_to_csv; "
        "records_to_csv(sys.argv[2:], sys.argv[1])' {output} {input} > {log} 2>&1"
