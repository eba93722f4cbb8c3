rule train:
    """Train one model with one seed. Reruns resume from the newest checkpoint in the run
    folder (not an output, so a failed job keeps it); final.pt appears only when done.
    With train.gpus = N > 1 in the dataset's run config the job is one torchrun launch of N
    processes (DDP, one GPU each) and asks the scheduler for gpu=N (workflow/profiles/).
    The log gets a progress line (step, images/s, loss, ETA) every 30 s or 10% of the steps."""
    input:
        card=f"{RESULTS}/{{dataset}}/data/card.json",
        extractor=train_extractor_input,  # mt_repr only (common.smk)
    output:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
        summary=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/summary.json",
    log:
        f"{RESULTS}/{{dataset}}/logs/train_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/train_{{model}}_seed{{seed}}.tsv"
    # Training jobs are the long ones (most of the default run): start them before the short
    # evaluation jobs, so that no long job starts last and leaves a core idle at the end.
    priority: 10
    conda:
        "../envs/torch.yaml"
    threads: config.get("threads_per_job", 1)
    resources:
        gpu=lambda wc: as_gpu(train_gpus(wc.dataset)),  # 0 for CPU configs: no constraint, no GPU request
        gres=lambda wc: as_gres(train_gpus(wc.dataset)),
    params:
        config=lambda wc: run_config(wc.dataset),
        overrides=lambda wc: run_overrides(wc.dataset, wc.model),
        out=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        launch=lambda wc: train_launcher(wc.dataset),
        settings=train_params,  # resolved config it trains on: an edit reruns it (params trigger)
        extractor=train_extractor_args,  # mt_repr only (common.smk)
    shell:
        "PYTHONPATH=$MTDIFF_ROOT {params.launch} train --config {params.config} --out {params.out} --progress log "
        "--restart-on-change "
        "{params.overrides} --set model={wildcards.model} --set train.seed={wildcards.seed} "
        "--set train.threads={threads} {params.extractor} > {log} 2>&1"


rule train_extractor:
    """The domain feature extractor of a dataset: a small classifier, fixed recipe, seed 0."""
    input:
        card=f"{RESULTS}/{{dataset}}/data/card.json",
    output:
        f"{RESULTS}/{{dataset}}/extractor/domain.pt",
    log:
        f"{RESULTS}/{{dataset}}/logs/train_extractor.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/train_extractor.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        config=lambda wc: run_config(wc.dataset),
        settings=lambda wc: config_params(wc.dataset, only=("data", "eval.extractor_steps")),
    shell:
        "PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli evaluate extractor --config {params.config} --out {output} "
        "> {log} 2>&1"
