rule sample:
    """Joint (unconditional) samples of a diffusion model: eval.num_samples images with their
    generated labels / masks; ddpm_cond gets balanced classes. The log gets a line of batches
    done every 30 s or 10% of the batches."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
    output:
        npz=f"{RESULTS}/{{dataset}}/samples/{{model}}/seed{{seed}}/samples.npz",
        grid=report(
            f"{RESULTS}/{{dataset}}/samples/{{model}}/seed{{seed}}/grid.png",
            category="Samples",
            subcategory="{dataset}",
            caption="../report/samples.rst",
            labels={"model": "{model}", "seed": "{seed}"},
        ),
    log:
        f"{RESULTS}/{{dataset}}/logs/sample_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/sample_{{model}}_seed{{seed}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config.get("threads_per_job", 1)
    resources:
        gpu=lambda wc: as_gpu(sample_gpus(wc.dataset)),  # 1 for GPU configs, 0 for CPU ones
        gres=lambda wc: as_gres(sample_gpus(wc.dataset)),
    params:
        run=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        out=lambda wc: f"{RESULTS}/{wc.dataset}/samples/{wc.model}/seed{wc.seed}",
        n=lambda wc: sample_count(wc.dataset),
        sampling=lambda wc: sample_args(wc.dataset, wc.model),  # the run config's sample section
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli sample --run {params.run} "
        "--out {params.out} --num-samples {params.n} {params.sampling} --progress log > {log} 2>&1"


rule sample_conditional:
    """Samples generated given class k (k = 0..K-1 in turn): conditional accuracy."""
    input:
        final=f"{RESULTS}/{{dataset}}/train/{{model}}/seed{{seed}}/final.pt",
    output:
        npz=f"{RESULTS}/{{dataset}}/samples_cond/{{model}}/seed{{seed}}/samples.npz",
    log:
        f"{RESULTS}/{{dataset}}/logs/sample_cond_{{model}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/benchmarks/sample_cond_{{model}}_seed{{seed}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: config.get("threads_per_job", 1)
    resources:
        gpu=lambda wc: as_gpu(sample_gpus(wc.dataset)),
        gres=lambda wc: as_gres(sample_gpus(wc.dataset)),
    params:
        run=lambda wc: run_dir(wc.dataset, wc.model, wc.seed),
        out=lambda wc: f"{RESULTS}/{wc.dataset}/samples_cond/{wc.model}/seed{wc.seed}",
        n=lambda wc: sample_count(wc.dataset),
        sampling=lambda wc: sample_args(wc.dataset, wc.model, conditional=True),  # the run config's sample section
    shell:
        "OMP_NUM_THREADS={threads} PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli sample --run {params.run} "
        "--out {params.out} --num-samples {params.n} {params.sampling} --condition label=balanced --no-pngs "
        "--progress log > {log} 2>&1"
