rule train:
    """Train one model with one seed. Reruns resume from the newest checkpoint in the run
    folder (not an output, so a failed job keeps it); final.pt appears only when done."""
    input:
        card=f"{RESULTS}/{{dataset}}/data/card.json",
    output:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        summary=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/summary.json",
    params:
        config=lambda wc: run_config(wc.dataset),
        overrides=lambda wc: run_overrides(wc.dataset),
        out=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
    log:
        f"{RESULTS}/{{dataset}}/logs/train_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/train_{{model}}_seed{{seed}}.tsv"
    threads: config.get("threads_per_job", 1)
    conda:
        "../../environment.yml"
    shell:
        "{MTDIFF} train --config {params.config} --out {params.out} --no-progress {params.overrides} "
        "--set model={wildcards.model} --set train.seed={wildcards.seed} --set train.threads={threads} > {log} 2>&1"


rule train_extractor:
    """The domain feature extractor of a dataset: a small classifier, fixed recipe, seed 0."""
    input:
        card=f"{RESULTS}/{{dataset}}/data/card.json",
    output:
        f"{RESULTS}/{{dataset}}/extractor/domain.pt",
    params:
        config=lambda wc: run_config(wc.dataset),
    log:
        f"{RESULTS}/{{dataset}}/logs/train_extractor.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/train_extractor.tsv"
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "{MTDIFF} evaluate extractor --config {params.config} --out {output} > {log} 2>&1"
