# Config validation beyond the schema, and the helpers that turn the config into targets.
import difflib
import sys

from snakemake.exceptions import WorkflowError
from pathlib import Path

RESULTS = config["results"]
ROOT = Path(workflow.basedir).resolve()
# Rules run `python -m mtdiff.cli` from this checkout (also inside --use-conda environments).
MTDIFF = f"PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}} python -m mtdiff.cli"
DATASETS = config["datasets"]

# What each model does comes from its one entry in mtdiff.models.MODELS (and each dataset from
# mtdiff.data.DATASETS), so a new model or dataset needs no edit here. The workflow therefore
# needs mtdiff importable where snakemake runs (the venv or the conda env of README.md).
sys.path.insert(0, str(ROOT))
try:
    from mtdiff.config import load_config
    from mtdiff.data import DATASETS as DATASET_REGISTRY
    from mtdiff.errors import MtdiffError
    from mtdiff.models import MODELS, models_where
except ImportError as exc:
    raise WorkflowError(
        f"mtdiff is not importable here ({exc}); run snakemake from the environment that has mtdiff's "
        f"dependencies (pip install -e . or environment.yml), as the workflow reads its model registry"
    )
DIFFUSION_MODELS = set(models_where(lambda spec: spec.kind == "diffusion"))
LABEL_CONDITIONED = set(models_where(lambda spec: spec.generates_given_class))  # can generate "given class k"
LABEL_HEADS = set(models_where(lambda spec: spec.label_head))
MASK_HEADS = set(models_where(lambda spec: spec.mask_head))
MULTI_TASK = set(models_where(lambda spec: spec.multi_task))


def _check_names():
    """Dataset and model names against the registries (the schema leaves them open so that a
    registry entry is the only place a name is declared); a typo gets a did-you-mean hint."""

    def unknown(option, name, known):
        close = difflib.get_close_matches(str(name), list(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return WorkflowError(f"{option}={name!r} is not known{hint}; accepted: {', '.join(known)}")

    for dataset, d in DATASETS.items():
        if dataset not in DATASET_REGISTRY:
            raise unknown("datasets", dataset, DATASET_REGISTRY)
        for model in d["models"]:
            if model not in MODELS:
                raise unknown(f"datasets.{dataset}.models", model, MODELS)


_check_names()


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
                procs = ["direct"] if model not in MULTI_TASK else d.get("label_procedures", ["head"])
                files += [f"{RESULTS}/{dataset}/metrics/task_{tag}_label_{p}.jsonl" for p in procs]
            if model in MASK_HEADS:
                proc = "direct" if model not in MULTI_TASK else "head"
                files.append(f"{RESULTS}/{dataset}/metrics/task_{tag}_mask_{proc}.jsonl")
            if model in LABEL_CONDITIONED:
                files.append(f"{RESULTS}/{dataset}/metrics/condfid_{tag}.jsonl")
                if judge(dataset, "classifier", seed):
                    files.append(f"{RESULTS}/{dataset}/metrics/cond_{tag}.jsonl")
            # joint coherence: generated labels judged by the classifier, masks by the segmenter
            if model in MULTI_TASK and (
                (model in LABEL_HEADS and judge(dataset, "classifier", seed))
                or (model in MASK_HEADS and judge(dataset, "segmenter", seed))
            ):
                files.append(f"{RESULTS}/{dataset}/metrics/coherence_{tag}.jsonl")
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


# Datasets read from data.root.
ROOTED_DATASETS = {name for name, spec in DATASET_REGISTRY.items() if spec.needs_root}


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
