# Each rule writes one JSONL file of protocol-stamped metric records under
# results/<dataset>/metrics/; the report reads only these (and the training summaries).

EXTRACTOR = f"{RESULTS}/{{dataset}}/extractor/domain.pt"


rule anchors:
    """FID/KID anchors: real-data floor (test vs train) and an independent-pixel Gaussian."""
    input:
        extractor=EXTRACTOR,
    output:
        f"{RESULTS}/{{dataset}}/metrics/anchors.jsonl",
    params:
        config=lambda wc: run_config(wc.dataset),
        overrides=lambda wc: run_overrides(wc.dataset),
    log:
        f"{RESULTS}/{{dataset}}/logs/anchors.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/anchors.tsv"
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "{MTDIFF} evaluate anchors --config {params.config} {params.overrides} --extractor-weights {input.extractor} "
        "--out {output} > {log} 2>&1"


rule fid:
    """FID/KID of the joint samples against the reference split."""
    input:
        samples=f"{RESULTS}/{{dataset}}/samples/{{model}}/seed{{seed}}/samples.npz",
        extractor=EXTRACTOR,
    output:
        f"{RESULTS}/{{dataset}}/metrics/fid_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/fid_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/fid_{{model}}_seed{{seed}}.tsv"
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "{MTDIFF} evaluate generation --samples $(dirname {input.samples}) --extractor-weights {input.extractor} "
        "--out {output} > {log} 2>&1"


rule fid_conditional:
    """Conditional FID: samples generated given class k (k = 0..K-1 in turn) against the
    reference split (records named cond_fid, cond_kid_mean, ...)."""
    input:
        samples=f"{RESULTS}/{{dataset}}/samples_cond/{{model}}/seed{{seed}}/samples.npz",
        extractor=EXTRACTOR,
    output:
        f"{RESULTS}/{{dataset}}/metrics/condfid_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/condfid_{{model}}_seed{{seed}}.log",
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "{MTDIFF} evaluate generation --samples $(dirname {input.samples}) --extractor-weights {input.extractor} "
        "--metric-prefix cond_ --out {output} > {log} 2>&1"


rule curve:
    """FID/KID against training progress (kept snapshots) and against NFE."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        extractor=EXTRACTOR,
    output:
        f"{RESULTS}/{{dataset}}/metrics/curve_{{model}}_seed{{seed}}.jsonl",
    params:
        run=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
    resources:
        gpu=lambda wc: sample_gpus(wc.dataset),  # its sampling uses the GPU; FIDs run on CPU
    log:
        f"{RESULTS}/{{dataset}}/logs/curve_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/curve_{{model}}_seed{{seed}}.tsv"
    threads: config.get("threads_per_job", 1)
    conda:
        "../../environment.yml"
    shell:
        "OMP_NUM_THREADS={threads} {MTDIFF} evaluate curve --run {params.run} --extractor-weights {input.extractor} "
        "--out {output} > {log} 2>&1"


rule task:
    """Accuracy (labels) or mean IoU (masks) on the test split; MT models through the
    inference procedure in the file name (head | elbo), baselines directly."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
    output:
        f"{RESULTS}/{{dataset}}/metrics/task_{{model}}_seed{{seed}}_{{task}}_{{procedure}}.jsonl",
    wildcard_constraints:
        task="label|mask",
        procedure="head|elbo|elbo_joint|direct",
    params:
        run=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        procedure=lambda wc: "" if wc.procedure == "direct" else f"--procedure {wc.procedure}",
    log:
        f"{RESULTS}/{{dataset}}/logs/task_{{model}}_seed{{seed}}_{{task}}_{{procedure}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/task_{{model}}_seed{{seed}}_{{task}}_{{procedure}}.tsv"
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "OMP_NUM_THREADS={threads} {MTDIFF} evaluate task --run {params.run} --task {wildcards.task} "
        "{params.procedure} --out {output} > {log} 2>&1"


rule conditional:
    """Conditional accuracy of class-conditional samples, judged by the trained classifier."""
    input:
        samples=f"{RESULTS}/{{dataset}}/samples_cond/{{model}}/seed{{seed}}/samples.npz",
        judge=f"{RESULTS}/{{dataset}}/train/classifier/seed{{seed}}/final.pt",
    output:
        f"{RESULTS}/{{dataset}}/metrics/cond_{{model}}_seed{{seed}}.jsonl",
    log:
        f"{RESULTS}/{{dataset}}/logs/cond_{{model}}_seed{{seed}}.log",
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "{MTDIFF} evaluate conditional --samples $(dirname {input.samples}) --judge $(dirname {input.judge}) "
        "--out {output} > {log} 2>&1"


def coherence_judges(wc):
    out = {"samples": f"{RESULTS}/{wc.dataset}/samples/{wc.model}/seed{wc.seed}/samples.npz"}
    for kind, needs in (("classifier", "mt_mask"), ("segmenter", "mt_label")):
        if judge(wc.dataset, kind, wc.seed) and wc.model != needs:
            out[kind] = f"{judge(wc.dataset, kind, wc.seed)}/final.pt"
    return out


rule coherence:
    """Joint coherence: generated labels/masks vs the trained classifier/segmenter on the
    generated images."""
    input:
        unpack(coherence_judges),
    output:
        f"{RESULTS}/{{dataset}}/metrics/coherence_{{model}}_seed{{seed}}.jsonl",
    params:
        judges=lambda wc, input: " ".join(
            f"--{flag} $(dirname {input[kind]})"
            for kind, flag in (("classifier", "label-judge"), ("segmenter", "mask-judge"))
            if kind in input.keys()
        ),
    log:
        f"{RESULTS}/{{dataset}}/logs/coherence_{{model}}_seed{{seed}}.log",
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "{MTDIFF} evaluate coherence --samples $(dirname {input.samples}) {params.judges} --out {output} > {log} 2>&1"


rule collect_records:
    """All metric records of a dataset in one CSV (what notebooks and plots read)."""
    input:
        lambda wc: metric_files(wc.dataset),
    output:
        f"{RESULTS}/{{dataset}}/metrics/all_records.csv",
    log:
        f"{RESULTS}/{{dataset}}/logs/collect_records.log",
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "PYTHONPATH={ROOT} python -c 'import sys; from mtdiff.metrics import records_to_csv; "
        "records_to_csv(sys.argv[2:], sys.argv[1])' {output} {input} > {log} 2>&1"
