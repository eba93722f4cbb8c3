"""Run configuration: one dataclass per concern, every knob declared (and documented) once.

A run is described by :class:`RunConfig`. YAML files and ``--set key=value`` overrides are
merged onto the defaults here; unknown keys and wrong types are rejected with the dotted key
named (typos never pass silently), and the resolved config is written beside every run::

    mtdiff train --config config/runs/digits_mt_label.yaml --out results/run \
        --set train.total_kimg=50 --set net.model_channels=64

Units follow NVlabs/edm: budgets in thousands of images (``*_kimg``), so a change of batch
size keeps the number of images seen.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtdiff.errors import ConfigError, choice_error


@dataclass
class DataConfig:
    dataset: str = "digits"  # a name in mtdiff.data.DATASETS
    image_size: int | None = None  # pixels (H == W); None = the dataset's default
    root: str = "data"  # where torchvision-backed datasets live (ignored by embedded ones)
    download: bool = False  # let torchvision download a missing dataset (never the default)
    num_train: int | None = None  # subsample / number of generated scenes; None = all
    num_test: int | None = None
    options: dict = field(default_factory=dict)  # dataset-specific options (e.g. mask_threshold)


@dataclass
class DiffusionConfig:
    num_steps: int = 1000  # T, number of forward steps
    noise_schedule: str = "linear"  # linear | cosine (mtdiff.diffusion.NOISE_SCHEDULES)
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02  # linear schedule only
    prediction: str = "eps"  # what the image head predicts: eps | x0 | v
    # Largest aggregated-mean coefficient c_T^(i) allowed at t = T, so that
    # q(z_T | z_0, X) stays close to N(0, I) (docs/method.md, eq. 5).
    max_terminal_coeff: float = 0.02


@dataclass
class ModalityConfig:
    """One extra modality x_i aggregated into the forward process (docs/method.md, eq. 1)."""

    encoder: str = "fixed"  # E_i: see the modality's ENCODERS in mtdiff.modalities
    weight_schedule: str = "noise_tied"  # w_t^(i): noise_tied | constant_decay
    weight_scale: float = 0.5  # gamma_i = max_t c_t^(i): peak share of e_i in the mean of z_t
    decay_start_frac: float = 0.1  # constant_decay: w_t constant up to this fraction of T ...
    decay_end_frac: float = 0.3  # ... then linear to 0 at this fraction of T, 0 after
    loss_weight: float = 1.0  # lambda_i, weight of the head loss in the multi-task loss (eq. 9)
    # masked_image only: which pixels are hidden, and how many
    mask_pattern: str = "patches"  # patches | center | pixels
    mask_ratio: float = 0.5  # fraction of pixels hidden
    patch_size: int = 4  # pixels, side of a square patch (mask_pattern=patches)
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
    model_channels: int = 32  # base width of the U-Net
    channel_mult: tuple[int, ...] = (1, 2)  # width multiplier per resolution level
    num_res_blocks: int = 1  # residual blocks per level (decoder has one more)
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sizes (pixels) with attention
    head_channels: int = 32  # channels per attention head
    dropout: float = 0.0
    label_head_hidden: int = 128  # hidden width of the label head's MLP


@dataclass
class TrainConfig:
    total_kimg: float = 40.0  # training budget, thousands of images seen
    batch_size: int = 64  # global batch (split across DDP ranks)
    lr: float = 2e-4  # AdamW peak learning rate
    lr_warmup_kimg: float = 2.0  # linear warm-up length
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_halflife_kimg: float = 2.0  # EMA half-life in thousands of images (edm)
    ema_rampup_ratio: float | None = 0.05  # half-life <= this * images seen, early on; None = off
    # auto | fp32 | bf16 | fp16. auto = bf16 autocast where the hardware runs it fast (CUDA,
    # CPUs with AVX-512 BF16/AMX), else fp32. fp16 is CUDA only, with a grad scaler.
    precision: str = "auto"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every_kimg: float = 10.0  # write a resumable checkpoint this often
    keep_last: int = 2  # rolling checkpoints kept (older ones deleted)
    snapshot_kimg: tuple[float, ...] = ()  # extra checkpoints kept for metric-vs-step curves
    log_every_steps: int = 25  # JSONL metrics record every this many steps
    num_workers: int = 0  # DataLoader worker processes decoding lazy (torchvision) datasets
    threads: int | None = None  # torch intra-op threads; None = torch's default
    # CUDA only (ignored on CPU): let fp32 matmuls and cuDNN convolutions use TF32 tensor cores
    # (10-bit mantissa, ~1e-3 relative error per op). Stated explicitly because cuDNN allows
    # TF32 by default and matmuls do not; the value in force is recorded in run.json.
    tf32: bool = True
    # CUDA only: model and image batches in channels_last (NHWC) memory layout, which cuDNN's
    # tensor-core convolutions prefer. Ignored on CPU, where it was measured slower for this
    # U-Net (GroupNorm has no fast NHWC kernel there: 634 vs 556 ms/step, docs/benchmarks.md).
    channels_last: bool = False
    # Number of GPUs = DDP processes, one per GPU. > 1 needs that many visible CUDA GPUs and a
    # torchrun launch (`torchrun --standalone --nproc_per_node=N -m mtdiff.cli train ...`, which
    # the workflow's train rule does); the global batch_size is split across them.
    gpus: int = 1


@dataclass
class SampleConfig:
    sampler: str = "ddim"  # ddpm | ddim (mtdiff.samplers.SAMPLERS)
    steps: int = 50  # number of network evaluations (NFE)
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic, 1 = ancestral)
    num_samples: int = 64
    batch_size: int = 256
    seed: int = 0
    ema: bool = True  # sample from the EMA weights
    clip_x0: bool = True  # clip the predicted z_0 to [-1, 1] at every step


@dataclass
class InferenceConfig:
    """How an MT model labels / segments a real image (docs/method.md, section 6)."""

    label_procedure: str = "head"  # head | elbo
    mask_procedure: str = "head"  # head
    t_infer: int = 1  # timestep at which the head reads the noised real image
    num_draws: int = 4  # noise draws averaged (head) or per timestep (elbo)
    elbo_timesteps: int = 10  # elbo: evenly spaced timesteps per candidate class


@dataclass
class EvalConfig:
    """The metric protocol (docs/method.md has the procedures; records state every choice)."""

    extractor: str = "domain"  # domain (a small classifier trained per dataset) | inception
    # Inception-v3 weights file for extractor=inception (never downloaded: see mtdiff.metrics)
    feature_extractor_weights_path: str | None = None
    feature_extractor_sha256: str | None = None  # optional checksum of that file
    reference_split: str = "train"  # real images FID/KID compare against
    num_samples: int = 1000  # generated images per FID/KID
    kid_subset_size: int = 1000  # capped at the smaller set's size
    prc: bool = False  # also precision/recall (k-NN in feature space)
    extractor_steps: int = 400  # training steps of the domain extractor (fixed recipe, seed 0)
    curve_num_samples: int = 500  # generated images per point of metric-vs-step/NFE curves
    curve_nfe: tuple[int, ...] = (10, 25, 50)  # NFE values of the metric-vs-NFE curve


@dataclass
class RunConfig:
    model: str = "mt_label"  # a name in mtdiff.models.MODELS
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

    def save(self, path: str | Path) -> None:
        from mtdiff.utils import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


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


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in values.items():
        dotted = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {dotted!r}{hint}; accepted: {', '.join(names)}")
        kwargs[k] = _coerce(v, hints[k], dotted)
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(pairs: list[str] | None) -> dict:
    """``["train.lr=1e-3", "net.channel_mult=[1,2,2]"]`` -> nested dict (values parsed as YAML)."""
    nested: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> RunConfig:
    """Defaults <- YAML file <- overrides, validated (types, names, cross-field consistency)."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
        values = loaded
    if isinstance(overrides, dict):
        values = _merge(values, overrides)
    else:
        values = _merge(values, parse_overrides(overrides))
    # Modalities given in a file override field by field, on top of that modality's defaults.
    if "modalities" in values and isinstance(values["modalities"], dict):
        defaults = {k: dataclasses.asdict(v) for k, v in _default_modalities().items()}
        merged = dict(defaults)
        for name, opts in values["modalities"].items():
            if name not in defaults:
                raise ConfigError(f"unknown modality 'modalities.{name}'; accepted: {', '.join(defaults)}")
            if not isinstance(opts, dict):
                raise ConfigError(f"modalities.{name} must be a mapping, got {opts!r}")
            merged[name] = _merge(defaults[name], opts)
        values = dict(values, modalities=merged)
    config = _build(RunConfig, values)
    validate_config(config)
    return config


def config_from_dict(values: dict) -> RunConfig:
    """Rebuild a saved (resolved) config, e.g. from a checkpoint."""
    return load_config(None, values)


def validate_config(cfg: RunConfig) -> None:
    """Cross-field checks that need the registries; raises ConfigError before any work starts."""
    from mtdiff import diffusion, models, samplers

    models.get_model_spec(cfg.model)
    if cfg.diffusion.num_steps < 2:
        raise ConfigError(f"diffusion.num_steps must be >= 2, got {cfg.diffusion.num_steps}")
    if cfg.diffusion.noise_schedule not in diffusion.NOISE_SCHEDULES:
        raise choice_error("diffusion.noise_schedule", cfg.diffusion.noise_schedule, diffusion.NOISE_SCHEDULES)
    if cfg.diffusion.prediction not in diffusion.PREDICTIONS:
        raise choice_error("diffusion.prediction", cfg.diffusion.prediction, diffusion.PREDICTIONS)
    if cfg.sample.sampler not in samplers.SAMPLERS:
        raise choice_error("sample.sampler", cfg.sample.sampler, samplers.SAMPLERS)
    if not 1 <= cfg.sample.steps <= cfg.diffusion.num_steps:
        raise ConfigError(f"sample.steps={cfg.sample.steps} must be in 1..diffusion.num_steps ({cfg.diffusion.num_steps})")
    if cfg.train.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise choice_error("train.precision", cfg.train.precision, ("auto", "fp32", "bf16", "fp16"))
    if cfg.train.batch_size < 1 or cfg.train.total_kimg <= 0:
        raise ConfigError("train.batch_size must be >= 1 and train.total_kimg > 0")
    if cfg.train.gpus < 1:
        raise ConfigError(f"train.gpus={cfg.train.gpus} must be >= 1 (number of GPUs, one DDP process each)")
    if cfg.train.gpus > 1 and (cfg.train.device == "cpu" or cfg.train.device.startswith("cuda:")):
        raise ConfigError(
            f"train.gpus={cfg.train.gpus} needs train.device: cuda or auto (got {cfg.train.device!r}): each DDP "
            f"process takes the GPU of its rank"
        )
    if cfg.train.batch_size % cfg.train.gpus:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by train.gpus={cfg.train.gpus}")
    if not 1 <= cfg.inference.t_infer <= cfg.diffusion.num_steps:
        raise ConfigError(f"inference.t_infer={cfg.inference.t_infer} must be in 1..{cfg.diffusion.num_steps}")
    if cfg.eval.extractor not in ("domain", "inception"):
        raise choice_error("eval.extractor", cfg.eval.extractor, ("domain", "inception"))
    if cfg.eval.extractor == "inception" and not cfg.eval.feature_extractor_weights_path:
        raise ConfigError(
            "eval.extractor=inception needs eval.feature_extractor_weights_path: the local Inception-v3 weights "
            "file (it is never downloaded; see README, 'Inception FID')"
        )
    if cfg.eval.reference_split not in ("train", "test"):
        raise choice_error("eval.reference_split", cfg.eval.reference_split, ("train", "test"))
    if cfg.eval.num_samples < 2 or cfg.eval.curve_num_samples < 2:
        raise ConfigError("eval.num_samples and eval.curve_num_samples must be >= 2 (FID/KID need two images)")
    inf = cfg.inference
    if inf.label_procedure not in samplers.LABEL_PROCEDURES:
        raise choice_error("inference.label_procedure", inf.label_procedure, samplers.LABEL_PROCEDURES)
    if inf.mask_procedure not in samplers.MASK_PROCEDURES:
        raise choice_error("inference.mask_procedure", inf.mask_procedure, samplers.MASK_PROCEDURES)
    if inf.num_draws < 1 or inf.elbo_timesteps < 1:
        raise ConfigError("inference.num_draws and inference.elbo_timesteps must be >= 1")
    models.validate_modalities(cfg)
