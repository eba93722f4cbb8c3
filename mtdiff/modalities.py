"""Modalities: each owns its encoder E_i into the diffusion space, its decoder head, its loss,
and its sampling-time (expected) encoding. Registered by name in :data:`MODALITIES`.

The image is the base of the diffusion space (z_0 = x_image, E_image = identity) and is not an
object here: its head is the backbone's output conv (eps / x0 / v prediction). Every other
modality x_i is aggregated into the forward process through e_i = E_i(x_i), an image-shaped
tensor (docs/method.md, eq. 1), and read back by a head p_theta(x_i | z_t) (eq. 8).

Encodings are kept at unit scale (label patterns: unit RMS each; mask palette: unit RMS over
the classes; the masked image: as is, in [-1, 1]) so that the weight scale gamma_i
(``weight_scale``) means about the same thing for every modality and encoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mtdiff.config import ModalityConfig
from mtdiff.errors import ConfigError, choice_error


def group_norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(32, channels)
    return nn.GroupNorm(groups, channels)


def _unit_rms(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x / x.pow(2).mean(dim=dims, keepdim=True).clamp_min(1e-12).sqrt()


def _smooth_patterns(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """``n`` fixed, seeded, low-frequency image-shaped patterns with unit RMS each.

    Drawn at 1/4 resolution and upsampled, so they sit in the same frequency band as image
    content and the backbone's receptive field sees them whole.
    """
    g = torch.Generator().manual_seed(seed)
    low_res = max(size // 4, min(size, 4))  # at least 4x4 degrees of freedom per channel
    low = torch.randn(n, channels, low_res, low_res, generator=g)
    up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return _unit_rms(up, (1, 2, 3))


class Modality(nn.Module):
    """Base class. Subclasses set ``name``, ``data_key`` (the dataset field they read),
    ``ENCODERS`` and implement the methods below."""

    name: str = ""
    data_key: str = ""
    ENCODERS: tuple[str, ...] = ()

    def __init__(self, cfg: ModalityConfig, info, feature_channels: int, middle_channels: int):
        super().__init__()
        if cfg.encoder not in self.ENCODERS:
            raise choice_error(f"modalities.{self.name}.encoder", cfg.encoder, self.ENCODERS)
        self.cfg = cfg
        self.channels = info.channels
        self.size = info.image_size

    # E_i(x_i): image-shaped encoding of the true value (training, conditional generation)
    def encode(self, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # head output from the backbone's UNetOutput
    def head(self, unet_out) -> torch.Tensor:
        raise NotImplementedError

    # the head's negative log-likelihood (up to constants): the lambda_i term of eq. 9
    def loss(self, pred: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # E[E_i(x_i)] under the head's prediction (eq. 10): stands in for the unknown encoding
    def expected_encoding(self, pred: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # the generated value (class ids, mask, image) from the head's prediction
    def decode(self, pred: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # E[E_i(x_i)] under the prior, for inference on real data with x_i unknown
    def prior_encoding(self, n: int, device) -> torch.Tensor:
        raise NotImplementedError

    # log p_head(x_i = value | z_t) per example, (N,), differentiable in ``pred``: the term
    # whose z_t-gradient head guidance adds to the score (docs/method.md, section 7)
    def log_likelihood(self, pred: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"modality {self.name!r} has no head log-likelihood for guidance")

    # refuse a given value of the wrong shape or range before any sampling work (ConfigError)
    def check_value(self, value: torch.Tensor, option: str) -> None:
        want = (self.channels, self.size, self.size)
        if value.dim() != 4 or tuple(value.shape[1:]) != want:
            raise ConfigError(f"{option}: a {self.name} must have shape (N, {', '.join(map(str, want))}), "
                              f"got {tuple(value.shape)}")

    def training_value(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """The modality's value for a training batch (dataset field, or derived from it)."""
        return batch[self.data_key]

    def training_draws(self, n: int, image_shape: tuple[int, ...], generator: torch.Generator) -> dict:
        """Random draws this modality needs per training example, made by the trainer for the
        global batch (mtdiff.batches.step_randomness) so DDP ranks draw what one process would."""
        return {}


class LabelModality(Modality):
    """A class label. E(k) is an image-shaped pattern per class; the head is an MLP on the
    backbone's pooled middle features (lowest resolution, widest receptive field)."""

    name, data_key = "label", "label"
    ENCODERS = ("fixed", "learned")

    def __init__(self, cfg, info, feature_channels, middle_channels, hidden: int = 128):
        super().__init__(cfg, info, feature_channels, middle_channels)
        self.num_classes = info.num_classes
        patterns = _smooth_patterns(self.num_classes, self.channels, self.size, seed=1234)
        if cfg.encoder == "fixed":  # the paper's "pretrained generator" option, frozen
            self.register_buffer("patterns", patterns)
        else:  # learned, initialised from the fixed patterns; renormalised in encode
            self.patterns = nn.Parameter(patterns.clone())
        self.mlp = nn.Sequential(
            nn.Linear(middle_channels, hidden), nn.SiLU(), nn.Linear(hidden, self.num_classes)
        )

    def codebook(self) -> torch.Tensor:
        return _unit_rms(self.patterns, (1, 2, 3))

    def encode(self, value):
        return self.codebook()[value.long()]

    def head(self, unet_out):
        return self.mlp(unet_out.middle.float().mean(dim=(2, 3)))

    def loss(self, pred, value):
        return F.cross_entropy(pred.float(), value.long())

    def expected_encoding(self, pred):
        return torch.einsum("nk,kchw->nchw", pred.float().softmax(-1), self.codebook())

    def decode(self, pred):
        return pred.argmax(-1)

    def prior_encoding(self, n, device):
        return self.codebook().mean(0, keepdim=True).expand(n, -1, -1, -1).to(device)

    def log_likelihood(self, pred, value):
        return pred.float().log_softmax(-1).gather(-1, value.long().view(-1, 1)).squeeze(-1)

    def check_value(self, value, option):
        if value.dim() != 1 or value.dtype.is_floating_point:
            raise ConfigError(f"{option}: labels must be a 1-D tensor of class ids, got shape {tuple(value.shape)} "
                              f"and dtype {value.dtype}")
        bad = value[(value < 0) | (value >= self.num_classes)]
        if bad.numel():
            raise ConfigError(f"{option}: class id {int(bad[0])} is out of range; accepted: 0..{self.num_classes - 1}")


class MaskModality(Modality):
    """A semantic mask (0 = background). E paints each pixel with its class's colour (a
    C-vector per class); the head is a conv on the last decoder features (full resolution)."""

    name, data_key = "mask", "mask"
    ENCODERS = ("fixed", "learned")

    def __init__(self, cfg, info, feature_channels, middle_channels):
        super().__init__(cfg, info, feature_channels, middle_channels)
        self.num_classes = info.num_mask_classes
        K, C = self.num_classes, self.channels
        if C == 1:  # evenly spread grey levels, seeded order
            order = torch.randperm(K, generator=torch.Generator().manual_seed(4321))
            palette = torch.linspace(-1, 1, K)[order].view(K, 1)
        else:
            palette = torch.randn(K, C, generator=torch.Generator().manual_seed(4321))
        palette = palette / palette.pow(2).mean().sqrt()
        if cfg.encoder == "fixed":
            self.register_buffer("palette", palette)
        else:
            self.palette = nn.Parameter(palette.clone())
        self.conv = nn.Sequential(
            group_norm(feature_channels), nn.SiLU(), nn.Conv2d(feature_channels, K, 3, padding=1)
        )

    def colours(self) -> torch.Tensor:
        return self.palette / self.palette.pow(2).mean().sqrt()  # unit RMS over classes

    def encode(self, value):
        return self.colours()[value.long()].permute(0, 3, 1, 2)

    def head(self, unet_out):
        return self.conv(unet_out.features)

    def loss(self, pred, value):
        return F.cross_entropy(pred.float(), value.long())

    def expected_encoding(self, pred):
        return torch.einsum("nkhw,kc->nchw", pred.float().softmax(1), self.colours())

    def decode(self, pred):
        return pred.argmax(1)

    def prior_encoding(self, n, device):
        mean = self.colours().mean(0).view(1, -1, 1, 1)
        return mean.expand(n, -1, self.size, self.size).to(device)

    def log_likelihood(self, pred, value):
        # sum over pixels of log p(mask[h, w] | z_t): pixels independent given z_t under the head
        logp = pred.float().log_softmax(1).gather(1, value.long().unsqueeze(1))
        return logp.flatten(1).sum(1)

    def check_value(self, value, option):
        if value.dim() != 3 or tuple(value.shape[1:]) != (self.size, self.size) or value.dtype.is_floating_point:
            raise ConfigError(f"{option}: a mask must be an integer tensor of shape (N, {self.size}, {self.size}), "
                              f"got shape {tuple(value.shape)} and dtype {value.dtype}")
        bad = value[(value < 0) | (value >= self.num_classes)]
        if bad.numel():
            raise ConfigError(f"{option}: mask class {int(bad[0])} is out of range; accepted: 0..{self.num_classes - 1}")


class MaskedImageModality(Modality):
    """The paper's masked-image training: x_i = the image with a fraction of pixels hidden
    (set to 0, mid-grey). E = identity (the masked image already lives in Z). The head, a conv
    on the last decoder features, reconstructs the masked image (MSE)."""

    name, data_key = "masked_image", "image"
    ENCODERS = ("identity",)
    PATTERNS = ("patches", "center", "pixels")

    def __init__(self, cfg, info, feature_channels, middle_channels):
        super().__init__(cfg, info, feature_channels, middle_channels)
        if cfg.mask_pattern not in self.PATTERNS:
            raise choice_error("modalities.masked_image.mask_pattern", cfg.mask_pattern, self.PATTERNS)
        if not 0 < cfg.mask_ratio < 1:
            raise ConfigError(f"modalities.masked_image.mask_ratio must be in (0, 1), got {cfg.mask_ratio}")
        if cfg.mask_pattern == "patches" and (cfg.patch_size < 1 or self.size % cfg.patch_size):
            raise ConfigError(
                f"modalities.masked_image.patch_size={cfg.patch_size} must divide the image size {self.size}"
            )
        self.conv = nn.Sequential(
            group_norm(feature_channels), nn.SiLU(), nn.Conv2d(feature_channels, self.channels, 3, padding=1)
        )

    def draw_keep(self, n: int, h: int, w: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Keep-mask (n, 1, h, w) of 1 = visible, 0 = hidden, drawn per example (on the CPU)."""
        ratio = self.cfg.mask_ratio
        if self.cfg.mask_pattern == "center":
            side = round(math.sqrt(ratio) * h)
            keep = torch.ones(n, 1, h, w)
            lo = (h - side) // 2
            keep[:, :, lo : lo + side, lo : lo + side] = 0
            return keep
        p = self.cfg.patch_size if self.cfg.mask_pattern == "patches" else 1
        u = torch.rand(n, 1, h // p, w // p, generator=generator)
        keep = (u >= ratio).float()
        return F.interpolate(keep, scale_factor=p, mode="nearest") if p > 1 else keep

    def hide_pixels(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Keep-mask (N, 1, H, W) for ``images``, on their device."""
        n, _, h, w = images.shape
        return self.draw_keep(n, h, w, generator).to(images.device)

    def training_draws(self, n, image_shape, generator):
        return {"keep:masked_image": self.draw_keep(n, image_shape[-2], image_shape[-1], generator)}

    def training_value(self, batch, generator=None):
        images = batch["image"]
        keep = batch.get("keep:masked_image")  # drawn by the trainer for the global batch
        return images * (self.hide_pixels(images, generator) if keep is None else keep)

    def encode(self, value):
        return value

    def head(self, unet_out):
        return self.conv(unet_out.features)

    def loss(self, pred, value):
        return F.mse_loss(pred.float(), value.float())

    def expected_encoding(self, pred):
        return pred.float()

    def decode(self, pred):
        return pred.float().clamp(-1, 1)

    def log_likelihood(self, pred, value):
        # Gaussian with unit variance around the head's reconstruction, over every pixel of the
        # masked image (hidden pixels are 0 in both the value and the head's training target, so
        # they add evidence of where the holes are, not of their content). The variance is a
        # choice: any sigma^2 only rescales the guidance scale s.
        return -0.5 * (pred.float() - value.float()).pow(2).flatten(1).sum(1)

    def prior_encoding(self, n, device):
        return torch.zeros(n, self.channels, self.size, self.size, device=device)


MODALITIES: dict[str, type[Modality]] = {
    "label": LabelModality,
    "mask": MaskModality,
    "masked_image": MaskedImageModality,
}


class RepresentationModality(Modality):
    """An image's representation: the feature vector of the dataset's domain feature extractor
    (mtdiff.metrics.extractor, trained once per dataset, fixed; its file is named by
    ``modalities.representation.extractor_path``). The value is the feature vector scaled to unit
    RMS; E is a fixed, seeded linear map to an image-shaped tensor, renormalised to unit RMS
    (docs/method.md, "Representation"). The head, an MLP on the backbone's pooled middle
    features, regresses the value (MSE)."""

    name, data_key = "representation", "image"
    ENCODERS = ("linear",)

    def __init__(self, cfg, info, feature_channels, middle_channels, hidden: int = 128):
        super().__init__(cfg, info, feature_channels, middle_channels)
        from mtdiff.errors import CheckpointError
        from mtdiff.metrics.extractor import load_domain_classifier

        if not cfg.extractor_path:
            raise ConfigError("modalities.representation.extractor_path is not set; give the domain extractor file "
                              "(mtdiff evaluate extractor --out PATH), e.g. --set modalities.representation.extractor_path=PATH")
        try:
            extractor, _ = load_domain_classifier(cfg.extractor_path)
        except CheckpointError as exc:
            raise ConfigError(f"modalities.representation.extractor_path={cfg.extractor_path!r}: {exc}") from None
        if extractor.in_channels != self.channels or extractor.image_size != self.size:
            raise ConfigError(f"modalities.representation.extractor_path={cfg.extractor_path!r} was trained on "
                              f"{extractor.in_channels}x{extractor.image_size}x{extractor.image_size} images, not "
                              f"{self.channels}x{self.size}x{self.size}; use the extractor of this dataset and size")
        # fixed and not part of the model's state: kept out of the module tree so that
        # model.train() cannot switch its BatchNorm to batch statistics, and no optimiser sees it
        object.__setattr__(self, "_extractor", extractor)
        self.feature_dim = extractor.feature_dim
        g = torch.Generator().manual_seed(2468)
        projection = torch.randn(self.channels * self.size * self.size, self.feature_dim, generator=g)
        self.register_buffer("projection", projection / math.sqrt(self.feature_dim))
        self.mlp = nn.Sequential(
            nn.Linear(middle_channels, hidden), nn.SiLU(), nn.Linear(hidden, self.feature_dim)
        )

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The value of ``images`` in [-1, 1]: extractor features scaled to unit RMS each."""
        ext = self._extractor
        if next(ext.parameters()).device != images.device:
            ext.to(images.device)
        return _unit_rms(ext(images.float())[0], (1,))

    def training_value(self, batch, generator=None):
        return self.features(batch["image"])

    def encode(self, value):
        flat = value.float() @ self.projection.T
        return _unit_rms(flat, (1,)).view(-1, self.channels, self.size, self.size)

    def head(self, unet_out):
        return self.mlp(unet_out.middle.float().mean(dim=(2, 3)))

    def loss(self, pred, value):
        return F.mse_loss(pred.float(), value.float())

    def expected_encoding(self, pred):
        return self.encode(pred)

    def decode(self, pred):
        return pred.float()

    def prior_encoding(self, n, device):
        return torch.zeros(n, self.channels, self.size, self.size, device=device)


MODALITIES["representation"] = RepresentationModality
