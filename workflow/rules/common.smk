# Config validation beyond the schema, and the helpers that turn the config into targets.
import sys

from snakemake.exceptions import WorkflowError
from pathlib import Path

RESULTS = config["results"]
ROOT = Path(workflow.basedir).resolve()
# Rules run `python -m mtdiff.cli` from this checkout (also inside --use-conda environments).
MTDIFF = f"PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}} python -m mtdiff.cli"
DATASETS = config["datasets"]
DIFFUSION_MODELS = {"ddpm", "ddpm_cond", "mt_label", "mt_mask", "mt_masked", "mt_all"}
LABEL_CONDITIONED = {"ddpm_cond", "mt_label", "mt_all"}  # can generate "given class k"
LABEL_HEADS = {"classifier", "mt_label", "mt_all"}
MASK_HEADS = {"segmenter", "mt_mask", "mt_all"}


def ds(dataset):
    return DATASETS[dataset]


def run_config(dataset):
    return ds(dataset)["run_config"]


def run_overrides(dataset):
    """`--set` arguments applied to every run of a dataset (config key `overrides`)."""
    return " ".join(f"--set {k}={v}" for k, v in ds(dataset).get("overrides", {}).items())


def _validate_runs():
    """Load every (dataset, model) run config through mtdiff before any job runs, so a bad
    key, a model needing a modality the dataset lacks, or a bad schedule stops here."""
    sys.path.insert(0, str(ROOT))
    try:
        from mtdiff.config import load_config
        from mtdiff.errors import MtdiffError
    except ImportError as exc:  # e.g. --use-conda with a bare snakemake: the jobs still validate
        print(f"note: mtdiff not importable here ({exc}); configs are validated by each job", file=sys.stderr)
        return
    for dataset, d in DATASETS.items():
        if not Path(d["run_config"]).is_file():
            raise WorkflowError(f"datasets.{dataset}.run_config: file {d['run_config']!r} does not exist")
        for model in d["models"]:
            overrides = dict(d.get("overrides", {}), model=model)
            try:
                cfg = load_config(d["run_config"], [f"{k}={v}" for k, v in overrides.items()])
            except MtdiffError as exc:
                raise WorkflowError(f"datasets.{dataset} (model {model}): {exc}")
            if cfg.data.dataset != dataset:
                raise WorkflowError(
                    f"datasets.{dataset}.run_config {d['run_config']!r} is for data.dataset={cfg.data.dataset!r}; "
                    f"use the dataset's own run config"
                )


_validate_runs()


def run_dir(dataset, model, seed):
    return f"{RESULTS}/{dataset}/train/{model}/seed{seed}"


def judge(dataset, kind, seed):
    """Run folder of the trained classifier/segmenter used as a reference judge, if in the config."""
    return run_dir(dataset, kind, seed) if kind in ds(dataset)["models"] else None


def all_outputs():
    out = [f"{RESULTS}/report.html", f"{RESULTS}/report.ipynb"]
    for dataset in DATASETS:
        out += [f"{RESULTS}/{dataset}/data/card.json", f"{RESULTS}/{dataset}/report/comparison.csv",
                f"{RESULTS}/{dataset}/metrics/all_records.csv"]
    return out


def metric_files(dataset):
    """Every metric-record file of a dataset (the report reads these, never logs)."""
    d = ds(dataset)
    files = [f"{RESULTS}/{dataset}/metrics/anchors.jsonl"]
    for model in d["models"]:
        for seed in d["seeds"]:
            tag = f"{model}_seed{seed}"
            if model in DIFFUSION_MODELS:
                files.append(f"{RESULTS}/{dataset}/metrics/fid_{tag}.jsonl")
                if d.get("curves", True):
                    files.append(f"{RESULTS}/{dataset}/metrics/curve_{tag}.jsonl")
            if model in LABEL_HEADS:
                procs = ["direct"] if model == "classifier" else d.get("label_procedures", ["head"])
                files += [f"{RESULTS}/{dataset}/metrics/task_{tag}_label_{p}.jsonl" for p in procs]
            if model in MASK_HEADS:
                proc = "direct" if model == "segmenter" else "head"
                files.append(f"{RESULTS}/{dataset}/metrics/task_{tag}_mask_{proc}.jsonl")
            if model in LABEL_CONDITIONED:
                files.append(f"{RESULTS}/{dataset}/metrics/condfid_{tag}.jsonl")
                if judge(dataset, "classifier", seed):
                    files.append(f"{RESULTS}/{dataset}/metrics/cond_{tag}.jsonl")
            if model in {"mt_label", "mt_mask", "mt_all"} and (
                judge(dataset, "classifier", seed) or judge(dataset, "segmenter", seed)
            ):
                if (model != "mt_mask" and judge(dataset, "classifier", seed)) or (
                    model != "mt_label" and judge(dataset, "segmenter", seed)
                ):
                    files.append(f"{RESULTS}/{dataset}/metrics/coherence_{tag}.jsonl")
    files += inpainting_metric_files(dataset)  # workflow/rules/inpainting.smk
    files += representation_metric_files(dataset)  # workflow/rules/representation.smk
    return files


def summary_files(dataset):
    d = ds(dataset)
    return [f"{run_dir(dataset, m, s)}/summary.json" for m in d["models"] for s in d["seeds"]]


def grid_files(dataset):
    d = ds(dataset)
    return [f"{RESULTS}/{dataset}/samples/{m}/seed{s}/grid.png" for m in d["models"] if m in DIFFUSION_MODELS
            for s in d["seeds"]]


def sample_count(dataset):
    """eval.num_samples of the dataset's run config (plus its overrides)."""
    import yaml

    value = ds(dataset).get("overrides", {}).get("eval.num_samples")
    if value is None:
        value = (yaml.safe_load(Path(run_config(dataset)).read_text()) or {}).get("eval", {}).get("num_samples", 1000)
    return int(value)


def run_value(dataset, key, default=None):
    """A dotted key of the dataset's run config: its `overrides` first, then the YAML file;
    `default` (the value declared in mtdiff/config.py) when neither sets it."""
    import yaml

    overrides = ds(dataset).get("overrides", {})
    if key in overrides:
        return overrides[key]
    node = yaml.safe_load(Path(run_config(dataset)).read_text()) or {}
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def train_gpus(dataset):
    """GPUs a train job of `dataset` asks the scheduler for (resource `gpu`): train.gpus when
    the run config asks for CUDA (train.device cuda / cuda:N) or for several GPUs, else 0, so
    CPU configs (device auto or cpu, one process) leave local and cluster scheduling as before."""
    gpus = int(run_value(dataset, "train.gpus", 1))
    device = str(run_value(dataset, "train.device", "auto"))
    return gpus if device.startswith("cuda") or gpus > 1 else 0


def train_launcher(dataset):
    """How the train rule starts mtdiff: plain python, or torchrun with one process per GPU
    when train.gpus > 1 (`python -m torch.distributed.run` is torchrun, from the same env)."""
    gpus = int(run_value(dataset, "train.gpus", 1))
    if gpus <= 1:
        return MTDIFF
    return MTDIFF.replace(
        "python -m mtdiff.cli", f"python -m torch.distributed.run --standalone --nproc_per_node={gpus} -m mtdiff.cli"
    )


# Datasets read from data.root (mtdiff.data.DATASETS[name].needs_root; tests/test_scaleout.py
# checks the two agree).
ROOTED_DATASETS = {"cifar10", "pets", "imagefolder"}


def data_args(dataset):
    """`mtdiff data` options from the run config's data section (image size; root and download
    for the datasets read from disk), so prepare_data shows the data that training reads."""
    import shlex

    args = []
    size = run_value(dataset, "data.image_size")
    if size is not None:
        args.append(f"--image-size {int(size)}")
    if dataset not in ROOTED_DATASETS:
        return " ".join(args)
    args.append(f"--root {shlex.quote(str(run_value(dataset, 'data.root', 'data')))}")
    if run_value(dataset, "data.download", False) is True:
        args.append("--download")
    return " ".join(args)


def sample_gpus(dataset):
    """GPUs a sampling / curve job asks the scheduler for (resource `gpu`): 1 where training
    asks for GPUs (train_gpus > 0; sampling uses one, device auto), else 0."""
    return 1 if train_gpus(dataset) > 0 else 0
