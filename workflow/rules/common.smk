# Config validation beyond the schema, and the helpers that turn the config into targets.
import difflib
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

# What each model does comes from its one entry in mtdiff.models.MODELS (and each dataset from
# mtdiff.data.DATASETS), so a new model or dataset needs no edit here. The workflow therefore
# needs mtdiff importable where snakemake runs (the venv or the conda env of README.md).
sys.path.insert(0, str(ROOT))
try:
    from mtdiff.config import EXECUTION_KEYS
    from mtdiff.data import DATASETS as DATASET_REGISTRY
    from mtdiff.errors import MtdiffError
    from mtdiff.models import load_run_config
    from mtdiff.registry import MODELS, models_where
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
        for model in d.get("model_overrides", {}):  # a registered model not in `models`: unused, fine
            if model not in MODELS:
                raise unknown(f"datasets.{dataset}.model_overrides", model, MODELS)


_check_names()
# Run-config keys the workflow sets itself (from the models and seeds lists and the dataset
# name), so a dataset's `overrides` may not set them.
WORKFLOW_OWNED_KEYS = ("model", "train.seed", "data.dataset")
# Sections a trained model does not depend on: sampling and evaluation read them, training not.
EVAL_SECTIONS = ("sample", "inference", "eval")


def ds(dataset):
    return DATASETS[dataset]


def run_config(dataset):
    return ds(dataset)["run_config"]


def _check_results():
    """`results` is the output root: an empty string would write to /<dataset>/..."""
    if not isinstance(RESULTS, str) or not RESULTS.strip():
        raise WorkflowError(
            f"results={RESULTS!r} is not accepted; accepted: a non-empty relative or absolute path "
            f"(the output root, e.g. results)"
        )


def _check_overrides(dataset, overrides):
    """Dotted `overrides` of a dataset, flattened; refused if they set a workflow-owned key."""
    from mtdiff.config import flatten_dotted, nest_dotted

    if not isinstance(overrides, dict):
        raise WorkflowError(
            f"datasets.{dataset}.overrides={overrides!r} is not accepted; accepted: a mapping of "
            f"dotted run-config keys to values, e.g. {{train.total_kimg: 32}}"
        )
    flat = flatten_dotted(nest_dotted(overrides))
    for key in flat:
        owned = [k for k in WORKFLOW_OWNED_KEYS if key == k or key.startswith(f"{k}.")]
        if owned:
            raise WorkflowError(
                f"datasets.{dataset}.overrides sets {key}, which the workflow sets itself (model from `models`, "
                f"train.seed from `seeds`, data.dataset from the dataset name); remove it from overrides"
            )
    return flat


def _check_config_files():
    """The workflow's own config files, read again with duplicate keys refused (Snakemake's
    YAML reader silently keeps the last of two equal keys)."""
    from mtdiff.config import load_yaml

    for path in workflow.configfiles or [ROOT / "config" / "config.yaml"]:
        if Path(path).is_file():
            load_yaml(path)


# Every (dataset, model) run config, loaded and checked once by _validate_runs before any job
# runs; run values and rule params are read from these, never from the YAML again.
RUN_CONFIGS = {}


def _validate_runs():
    """Load every (dataset, model) run config through mtdiff before any job runs, so a bad
    key or value, a model needing a modality the dataset lacks, or a bad schedule stops here."""
    _check_results()
    try:
        _check_config_files()
    except MtdiffError as exc:
        raise WorkflowError(str(exc))
    for dataset, d in DATASETS.items():
        if not Path(d["run_config"]).is_file():
            raise WorkflowError(f"datasets.{dataset}.run_config: file {d['run_config']!r} does not exist")
        overrides = _check_overrides(dataset, d.get("overrides", {}))
        RUN_CONFIGS[dataset] = {}
        for model in d["models"]:
            model_overrides = _check_overrides(dataset, d.get("model_overrides", {}).get(model, {}))
            try:
                cfg = load_run_config(d["run_config"], dict(overrides, **model_overrides, model=model))
            except MtdiffError as exc:
                raise WorkflowError(f"datasets.{dataset} (model {model}): {exc}")
            if cfg.data.dataset != dataset:
                raise WorkflowError(
                    f"datasets.{dataset}.run_config {d['run_config']!r} is for data.dataset={cfg.data.dataset!r}; "
                    f"use the dataset's own run config"
                )
            RUN_CONFIGS[dataset][model] = cfg.to_dict()


_validate_runs()


def run_overrides(dataset, model=None):
    """`--set` arguments applied to the runs of a dataset (config key `overrides`) and, given a
    model, that model's own (config key `model_overrides`, e.g. ddpm_cond's condition dropout);
    each value written as JSON (which YAML reads back as the same value) and shell-quoted."""
    import json
    import shlex

    flat = _check_overrides(dataset, ds(dataset).get("overrides", {}))
    if model is not None:
        flat.update(_check_overrides(dataset, ds(dataset).get("model_overrides", {}).get(model, {})))
    return " ".join(f"--set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in flat.items())


def _resolved(dataset, model=None):
    """The resolved run config (a dict) of `model` on `dataset`; without a model, the first
    model's (every section but `model` is the same for all models of a dataset)."""
    configs = RUN_CONFIGS[dataset]
    return configs[model] if model is not None else next(iter(configs.values()))


def run_value(dataset, key, model=None):
    """A dotted key of the dataset's resolved run config (run config file + overrides +
    mtdiff's defaults), as loaded by _validate_runs."""
    node = _resolved(dataset, model)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise WorkflowError(f"run config key {key!r} does not exist (mtdiff/config.py declares the keys)")
        node = node[part]
    return node


def config_params(dataset, model=None, *, only=None, without=()):
    """Resolved run-config values as one canonical JSON string, for a rule's `params:`:
    Snakemake's params rerun trigger then reruns a job exactly when a value it reads changes.
    `only`: dotted keys/sections to keep; `without`: dotted keys/sections to drop."""
    import json

    from mtdiff.config import flatten_dotted

    flat = flatten_dotted(_resolved(dataset, model))
    under = lambda key, prefixes: any(key == p or key.startswith(f"{p}.") for p in prefixes)
    kept = {k: v for k, v in flat.items() if (only is None or under(k, only)) and not under(k, without)}
    return json.dumps(kept, sort_keys=True)


def current_settings(sections):
    """A params function: `--set` pairs of the resolved run config's `sections` (e.g. eval,
    inference) for an `mtdiff evaluate` job, which otherwise reads the run folder's config.yaml
    of training time: after a config edit its rerun (the params trigger of config_params)
    measures with the new values."""

    def settings(wc):
        import json
        import shlex

        from mtdiff.config import flatten_dotted

        model = getattr(wc, "model", None)
        flat = flatten_dotted({s: run_value(wc.dataset, s, model) for s in sections})
        return " ".join(f"--set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in flat.items())

    return settings


def train_params(wc):
    """What a trained model depends on: its whole run config but the sampling and evaluation
    sections, the seed (the job's wildcard) and the keys of how it executes (EXECUTION_KEYS:
    threads, workers, GPUs, compile), which change the weights at most by float rounding."""
    return config_params(wc.dataset, wc.model, without=EVAL_SECTIONS + ("train.seed",) + EXECUTION_KEYS)


def sample_args(dataset, model, conditional=False):
    """`mtdiff sample` options from the current run config's `sample` section: a trained run's
    own config.yaml keeps the values of training time, so an edit of sample.steps (say) reaches
    the samples through these (and reruns the sampling jobs, not training). The guidance
    options go to conditional sampling only (and to a class-conditional model, whose samples
    are always given a class): joint samples have nothing to be guided towards."""
    s = run_value(dataset, "sample", model)
    args = f"--sampler {s['sampler']} --steps {s['steps']} --eta {s['eta']} --seed {s['seed']} --batch-size {s['batch_size']}"
    if conditional or MODELS[model].class_conditional:
        args += f" --guidance {s['guidance']} --guidance-scale {s['guidance_scale']}"
    else:  # explicit: the run folder's sample section may name a guidance (model_overrides)
        args += " --guidance none"
    return args + ("" if s["ema"] else " --no-ema") + ("" if s["clip_x0"] else " --no-clip")


def first_seed(dataset):
    """The seed that also answers the one-seed questions (guidance sweep, metric-vs-NFE curve,
    mask-to-image): they describe how one trained model behaves under a sampling setting, not a
    difference between models, so a second seed would only repeat them (config/README.md)."""
    return ds(dataset)["seeds"][0]


def curve_kind(wc):
    """`mtdiff evaluate curve --what`: metric vs training step on every seed (the convergence
    check compares the last two checkpoints of each seed against the seed-to-seed CI, design.md
    section 9; the final checkpoint is a curve point, not the main FID, whose sample count
    differs), and also metric vs NFE on the first seed only."""
    return "both" if int(wc.seed) == first_seed(wc.dataset) else "steps"


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
    files += inpainting_metric_files(dataset)
    files += representation_metric_files(dataset)
    files += memorization_metric_files(dataset)
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
    """eval.num_samples of the dataset's resolved run config."""
    return int(run_value(dataset, "eval.num_samples"))


def train_gpus(dataset):
    """GPUs a train job of `dataset` asks the scheduler for (resource `gpu`): train.gpus when
    the run config asks for CUDA (train.device cuda / cuda:N) or for several GPUs, else 0, so
    CPU configs (device auto or cpu, one process) leave local and cluster scheduling as before."""
    gpus = int(run_value(dataset, "train.gpus"))
    device = str(run_value(dataset, "train.device"))
    return gpus if device.startswith("cuda") or gpus > 1 else 0


def train_launcher(dataset):
    """How training starts mtdiff (python from _job_environment): plain python, or torchrun with
    one process per GPU when train.gpus > 1 (`python -m torch.distributed.run` is torchrun)."""
    gpus = int(run_value(dataset, "train.gpus"))
    if gpus <= 1:
        return "python -m mtdiff.cli"
    return f"python -m torch.distributed.run --standalone --nproc_per_node={gpus} -m mtdiff.cli"


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
    args.append(f"--root {shlex.quote(str(run_value(dataset, 'data.root')))}")
    if run_value(dataset, "data.download") is True:
        args.append("--download")
    return " ".join(args)


# How a job asks SLURM for GPUs: `gpus` (resource gpu=N -> sbatch --gpus=N, the default) or
# `gres` (resource gres="gpu:N" -> sbatch --gres=gpu:N, for sites that accept only --gres; the
# slurm-gres profile sets it). The two are mutually exclusive in the SLURM executor plugin.
GPU_REQUEST = config.get("gpu_request", "gpus")


def as_gpu(n):
    """Resource `gpu` of a job that needs `n` GPUs (0 when they are asked for as gres)."""
    return n if GPU_REQUEST == "gpus" else 0


def as_gres(n):
    """Resource `gres` of a job that needs `n` GPUs ("" unless gpu_request is gres)."""
    return f"gpu:{n}" if GPU_REQUEST == "gres" and n else ""


def sample_gpus(dataset):
    """GPUs a sampling / curve job asks the scheduler for (resource `gpu`): 1 where training
    asks for GPUs (train_gpus > 0; sampling uses one, device auto), else 0."""
    return 1 if train_gpus(dataset) > 0 else 0


def coherence_judges(wc):
    """Inputs of a coherence job: the joint samples and the judges of the heads the model has."""
    out = {"samples": f"{RESULTS}/{wc.dataset}/samples/{wc.model}/seed{wc.seed}/samples.npz"}
    for kind, heads in (("classifier", LABEL_HEADS), ("segmenter", MASK_HEADS)):
        if judge(wc.dataset, kind, wc.seed) and wc.model in heads:
            out[kind] = f"{judge(wc.dataset, kind, wc.seed)}/final.pt"
    return out


def reference_cache(dataset):
    """The cached reference features every FID job of `dataset` reads (`mtdiff evaluate
    reference`): one folder per (dataset, extractor, reference split) of the run config; its
    reference.json is written last, when the cache is complete."""
    extractor = run_value(dataset, "eval.extractor")
    split = run_value(dataset, "eval.reference_split")
    return f"{RESULTS}/{dataset}/reference/{extractor}_{split}/reference.json"


# Memorization check (workflow/rules/memorization.smk): every diffusion model's joint samples.
def memorization_sets(dataset):
    d = ds(dataset)
    return [f"{m}_seed{s}" for m in d["models"] if m in DIFFUSION_MODELS for s in d["seeds"]]


def memorization_metric_files(dataset):
    tags = ["anchors"] + memorization_sets(dataset) if memorization_sets(dataset) else []
    return [f"{RESULTS}/{dataset}/metrics/memo_{tag}.jsonl" for tag in tags]


def memorization_grid_files(dataset):
    return [f.removesuffix(".jsonl") + ".png" for f in memorization_metric_files(dataset)]


# Inpainting (workflow/rules/inpainting.smk): datasets whose config lists mt_masked and ddpm.
def inpainting_enabled(dataset):
    return {"mt_masked", "ddpm"} <= set(ds(dataset)["models"])


def inpainting_metric_files(dataset):
    if not inpainting_enabled(dataset):
        return []
    return [f"{RESULTS}/{dataset}/metrics/inpainting_seed{seed}.jsonl" for seed in ds(dataset)["seeds"]]


# Image + representation (workflow/rules/representation.smk): model mt_repr.
def representation_models(dataset):
    return [m for m in ds(dataset)["models"] if m == "mt_repr"]


def representation_metric_files(dataset):
    return [
        f"{RESULTS}/{dataset}/metrics/repr_{m}_seed{seed}.jsonl"
        for m in representation_models(dataset)
        for seed in ds(dataset)["seeds"]
    ]


def train_extractor_input(wc):
    """The extractor file a train job needs (mt_repr only)."""
    return [f"{RESULTS}/{wc.dataset}/extractor/domain.pt"] if wc.model == "mt_repr" else []


def train_extractor_args(wc):
    if wc.model != "mt_repr":
        return ""
    return f"--set modalities.representation.extractor_path={RESULTS}/{wc.dataset}/extractor/domain.pt"


def extractor_input(wc):
    """The domain feature extractor a FID job needs; none when the run config measures FID with
    Inception (eval.extractor: inception), so those configs never train or wait for it."""
    if run_value(wc.dataset, "eval.extractor") != "domain":
        return []
    return [f"{RESULTS}/{wc.dataset}/extractor/domain.pt"]


def extractor_args(wc):
    """`--extractor-weights` for the domain extractor (see extractor_input)."""
    files = extractor_input(wc)
    return f"--extractor-weights {files[0]}" if files else ""


# Guided conditional generation and mask-to-image (workflow/rules/guidance.smk).
def guidance_models(dataset):
    d = ds(dataset)
    if not d.get("guidance_sweep", True) or "classifier" not in d["models"]:
        return []  # conditional accuracy needs the trained classifier as judge
    return [m for m in d["models"] if m in LABEL_CONDITIONED]


def guidance_records(dataset):
    seed = first_seed(dataset)  # a per-model sampling property: one seed (first_seed)
    return [f"{RESULTS}/{dataset}/metrics/guidance_{m}_seed{seed}.jsonl" for m in guidance_models(dataset)]


def guidance_outputs():
    out = [f"{RESULTS}/{dataset}/report/guidance.png" for dataset in DATASETS if guidance_models(dataset)]
    return out + [f for dataset in DATASETS for f in mask_to_image_records(dataset)]


def mask_to_image_records(dataset):
    """Mask-to-image records (opt-in: datasets.<name>.mask_to_image: true): mt_mask / mt_all with
    head guidance on the mask, and ddpm with segmenter (universal) guidance as the baseline."""
    d = ds(dataset)
    if not d.get("mask_to_image", False) or "segmenter" not in d["models"]:
        return []
    seed = first_seed(dataset)  # one seed, as the guidance sweep (first_seed)
    return [
        f"{RESULTS}/{dataset}/metrics/m2i_{m}_seed{seed}.jsonl"
        for m in d["models"]
        if m in {"mt_mask", "mt_all", "ddpm"}
    ]
