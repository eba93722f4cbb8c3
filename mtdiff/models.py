"""Every model of the benchmark, registered by name in :data:`MODELS`.

All share one backbone family (:class:`mtdiff.nets.UNet`) and the same heads, so comparisons
are at equal architecture:

=============  ===========  ====================================================================
name           kind         what it is
=============  ===========  ====================================================================
ddpm           diffusion    image only: MT-Diffusion with no extra modality == plain DDPM
ddpm_cond      diffusion    class-conditional DDPM (label embedding, the paper's ADM-cond)
classifier     classifier   backbone encoder + the label head, cross-entropy on clean images
segmenter      segmenter    backbone + the mask head, cross-entropy on clean images
mt_label       diffusion    MT-Diffusion, image + label (the paper's joint image-label model)
mt_mask        diffusion    MT-Diffusion, image + semantic mask
mt_masked      diffusion    MT-Diffusion, image + masked image (the paper's masked-image training)
mt_all         diffusion    MT-Diffusion, image + label + mask (beyond the paper's two modalities)
mt_repr        diffusion    MT-Diffusion, image + representation (domain-extractor features)
=============  ===========  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mtdiff.diffusion import Diffusion
from mtdiff.errors import ConfigError, choice_error
from mtdiff.modalities import MODALITIES, LabelModality, MaskModality
from mtdiff.nets import UNet


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # diffusion | classifier | segmenter
    modalities: tuple[str, ...] = ()  # extra modalities aggregated into the forward process
    class_conditional: bool = False
    description: str = ""

    @property
    def needs(self) -> set[str]:
        """Dataset fields this model trains on."""
        need = {"image"}
        if self.kind == "classifier" or self.class_conditional or "label" in self.modalities:
            need.add("label")
        if self.kind == "segmenter" or "mask" in self.modalities:
            need.add("mask")
        return need


MODELS: dict[str, ModelSpec] = {
    "ddpm": ModelSpec("diffusion", (), description="image DDPM"),
    "ddpm_cond": ModelSpec("diffusion", (), class_conditional=True, description="class-conditional DDPM"),
    "classifier": ModelSpec("classifier", description="U-Net encoder + label head"),
    "segmenter": ModelSpec("segmenter", description="U-Net + mask head"),
    "mt_label": ModelSpec("diffusion", ("label",), description="MT-Diffusion image+label"),
    "mt_mask": ModelSpec("diffusion", ("mask",), description="MT-Diffusion image+mask"),
    "mt_masked": ModelSpec("diffusion", ("masked_image",), description="MT-Diffusion image+masked image"),
    "mt_all": ModelSpec("diffusion", ("label", "mask"), description="MT-Diffusion image+label+mask"),
    "mt_repr": ModelSpec("diffusion", ("representation",), description="MT-Diffusion image+representation"),
}


def get_model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise choice_error("model", name, MODELS)
    return MODELS[name]


def validate_modalities(cfg) -> None:
    """The dataset supplies what the model needs; encoders and w_t schedules are valid."""
    from mtdiff.data import DATASETS

    spec = get_model_spec(cfg.model)
    if cfg.data.dataset not in DATASETS:
        raise choice_error("data.dataset", cfg.data.dataset, DATASETS)
    has = set(DATASETS[cfg.data.dataset].modalities)
    missing = spec.needs - has
    if missing:
        able = sorted(n for n, s in MODELS.items() if s.needs <= has)
        raise ConfigError(
            f"model={cfg.model} needs {', '.join(sorted(missing))}, which dataset {cfg.data.dataset!r} "
            f"does not supply; models possible on it: {', '.join(able)}"
        )
    diffusion = Diffusion.from_config(cfg)
    for name in spec.modalities:
        m = cfg.modalities[name]
        if m.encoder not in MODALITIES[name].ENCODERS:
            raise choice_error(f"modalities.{name}.encoder", m.encoder, MODALITIES[name].ENCODERS)
        add_modality_schedule(diffusion, name, m, cfg.diffusion.max_terminal_coeff)


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
        zt = diffusion.q_sample(z0, t, noise, encodings)
        preds = (forward or self)(zt, t, batch.get("label"))
        terms = {"image": F.mse_loss(preds["image"].float(), diffusion.target(z0, noise, t).float())}
        total = terms["image"]
        for name, mod in self.modalities.items():
            terms[name] = mod.loss(preds[name], values[name])
            total = total + self.loss_weights[name] * terms[name]
        return total, terms


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
        ce = F.cross_entropy((forward or self)(batch["image"]).float(), batch["label"].long())
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
        ce = F.cross_entropy((forward or self)(batch["image"]).float(), batch["mask"].long())
        return ce, {"mask": ce}


_KINDS = {"diffusion": MTDiffusion, "classifier": Classifier, "segmenter": Segmenter}


def build_model(cfg, info) -> nn.Module:
    """The model named by ``cfg.model`` for a dataset described by ``info`` (DatasetInfo)."""
    spec = get_model_spec(cfg.model)
    return _KINDS[spec.kind](cfg, info, spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
