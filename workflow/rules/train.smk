rule train:
    """Train one model with one seed. Reruns resume from the newest checkpoint in the run
    folder (not an output, so a failed job keeps it); final.pt appears only when done.
    With train.gpus = N > 1 in the dataset's run config the job is one torchrun launch of N
    processes (DDP, one GPU each) and asks the scheduler for gpu=N (workflow/profiles/)."""
    input:
        card=f"{RESULTS}/{{dataset}}/data/card.json",
    output:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        summary=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/summary.json",
    params:
        config=lambda wc: run_config(wc.dataset),
        overrides=lambda wc: run_overrides(wc.dataset),
        out=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        launch=lambda wc: train_launcher(wc.dataset),
        settings=train_params,  # resolved config it trains on: an edit reruns it (params trigger)
    resources:
        gpu=lambda wc: train_gpus(wc.dataset),  # 0 for CPU configs: no constraint, no GPU request
    log:
        f"{RESULTS}/{{dataset}}/logs/train_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/train_{{model}}_seed{{seed}}.tsv"
    threads: config.get("threads_per_job", 1)
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} train --config {params.config} --out {params.out} --no-progress --restart-on-change {params.overrides} "
        "--set model={wildcards.model} --set train.seed={wildcards.seed} --set train.threads={threads} > {log} 2>&1"


rule train_extractor:
    """The domain feature extractor of a dataset: a small classifier, fixed recipe, seed 0."""
    input:
        card=f"{RESULTS}/{{dataset}}/data/card.json",
    output:
        f"{RESULTS}/{{dataset}}/extractor/domain.pt",
    params:
        config=lambda wc: run_config(wc.dataset),
        settings=lambda wc: config_params(wc.dataset, only=("data", "eval.extractor_steps")),
    log:
        f"{RESULTS}/{{dataset}}/logs/train_extractor.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/train_extractor.tsv"
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "{MTDIFF} evaluate extractor --config {params.config} --out {output} > {log} 2>&1"
