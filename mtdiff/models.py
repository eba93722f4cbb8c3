"""The networks of the benchmark's models: one shared backbone family (:class:`mtdiff.nets.UNet`)
and the same heads for every model, so comparisons are at equal architecture.

What each model is (kind, modalities, heads, baselines) is its entry in
:data:`mtdiff.registry.MODELS`, which lists them all; :func:`build_model` builds the network of
an entry, and :func:`check_config` checks a config against the registries.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mtdiff.config import RunConfig, check_values, load_config
from mtdiff.data import DATASETS
from mtdiff.diffusion import NOISE_SCHEDULES, PREDICTIONS, WEIGHT_SCHEDULES, Diffusion
from mtdiff.errors import ConfigError
from mtdiff.modalities import MODALITIES, LabelModality, MaskedImageModality, MaskModality
from mtdiff.nets import UNet
from mtdiff.registry import MODELS, ModelSpec, get_model_spec, models_where  # noqa: F401 (re-exported)
from mtdiff.samplers import GUIDANCES, LABEL_PROCEDURES, MASK_PROCEDURES, SAMPLERS


# ---------------------------------------------------------------------------------------------
# Checks of a config against the registries (mtdiff.config checks each field and field pairs;
# what needs to know the models, datasets, schedules and networks is checked here).


def _registry_choices(registry: str, key: str):
    """Names accepted by the registry a config field declares (mtdiff.config ``opt(registry=)``)."""
    if registry == "encoders":  # modalities.<name>.encoder: that modality's own encoders
        name = key.split(".")[1]
        return MODALITIES[name].ENCODERS if name in MODALITIES else ()
    return {
        "models": MODELS,
        "datasets": DATASETS,
        "noise_schedules": NOISE_SCHEDULES,
        "predictions": PREDICTIONS,
        "weight_schedules": WEIGHT_SCHEDULES,
        "mask_patterns": MaskedImageModality.PATTERNS,
        "samplers": SAMPLERS,
        "guidances": GUIDANCES,
        "label_procedures": LABEL_PROCEDURES,
        "mask_procedures": MASK_PROCEDURES,
    }[registry]


def check_config(cfg: RunConfig) -> None:
    """Everything a config must satisfy that needs the registries; a one-line ConfigError
    naming the key otherwise. Fast for any values: no O(T) Python loop (the schedules are
    closed forms) and the network is shaped on the meta device, without weights."""
    check_values(cfg, _registry_choices)
    spec = get_model_spec(cfg.model)
    dataset = DATASETS[cfg.data.dataset]
    has = set(dataset.modalities)
    missing = spec.needs - has
    if missing:
        able = sorted(n for n, s in MODELS.items() if s.needs <= has)
        raise ConfigError(
            f"model={cfg.model} needs {', '.join(sorted(missing))}, which dataset {cfg.data.dataset!r} "
            f"does not supply; models possible on it: {', '.join(able)}"
        )
    try:
        size = dataset.check_image_size(cfg.data.image_size)
    except ConfigError as exc:
        raise ConfigError(f"data.{exc}") from None
    unknown = sorted(set(cfg.data.options) - set(dataset.options))
    if unknown:
        raise ConfigError(
            f"data.options.{unknown[0]} is not known for dataset {cfg.data.dataset!r}; accepted: "
            f"{', '.join(sorted(dataset.options)) or 'none'}"
        )
    _check_network_shape(cfg, size)
    build_diffusion(cfg)  # each modality's w_t and the terminal condition on c_T (eq. 5)
    masked = cfg.modalities.get("masked_image")
    if "masked_image" in spec.modalities and masked.mask_pattern == "patches" and size % masked.patch_size:
        raise ConfigError(
            f"modalities.masked_image.patch_size={masked.patch_size} must divide the image size {size}"
        )


def _check_network_shape(cfg: RunConfig, image_size: int) -> None:
    """The U-Net's constructor checks (levels vs image size, attention resolutions, head width),
    run on the meta device so no weights are allocated; its messages gain the dotted key."""
    n = cfg.net
    try:
        with torch.device("meta"):
            UNet(in_channels=3, image_size=image_size, out_channels=3, model_channels=n.model_channels,
                 channel_mult=tuple(n.channel_mult), num_res_blocks=n.num_res_blocks,
                 attention_resolutions=tuple(n.attention_resolutions), head_channels=n.head_channels,
                 dropout=n.dropout)
    except ConfigError as exc:
        message = str(exc)
        prefix = "data." if message.startswith("image_size") else "net."
        raise ConfigError(f"{prefix}{message}") from None


def load_run_config(path=None, overrides=None) -> RunConfig:
    """:func:`mtdiff.config.load_config` plus :func:`check_config`: what every entry point that
    takes a config from the user (CLI, workflow) calls before any work starts."""
    cfg = load_config(path, overrides)
    check_config(cfg)
    return cfg


def add_modality_schedule(diffusion: Diffusion, name: str, m, max_terminal_coeff: float | None) -> None:
    diffusion.add_modality(
        name, m.weight_schedule, m.weight_scale, max_terminal_coeff,
        decay_start_frac=m.decay_start_frac, decay_end_frac=m.decay_end_frac,
    )


def build_diffusion(cfg) -> Diffusion:
    """The forward process of ``cfg`` with every extra modality's w_t and c_t registered."""
    diffusion = Diffusion.from_config(cfg)
    for name in get_model_spec(cfg.model).modalities:
        add_modality_schedule(diffusion, name, cfg.modalities[name], cfg.diffusion.max_terminal_coeff)
    return diffusion


def _unet(cfg, info, *, out_channels, time_conditioning=True, num_classes=None, encoder_only=False) -> UNet:
    n = cfg.net
    return UNet(
        in_channels=info.channels,
        image_size=info.image_size,
        out_channels=out_channels,
        model_channels=n.model_channels,
        channel_mult=tuple(n.channel_mult),
        num_res_blocks=n.num_res_blocks,
        attention_resolutions=tuple(n.attention_resolutions),
        head_channels=n.head_channels,
        dropout=n.dropout,
        num_classes=num_classes,
        time_conditioning=time_conditioning,
        encoder_only=encoder_only,
    )


class MTDiffusion(nn.Module):
    """Shared denoising backbone + one head per modality (docs/method.md, section 4).

    With ``modalities=()`` this *is* DDPM: the loss reduces to the eps-MSE (eq. 9 with N = 1)
    and the samplers to DDPM/DDIM, which is how the ``ddpm`` baseline is built.
    """

    kind = "diffusion"

    def __init__(self, cfg, info, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.class_conditional = spec.class_conditional
        self.channels, self.image_size = info.channels, info.image_size
        self.unet = _unet(
            cfg, info, out_channels=info.channels, num_classes=info.num_classes if spec.class_conditional else None
        )
        mods = {}
        for name in spec.modalities:
            kwargs = {"hidden": cfg.net.label_head_hidden} if name in ("label", "representation") else {}
            mods[name] = MODALITIES[name](
                cfg.modalities[name], info, self.unet.feature_channels, self.unet.middle_channels, **kwargs
            )
        self.modalities = nn.ModuleDict(mods)
        self.loss_weights = {name: cfg.modalities[name].loss_weight for name in spec.modalities}
        p = cfg.train.cond_drop_prob
        if not 0 <= p < 1:  # also refuses NaN
            raise ConfigError(f"train.cond_drop_prob={p} must be in [0, 1) (probability a condition is dropped)")
        if p > 0 and not (spec.class_conditional or spec.modalities):
            raise ConfigError(f"train.cond_drop_prob={p} needs a model with a condition; model={cfg.model} has none "
                              f"(use 0, or ddpm_cond / an mt_* model)")
        # recorded so that sampling can refuse guidance=cfg on a model trained without dropout
        self.cond_drop_prob = float(p)

    def forward(self, zt: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Predictions of every head: ``image`` (eps/x0/v) and one entry per extra modality."""
        out = self.unet(zt, t, y if self.class_conditional else None)
        preds = {"image": out.out}
        for name, mod in self.modalities.items():
            preds[name] = mod.head(out)
        return preds

    def loss(self, batch: dict, diffusion: Diffusion, generator: torch.Generator | None = None, forward=None):
        """Multi-task loss (eq. 9): ||target - pred||^2 + sum_i lambda_i * head loss_i.

        Returns (total, {term: value}). ``batch`` may carry ``t`` and ``noise``; otherwise they
        are drawn from ``generator`` (None = torch's global RNG), which also draws masked-image
        patterns. ``forward`` replaces ``self`` for the forward pass (a DDP wrapper).
        """
        z0 = batch["image"]
        n = z0.shape[0]
        t = batch.get("t")
        if t is None:
            t = torch.randint(1, diffusion.num_steps + 1, (n,), generator=generator).to(z0.device)
        noise = batch.get("noise")
        if noise is None:
            noise = torch.randn(z0.shape, generator=generator).to(z0.device)
        values = {name: mod.training_value(batch, generator) for name, mod in self.modalities.items()}
        encodings = {name: mod.encode(values[name]) for name, mod in self.modalities.items()}
        labels = batch.get("label")
        if self.cond_drop_prob > 0:  # classifier-free guidance training (docs/method.md, section 7)
            encodings, labels = self.drop_conditions(encodings, labels, n, z0.device, generator)
        zt = diffusion.q_sample(z0, t, noise, encodings)
        preds = (self if forward is None else forward)(zt, t, labels)
        terms = {"image": F.mse_loss(preds["image"].float(), diffusion.target(z0, noise, t).float())}
        total = terms["image"]
        for name, mod in self.modalities.items():
            terms[name] = mod.loss(preds[name], values[name])
            total = total + self.loss_weights[name] * terms[name]
        return total, terms


    def drop_conditions(self, encodings: dict, labels, n: int, device, generator=None):
        """Replace each example's condition with probability ``cond_drop_prob``: an extra
        modality's encoding by its prior-mean encoding (independently per modality), the class of
        a class-conditional backbone by the null class -1. The heads still see the true values."""
        out = {}
        for name, e in encodings.items():
            drop = (torch.rand(n, generator=generator) < self.cond_drop_prob).to(device).view(-1, 1, 1, 1)
            out[name] = torch.where(drop, self.modalities[name].prior_encoding(n, device).to(e.dtype), e)
        if self.class_conditional and labels is not None:
            drop = (torch.rand(n, generator=generator) < self.cond_drop_prob).to(labels.device)
            labels = torch.where(drop, torch.full_like(labels, -1), labels)
        return out, labels


class Classifier(nn.Module):
    """Single-task baseline: the U-Net's encoder + middle (no decoder: not built, not counted)
    and the label head."""

    kind = "classifier"

    def __init__(self, cfg, info, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        # no decoder: the label head reads the pooled middle features only
        self.unet = _unet(cfg, info, out_channels=None, time_conditioning=False, encoder_only=True)
        self.label = LabelModality(
            cfg.modalities["label"], info, self.unet.feature_channels, self.unet.middle_channels,
            hidden=cfg.net.label_head_hidden,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.label.head(self.unet(x, None, decoder=False))

    def loss(self, batch, diffusion=None, generator=None, forward=None):
        ce = F.cross_entropy((self if forward is None else forward)(batch["image"]).float(), batch["label"].long())
        return ce, {"label": ce}


class Segmenter(nn.Module):
    """Single-task baseline: the U-Net and the mask head, on clean images."""

    kind = "segmenter"

    def __init__(self, cfg, info, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.unet = _unet(cfg, info, out_channels=None, time_conditioning=False)
        self.mask = MaskModality(cfg.modalities["mask"], info, self.unet.feature_channels, self.unet.middle_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask.head(self.unet(x, None))

    def loss(self, batch, diffusion=None, generator=None, forward=None):
        ce = F.cross_entropy((self if forward is None else forward)(batch["image"]).float(), batch["mask"].long())
        return ce, {"mask": ce}


_KINDS = {"diffusion": MTDiffusion, "classifier": Classifier, "segmenter": Segmenter}


def build_model(cfg, info) -> nn.Module:
    """The model named by ``cfg.model`` for a dataset described by ``info`` (DatasetInfo)."""
    spec = get_model_spec(cfg.model)
    return _KINDS[spec.kind](cfg, info, spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
