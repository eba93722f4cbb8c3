"""Run configuration: one dataclass per concern, every knob declared (and documented) once.

A run is described by :class:`RunConfig`. YAML files and ``--set key=value`` overrides are
merged onto the defaults here; unknown keys and wrong types are rejected with the dotted key
named (typos never pass silently), and the resolved config is written beside every run::

    mtdiff train --config config/runs/digits_mt_label.yaml --out results/run \
        --set train.total_kimg=50 --set net.model_channels=64

Every field declares what it accepts where it is declared (``opt(default, ...)``: a range, a
set of choices, or the name of a registry such as ``models``). :func:`load_config` checks all
of them for every source (YAML file, workflow ``overrides``, ``--set``) and the consistency of
fields with each other; the checks that need the registries (model vs dataset, encoders, the
terminal condition of eq. 5) are :func:`mtdiff.models.check_config`, which resolves the
registry names declared here. This module imports nothing of mtdiff but its errors and two
other leaves (mtdiff.options: what a field accepts; mtdiff.io: the YAML reader), so every other
module may import it.

Units follow NVlabs/edm: budgets in thousands of images (``*_kimg``), so a change of batch
size keeps the number of images seen.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtdiff.errors import ConfigError
from mtdiff.io import load_yaml, parse_yaml  # noqa: F401 (mtdiff.config.load_yaml: the YAML reader of every config)
from mtdiff.options import COUNT, FRACTION, MAX_COUNT, POSITIVE, PROBABILITY, check_values, opt

@dataclass
class DataConfig:
    dataset: str = opt("digits", registry="datasets")  # a name in mtdiff.data.DATASETS
    # pixels (H == W); None = the dataset's default. The dataset's own range and the network's
    # levels (a multiple of 2**(levels - 1)) are checked by mtdiff.models.check_config.
    image_size: int | None = opt(None, ge=4, le=1024)
    root: str = "data"  # where torchvision-backed datasets live (ignored by embedded ones)
    download: bool = False  # let torchvision download a missing dataset (never the default)
    num_train: int | None = opt(None, **COUNT)  # subsample / number of generated scenes; None = all
    num_test: int | None = opt(None, **COUNT)
    # dataset-specific options (e.g. mask_threshold); the names the dataset knows
    # (mtdiff.data.DATASETS[name].options) are checked by mtdiff.models.check_config
    options: dict = field(default_factory=dict)
    # Training augmentation: mirror each training image left-right with probability 1/2 (its mask
    # with it), as DDPM, ADM and EDM do on CIFAR-10 / ImageNet. Off for digits (a mirrored digit
    # is not a digit); the GPU run configs switch it on.
    hflip: bool = False


@dataclass
class DiffusionConfig:
    # T, number of forward steps. At most 100,000: every per-step table holds T + 1 float64
    # values per modality; DDPM uses 1,000.
    num_steps: int = opt(1000, ge=2, le=100_000)
    noise_schedule: str = opt("linear", registry="noise_schedules")  # linear | cosine (mtdiff.diffusion)
    beta_start: float = opt(1e-4, gt=0, lt=1)  # linear schedule only; < beta_end
    beta_end: float = opt(0.02, gt=0, lt=1)  # linear schedule only
    prediction: str = opt("eps", registry="predictions")  # what the image head predicts: eps | x0 | v
    # Largest aggregated-mean coefficient c_T^(i) allowed at t = T, so that
    # q(z_T | z_0, X) stays close to N(0, I) (docs/method.md, eq. 5).
    max_terminal_coeff: float = opt(0.02, gt=0, le=1)


@dataclass
class ModalityConfig:
    """One extra modality x_i aggregated into the forward process (docs/method.md, eq. 1)."""

    encoder: str = opt("fixed", registry="encoders")  # E_i: see the modality's ENCODERS in mtdiff.modalities
    weight_schedule: str = opt("noise_tied", registry="weight_schedules")  # w_t^(i): noise_tied | constant_decay
    # gamma_i = max_t c_t^(i): peak share of e_i in the mean of z_t (c_T is bounded by
    # diffusion.max_terminal_coeff, checked by mtdiff.models.check_config)
    weight_scale: float = opt(0.5, **POSITIVE)
    decay_start_frac: float = opt(0.1, **FRACTION)  # constant_decay: w_t constant up to this fraction of T ...
    decay_end_frac: float = opt(0.3, **FRACTION)  # ... then linear to 0 at this fraction of T, 0 after
    loss_weight: float = opt(1.0, ge=0)  # lambda_i, weight of the head loss in the multi-task loss (eq. 9)
    # masked_image only: which pixels are hidden, and how many
    mask_pattern: str = opt("patches", registry="mask_patterns")  # patches | center | pixels
    mask_ratio: float = opt(0.5, gt=0, lt=1)  # fraction of pixels hidden
    patch_size: int = opt(4, **COUNT)  # pixels, side of a square patch (mask_pattern=patches); divides the size
    # representation only: the domain feature extractor file whose features are the modality
    # (mtdiff evaluate extractor --out PATH); needed to build the model (train and sample)
    extractor_path: str | None = None


def _default_modalities() -> dict[str, ModalityConfig]:
    return {
        "label": ModalityConfig(encoder="fixed"),
        "mask": ModalityConfig(encoder="fixed"),
        "masked_image": ModalityConfig(encoder="identity"),
        "representation": ModalityConfig(encoder="linear"),
    }


@dataclass
class NetConfig:
    # base width of the U-Net; head_channels must divide every attention width (checked by
    # mtdiff.models.check_config, which builds the network's shape without weights)
    model_channels: int = opt(32, ge=1, le=4096)
    # width multiplier per resolution level: at least one level, each >= 1; 2**(levels - 1)
    # must divide the image size
    channel_mult: tuple[int, ...] = opt((1, 2), ge=1, le=64, min_items=1)
    num_res_blocks: int = opt(1, ge=1, le=64)  # residual blocks per level (decoder has one more)
    attention_resolutions: tuple[int, ...] = opt((8,), ge=1)  # feature-map sizes (pixels) with attention
    head_channels: int = opt(32, ge=1)  # channels per attention head
    dropout: float = opt(0.0, **PROBABILITY)
    label_head_hidden: int = opt(128, ge=1, le=MAX_COUNT)  # hidden width of the label head's MLP


@dataclass
class TrainConfig:
    total_kimg: float = opt(40.0, **POSITIVE)  # training budget, thousands of images seen
    batch_size: int = opt(64, ge=1, le=MAX_COUNT)  # global batch (split across DDP ranks)
    lr: float = opt(2e-4, gt=0, le=1)  # AdamW peak learning rate
    lr_warmup_kimg: float = opt(2.0, ge=0)  # linear warm-up length
    weight_decay: float = opt(0.0, ge=0)
    betas: tuple[float, float] = opt((0.9, 0.999), **PROBABILITY)  # AdamW (beta1, beta2), each in [0, 1)
    grad_clip: float = opt(1.0, ge=0)  # max global grad norm; 0 disables
    ema_halflife_kimg: float = opt(2.0, ge=0)  # EMA half-life in thousands of images (edm)
    # half-life <= this * images seen, early on; None = off
    ema_rampup_ratio: float | None = opt(0.05, **POSITIVE)
    # auto | fp32 | bf16 | fp16. auto = bf16 autocast where the hardware has native bf16 kernels
    # (CUDA GPUs with bf16, CPUs with AVX-512 BF16/AMX), else fp32 -- "native" is not "faster":
    # for the small 8x8 digits net bf16 is ~20% slower than fp32 even there (docs/benchmarks.md).
    # bf16 and fp32 give different numbers, so auto makes results depend on the machine: the
    # shipped run configs pin it (fp32 on CPU, bf16 on GPU). fp16 is CUDA only, with a grad scaler.
    precision: str = opt("auto", choices=("auto", "fp32", "bf16", "fp16"))
    seed: int = opt(0, ge=0, lt=2**63)
    device: str = opt("auto", pattern=r"auto|cpu|cuda(:\d+)?")  # auto | cpu | cuda | cuda:N
    checkpoint_every_kimg: float = opt(10.0, **POSITIVE)  # write a resumable checkpoint this often
    keep_last: int = opt(2, **COUNT)  # rolling checkpoints kept (older ones deleted)
    snapshot_kimg: tuple[float, ...] = opt((), **POSITIVE)  # extra checkpoints kept for metric-vs-step curves
    log_every_steps: int = opt(25, **COUNT)  # JSONL metrics record every this many steps
    num_workers: int = opt(0, ge=0, le=256)  # DataLoader worker processes decoding lazy (torchvision) datasets
    threads: int | None = opt(None, ge=1, le=1024)  # torch intra-op threads; None = torch's default
    # CUDA only (ignored on CPU): let fp32 matmuls and cuDNN convolutions use TF32 tensor cores
    # (10-bit mantissa, ~1e-3 relative error per op). Stated explicitly because cuDNN allows
    # TF32 by default and matmuls do not; the value in force is recorded in run.json.
    tf32: bool = True
    # CUDA only: model and image batches in channels_last (NHWC) memory layout, which cuDNN's
    # tensor-core convolutions prefer. Off: measured slower for this U-Net on an H200 too
    # (CIFAR-10 net, bf16: 1,369 vs 1,831 images/s at batch 128), and ignored on CPU, where
    # GroupNorm has no fast NHWC kernel (634 vs 556 ms/step; docs/benchmarks.md).
    channels_last: bool = False
    # torch.compile the network's forward pass (inside the DDP wrapper's, if any) for training;
    # sampling and evaluation stay eager. Costs about 70 s of compilation per training process.
    # Measured on one H200 (CIFAR-10 net, bf16, bare step with its loss compiled, mode
    # "default"): 1.35x the images/s at batch 128, 1.78x at 512 (docs/benchmarks.md); not yet
    # run through this trainer on a GPU. Off by default: on the small CPU runs compilation
    # costs more than it saves. The same math to float rounding (fused kernels), so a run
    # may resume with the other value.
    compile: bool = False
    # Number of GPUs = DDP processes, one per GPU. > 1 needs that many visible CUDA GPUs and a
    # torchrun launch (`torchrun --standalone --nproc_per_node=N -m mtdiff.cli train ...`, which
    # the workflow's train rule does); the global batch_size is split across them.
    gpus: int = opt(1, ge=1, le=1024)
    # Condition dropout for classifier-free guidance (docs/method.md, section 7): the probability
    # that a training example's condition is dropped. ddpm_cond: its class is replaced by the
    # null class; MT models: each extra modality's encoding E_i(x_i) is replaced, independently,
    # by the prior-mean encoding (its head is still trained on the true value). 0 = never (no
    # random draw is made, so runs trained before this option exist are reproduced exactly).
    cond_drop_prob: float = opt(0.0, **PROBABILITY)


@dataclass
class SampleConfig:
    sampler: str = opt("ddim", registry="samplers")  # ddpm | ddim (mtdiff.samplers.SAMPLERS)
    steps: int = opt(50, **COUNT)  # number of network evaluations (NFE), at most diffusion.num_steps
    eta: float = opt(0.0, **FRACTION)  # DDIM stochasticity (0 = deterministic, 1 = ancestral)
    # images `mtdiff sample` writes when --num-samples is not given (a quick look at a run); the
    # workflow always passes --num-samples: eval.num_samples (FID), eval.curve_num_samples
    # (curve points). Was sample.num_samples (RENAMED_KEYS).
    default_num_images: int = opt(64, ge=1, le=MAX_COUNT)
    batch_size: int = opt(256, ge=1, le=MAX_COUNT)  # images per sampling batch
    seed: int = opt(0, ge=0, lt=2**63)
    ema: bool = True  # sample from the EMA weights
    clip_x0: bool = True  # clip the predicted z_0 to [-1, 1] at every step
    # Guided conditional sampling (docs/method.md, section 7); applies only when a condition is
    # given (or to ddpm_cond, which is always conditional). none | head | cfg
    # (mtdiff.samplers.GUIDANCES). head: eps - s sqrt(1 - abar_t) grad_{z_t} log p_head(x_i | z_t),
    # MT models only. cfg: (1 + s) eps(condition) - s eps(prior encoding / null class), for
    # models trained with train.cond_drop_prob > 0.
    guidance: str = opt("none", registry="guidances")
    guidance_scale: float = opt(0.0, ge=0)  # s >= 0 (head: s = 1 is the exact conditional; cfg: s = w)


@dataclass
class InferenceConfig:
    """How an MT model labels / segments a real image (docs/method.md, section 6)."""

    label_procedure: str = opt("head", registry="label_procedures")  # head | elbo | elbo_joint (docs/method.md, eq. 12 / 12b)
    mask_procedure: str = opt("head", registry="mask_procedures")  # head
    t_infer: int = opt(1, **COUNT)  # timestep at which the head reads the noised real image (<= T)
    num_draws: int = opt(4, ge=1, le=MAX_COUNT)  # noise draws averaged (head) or per timestep (elbo)
    elbo_timesteps: int = opt(10, ge=1, le=MAX_COUNT)  # elbo: evenly spaced timesteps per candidate class


@dataclass
class EvalConfig:
    """The metric protocol (docs/method.md has the procedures; records state every choice)."""

    # domain (a small classifier trained per dataset) | inception
    extractor: str = opt("domain", choices=("domain", "inception"))
    # Inception-v3 weights file for extractor=inception (never downloaded: see mtdiff.metrics)
    feature_extractor_weights_path: str | None = None
    # optional checksum of that file: 64 hexadecimal digits
    feature_extractor_sha256: str | None = opt(None, pattern=r"[0-9a-fA-F]{64}")
    reference_split: str = opt("train", choices=("train", "test"))  # real images FID/KID compare against
    num_samples: int = opt(1000, ge=2, le=MAX_COUNT)  # generated images per FID/KID (two at least)
    kid_subset_size: int = opt(1000, ge=2, le=MAX_COUNT)  # capped at the smaller set's size
    prc: bool = False  # also precision/recall (k-NN in feature space)
    extractor_steps: int = opt(400, ge=1, le=MAX_COUNT)  # training steps of the domain extractor (fixed recipe, seed 0)
    curve_num_samples: int = opt(500, ge=2, le=MAX_COUNT)  # generated images per point of metric-vs-step/NFE curves
    curve_nfe: tuple[int, ...] = opt((10, 25, 50), **COUNT)  # NFE values of the metric-vs-NFE curve
    # guidance sweep (mtdiff.guidance_sweep): scales s of sample.guidance at which conditional
    # accuracy and class-balanced conditional FID/KID are measured (eval.num_samples each)
    guidance_scales: tuple[float, ...] = opt((0.0, 1.0, 2.0, 4.0, 8.0), ge=0, min_items=1)
    # inpainting (mtdiff evaluate inpainting; docs/method.md, "Inpainting"), at sample.steps.
    # Defaults: the best measured on digits (README; issue 11's floor vs the nearest-neighbour copy).
    # sampler: ddpm = ancestral, as RePaint (on digits better than ddim for RePaint)
    # guidance_scale: head guidance on the masked image for mt_masked's methods (0 = none; no extra NFE)
    # resample_jumps: RePaint resampling rounds per step for both replacement methods (ddpm's
    #   RePaint and mt_masked's mt_repaint); NFE = steps x (1 + jumps), so they stay at equal NFE
    # posterior_samples: K completions averaged per image for the posterior-mean PSNR/MSE rows,
    #   reported next to the per-sample rows (0 = off; >= 2 otherwise; costs K x the NFE)
    inpaint_sampler: str = opt("ddpm", registry="samplers")
    inpaint_guidance_scale: float = opt(2.0, ge=0)
    inpaint_resample_jumps: int = opt(4, ge=0, le=100)
    inpaint_posterior_samples: int = opt(8, ge=0, le=1000)
    # test images completed (the first ones of the test split, the same for every seed and
    # method); None = the whole split. The cost grows as images x NFE x (1 + posterior_samples).
    inpaint_num_images: int | None = opt(None, ge=2, le=MAX_COUNT)


@dataclass
class RunConfig:
    model: str = opt("mt_label", registry="models")  # a name in mtdiff.models.MODELS
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    modalities: dict[str, ModalityConfig] = field(default_factory=_default_modalities)
    net: NetConfig = field(default_factory=NetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        """The resolved config as YAML (what a run folder's config.yaml holds)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Building a config from nested dicts, with type checks that name the dotted key.


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {tp.__name__} options, got {value!r}")
        return _build(tp, value, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        if args and dataclasses.is_dataclass(args[1]):
            return {k: _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} needs {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


#: Keys that change how a run executes (speed, parallelism), not what it trains: the weights
#: they give agree to float rounding (DDP vs one process; compiled vs eager kernels) or exactly
#: (threads, DataLoader workers). A run folder may resume with other values (mtdiff.train's
#: RESUMABLE_KEYS), and the workflow's params trigger ignores them, so an edit of one does not
#: retrain anything (workflow/rules/common.smk, train_params).
EXECUTION_KEYS = ("train.threads", "train.num_workers", "train.gpus", "train.compile")

# Keys renamed since run folders were first written: old dotted key -> new one. A saved config
# (a run folder's config.yaml, a checkpoint's config) is migrated by config_from_dict with a
# warning; a config being written now (YAML file, workflow overrides, --set) must use the new
# name, and the old one is refused with a message naming it.
RENAMED_KEYS = {"sample.num_samples": "sample.default_num_images"}


class RenamedKeyWarning(UserWarning):
    """A saved config used a key's old name; it was read under the new one."""


def migrate_renamed_keys(values: dict) -> dict:
    """A copy of a saved (nested) config with every key of :data:`RENAMED_KEYS` moved to its new
    name, one RenamedKeyWarning per key. The old key's value wins over the new one's: the only
    way both are present is a saved config merged onto today's defaults (checkpoints.read_run_config)."""
    out = values
    for old, new in RENAMED_KEYS.items():
        old_section, old_key = old.rsplit(".", 1)
        new_section, new_key = new.rsplit(".", 1)
        section = out.get(old_section)
        if not isinstance(section, dict) or old_key not in section:
            continue
        out = dict(out)
        moved = {k: v for k, v in section.items() if k != old_key}
        if new_section == old_section:
            moved[new_key] = section[old_key]
            out[old_section] = moved
        else:
            out[old_section] = moved
            out[new_section] = {**(out.get(new_section) or {}), new_key: section[old_key]}
        warnings.warn(f"saved config key {old} was renamed {new}; read as {new}={section[old_key]!r}",
                      RenamedKeyWarning, stacklevel=3)
    return out


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in values.items():
        dotted = f"{prefix}.{k}" if prefix else str(k)
        if dotted in RENAMED_KEYS:
            raise ConfigError(f"config key {dotted!r} was renamed; use {RENAMED_KEYS[dotted]} instead")
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {dotted!r}{hint}; accepted: {', '.join(names)}")
        kwargs[k] = _coerce(v, hints[k], dotted)
    return cls(**kwargs)


def merge(base: dict, update: dict) -> dict:
    """``update`` merged into a copy of ``base``, nested mappings key by key."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


_merge = merge  # the name train.py and older code use


def nest_dotted(values: dict) -> dict:
    """``{"train.lr": 1e-3, "net": {"dropout": 0.1}}`` -> nested dict (dotted keys split), the
    form every source (YAML file, workflow ``overrides``, ``--set``) is merged in."""
    nested: dict = {}
    for key, value in values.items():
        parts = str(key).split(".")
        if any(not p for p in parts):
            raise ConfigError(f"config key {key!r} is not accepted; accepted: dotted names such as train.lr")
        if isinstance(value, dict):
            value = nest_dotted(value)
        node = nested
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = parts[-1]
        node[last] = merge(node[last], value) if isinstance(value, dict) and isinstance(node.get(last), dict) else value
    return nested


def flatten_dotted(values: dict, prefix: str = "") -> dict:
    """Inverse of :func:`nest_dotted`: nested dict -> ``{"train.lr": ...}`` (leaves only)."""
    flat = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            flat.update(flatten_dotted(v, key + "."))
        else:
            flat[key] = v
    return flat


def parse_overrides(pairs: list[str] | None) -> dict:
    """``["train.lr=1e-3", "net.channel_mult=[1,2,2]"]`` -> nested dict (values parsed as YAML)."""
    flat: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        flat[key.strip()] = parse_yaml(raw, f"--set {key.strip()}") if raw.strip() else None
    return nest_dotted(flat)


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> RunConfig:
    """Defaults <- YAML file <- overrides, every field checked against what it accepts and
    against the other fields (:func:`check_values`, :func:`check_consistency`). The checks that
    need the registries are :func:`mtdiff.models.check_config` (``load_run_config`` there does
    both)."""
    values: dict = {}
    if path is not None:
        loaded = load_yaml(path)
        loaded = {} if loaded is None else loaded
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
        values = nest_dotted(loaded)
    if isinstance(overrides, dict):
        values = merge(values, nest_dotted(overrides))
    else:
        values = merge(values, parse_overrides(overrides))
    # Modalities given in a file override field by field, on top of that modality's defaults.
    if "modalities" in values and isinstance(values["modalities"], dict):
        defaults = {k: dataclasses.asdict(v) for k, v in _default_modalities().items()}
        merged = dict(defaults)
        for name, opts in values["modalities"].items():
            if name not in defaults:
                raise ConfigError(f"unknown modality 'modalities.{name}'; accepted: {', '.join(defaults)}")
            if not isinstance(opts, dict):
                raise ConfigError(f"modalities.{name} must be a mapping, got {opts!r}")
            merged[name] = merge(defaults[name], opts)
        values = dict(values, modalities=merged)
    config = _build(RunConfig, values)
    check_values(config)
    check_consistency(config)
    return config


def config_from_dict(values: dict) -> RunConfig:
    """Rebuild a saved (resolved) config, e.g. from a checkpoint or a run folder's config.yaml;
    keys saved under an old name (:data:`RENAMED_KEYS`) are read under the new one."""
    return load_config(None, migrate_renamed_keys(nest_dotted(values)))


def check_consistency(cfg: RunConfig) -> None:
    """Checks between fields of one config (no registry needed)."""
    T = cfg.diffusion.num_steps
    d = cfg.diffusion
    if d.noise_schedule == "linear" and not d.beta_start < d.beta_end:
        raise ConfigError(f"diffusion.beta_start={d.beta_start} must be below diffusion.beta_end={d.beta_end}")
    if cfg.sample.steps > T:
        raise ConfigError(f"sample.steps={cfg.sample.steps} must be in 1..diffusion.num_steps ({T})")
    if cfg.inference.t_infer > T:
        raise ConfigError(f"inference.t_infer={cfg.inference.t_infer} must be in 1..diffusion.num_steps ({T})")
    for name, m in cfg.modalities.items():
        if m.decay_start_frac > m.decay_end_frac:
            raise ConfigError(
                f"modalities.{name}.decay_start_frac={m.decay_start_frac} must not exceed "
                f"modalities.{name}.decay_end_frac={m.decay_end_frac}"
            )
    tc = cfg.train
    if tc.gpus > 1 and (tc.device == "cpu" or tc.device.startswith("cuda:")):
        raise ConfigError(
            f"train.gpus={tc.gpus} needs train.device: cuda or auto (got {tc.device!r}): each DDP "
            f"process takes the GPU of its rank"
        )
    if tc.batch_size % tc.gpus:
        raise ConfigError(f"train.batch_size={tc.batch_size} must be divisible by train.gpus={tc.gpus}")
    size = cfg.data.image_size
    levels = len(cfg.net.channel_mult)
    if size is not None and size % 2 ** (levels - 1):
        raise ConfigError(
            f"data.image_size={size} is not accepted with net.channel_mult={list(cfg.net.channel_mult)} "
            f"({levels} levels); accepted: a multiple of {2 ** (levels - 1)}, or fewer levels"
        )
    if cfg.eval.extractor == "inception" and not cfg.eval.feature_extractor_weights_path:
        raise ConfigError(
            "eval.extractor=inception needs eval.feature_extractor_weights_path: the local Inception-v3 weights "
            "file (it is never downloaded; see README, 'Inception FID')"
        )
