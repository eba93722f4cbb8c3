# Config validation beyond the schema, and the helpers that turn the config into targets.
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod
from pathlib import Path

RESULTS = config["results"]
ROOT = Path(workflow.basedir).resolve()
USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method


def _job_environment():
    """Jobs run `PYTHONPATH=$MTDIFF_ROOT python -m mtdiff.cli ...`: this checkout's mtdiff, run by
    - without --use-conda: the interpreter that runs Snakemake (its folder goes first on PATH,
      so `.venv/bin/snakemake` works without activating the venv; jupyter-nbconvert for the
      notebook job comes from there too);
    - with --use-conda: the python of the job's environment (conda's activation puts it first).
    Set as environment variables rather than used in shell commands, so the interpreter's path
    is not a rule parameter (moving the venv does not make every job outdated). Each job
    process parses this file again, so local, cluster and conda jobs all see them."""
    env = {"MTDIFF_ROOT": str(ROOT)}
    if not USE_CONDA:
        bin_dir = str(Path(sys.executable).parent)  # not resolved: a venv's python is a symlink
        search = os.get_exec_path()
        if not search or search[0] != bin_dir:
            env["PATH"] = os.pathsep.join([bin_dir, *search])
    os.environ.update(env)


_job_environment()
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
        out += [
            f"{RESULTS}/{dataset}/data/card.json",
            f"{RESULTS}/{dataset}/report/comparison.csv",
            f"{RESULTS}/{dataset}/metrics/all_records.csv",
        ]
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
    return files


def summary_files(dataset):
    d = ds(dataset)
    return [f"{run_dir(dataset, m, s)}/summary.json" for m in d["models"] for s in d["seeds"]]


def grid_files(dataset):
    d = ds(dataset)
    return [
        f"{RESULTS}/{dataset}/samples/{m}/seed{s}/grid.png"
        for m in d["models"]
        if m in DIFFUSION_MODELS
        for s in d["seeds"]
    ]


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
    """How training starts mtdiff (python from _job_environment): plain python, or torchrun with
    one process per GPU when train.gpus > 1 (`python -m torch.distributed.run` is torchrun)."""
    gpus = int(run_value(dataset, "train.gpus", 1))
    if gpus <= 1:
        return "python -m mtdiff.cli"
    return f"python -m torch.distributed.run --standalone --nproc_per_node={gpus} -m mtdiff.cli"


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


def coherence_judges(wc):
    """Inputs of a coherence job: the joint samples and the judges the model's modalities need."""
    out = {"samples": f"{RESULTS}/{wc.dataset}/samples/{wc.model}/seed{wc.seed}/samples.npz"}
    for kind, needs in (("classifier", "mt_mask"), ("segmenter", "mt_label")):
        if judge(wc.dataset, kind, wc.seed) and wc.model != needs:
            out[kind] = f"{judge(wc.dataset, kind, wc.seed)}/final.pt"
    return out


def reference_cache(dataset):
    """The cached reference features every FID job of `dataset` reads (`mtdiff evaluate
    reference`): one folder per (dataset, extractor, reference split) of the run config; its
    reference.json is written last, when the cache is complete."""
    extractor = run_value(dataset, "eval.extractor", "domain")
    split = run_value(dataset, "eval.reference_split", "train")
    return f"{RESULTS}/{dataset}/reference/{extractor}_{split}/reference.json"
