# Joint image + representation (model mt_repr; docs/method.md, "Representation"): active for a
# dataset whose config lists mt_repr. Its training needs the dataset's domain extractor (the
# train rule asks for it through train_extractor_input / train_extractor_args), and its records
# join the dataset's metric files (metric_files in common.smk adds representation_metric_files).


def representation_models(dataset):
    return [m for m in ds(dataset)["models"] if m == "mt_repr"]


def representation_metric_files(dataset):
    return [f"{RESULTS}/{dataset}/metrics/repr_{m}_seed{seed}.jsonl" for m in representation_models(dataset)
            for seed in ds(dataset)["seeds"]]


def train_extractor_input(wc):
    """The extractor file a train job needs (mt_repr only)."""
    return [f"{RESULTS}/{wc.dataset}/extractor/domain.pt"] if wc.model == "mt_repr" else []


def train_extractor_args(wc):
    if wc.model != "mt_repr":
        return ""
    return f"--set modalities.representation.extractor_path={RESULTS}/{wc.dataset}/extractor/domain.pt"


rule representation:
    """mt_repr: eval.num_samples joint samples; cosine of the generated representations vs the
    extractor's features of the generated images (and the shuffled-pair level), FID/KID."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        extractor=f"{RESULTS}/{{dataset}}/extractor/domain.pt",
    output:
        f"{RESULTS}/{{dataset}}/metrics/repr_{{model}}_seed{{seed}}.jsonl",
    wildcard_constraints:
        model="mt_repr",
    resources:
        gpu=lambda wc: sample_gpus(wc.dataset),
    log:
        f"{RESULTS}/{{dataset}}/logs/repr_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/repr_{{model}}_seed{{seed}}.tsv"
    threads: config.get("threads_per_job", 1)
    conda:
        "../../environment.yml"
    shell:
        "OMP_NUM_THREADS={threads} {MTDIFF} evaluate representation --run $(dirname {input.final}) "
        "--extractor-weights {input.extractor} --out {output} > {log} 2>&1"
