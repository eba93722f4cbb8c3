"""The shared denoising backbone: an ADM-style U-Net (Dhariwal & Nichol 2021, "guided-diffusion").

Every model of the suite (the diffusion models, the classifier, the segmenter) is built on
:class:`UNet` and attaches its heads to the :class:`UNetOutput` it returns:

* ``out``: the ADM output (GroupNorm, SiLU, zero-initialised conv3x3) with ``out_channels``
  channels at full resolution, e.g. the predicted noise of a diffusion model;
* ``middle``: the output of the middle block at the lowest resolution (``middle_channels``
  channels); pool it over space for label heads (``decoder=False`` runs only the encoder and
  the middle, skipping the decoder compute);
* ``features``: the last decoder features before the output norm/conv (``feature_channels``
  channels, full resolution), for extra mask or image heads.

Architecture, as in ADM: input conv3x3; per level ``num_res_blocks`` residual blocks (GroupNorm,
SiLU, conv3x3, timestep FiLM by scale-shift norm or addition, dropout, zero-initialised conv3x3;
1x1 skip conv when the width changes), self-attention at the ``attention_resolutions`` (in
pixels), then a stride-2 conv downsample; middle = res block, attention, res block; decoder with
``num_res_blocks + 1`` blocks per level, each fed the matching encoder activation (skip
connection), nearest-neighbour + conv3x3 upsampling. The timestep goes through a sinusoidal
embedding and a 2-layer MLP (width ``4 * model_channels``); with ``num_classes`` a label
embedding (one extra null row, selected by ``y = -1``, for classifier-free guidance) is added.
All residual-branch output convs, attention projections and the output conv are zero-initialised,
so ``out`` is exactly 0 at construction.

Parameter counts (measured; other arguments at their defaults, no labels)::

    UNet(1, 16, out_channels=1)                                   #   755,009 (mult (1, 2), attn at 8)
    UNet(3, 32, out_channels=3, channel_mult=(1, 2, 2))           # 1,192,387 (attn at 8)
    UNet(3, 64, out_channels=3, model_channels=64, channel_mult=(1, 2, 2),
         num_res_blocks=2, attention_resolutions=(16,))           # 6,949,187

``num_classes`` adds ``(num_classes + 1) * 4 * model_channels``; ``out_channels=None`` drops the
output GroupNorm and conv. diffusers' ``UNet2DModel`` with the same widths, levels, blocks and
attention levels has the same count to within 128 (its middle attention has no GroupNorm).

Runs under ``torch.autocast(..., dtype=torch.bfloat16)`` and keeps the caller's memory format
(channels_last in, channels_last out). On CPUs without AVX-512 BF16 support, bf16 convs fall back
to a slow reference kernel; :func:`bf16_autocast_is_fast` tells whether to use autocast at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtdiff.errors import ConfigError

__all__ = ["UNet", "UNetOutput", "bf16_autocast_is_fast", "norm_groups", "timestep_embedding"]


@dataclass
class UNetOutput:
    """What :meth:`UNet.forward` returns (see the module docstring for where heads attach)."""

    out: torch.Tensor | None  # (N, out_channels, H, W); None if out_channels is None or decoder=False
    middle: torch.Tensor  # (N, middle_channels, H / 2**(levels-1), W / 2**(levels-1))
    features: torch.Tensor | None  # (N, feature_channels, H, W); None if decoder=False


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups: 32, or the largest divisor of ``channels`` that divides 32."""
    return math.gcd(channels, max_groups)


def bf16_autocast_is_fast(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast has fast conv kernels on ``device`` (on CPU: oneDNN's bf16 support).

    Where it does not (e.g. x86 CPUs without AVX-512), bf16 convs run a reference kernel about
    50x slower than fp32: train in fp32 there.
    """
    device = torch.device(device)
    try:
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported()
        return device.type == "cpu" and torch.backends.mkldnn.is_available() and bool(
            torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """ADM's sinusoidal embedding of timesteps ``t`` (N,) -> (N, dim) float32, [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(max_period) / half))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, FiLM by the embedding, GroupNorm-SiLU-dropout-zero conv, plus skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, scale_shift: bool):
        super().__init__()
        self.in_norm, self.in_conv = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.scale_shift = scale_shift
        self.emb = nn.Linear(emb_dim, 2 * cout if scale_shift else cout) if emb_dim else None
        self.out_norm, self.dropout = _norm(cout), nn.Dropout(dropout)
        self.out_conv = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        h = self.in_conv(F.silu(self.in_norm(x)))
        if self.emb is None:
            h = self.out_norm(h)
        else:
            e = self.emb(emb)[:, :, None, None]  # emb already went through SiLU (UNet.forward)
            if self.scale_shift:
                scale, shift = e.chunk(2, dim=1)
                h = torch.addcmul(shift, self.out_norm(h), scale + 1)
            else:
                h = self.out_norm(h + e)
        return self.skip(x) + self.out_conv(self.dropout(F.silu(h)))


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions (pre-GroupNorm, zero-init projection)."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.heads = channels // head_channels
        self.norm = _norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view when channels_last
        q, k, v = self.qkv(tokens).view(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, h * w, c)
        return x + self.proj(a).view(n, h, w, c).permute(0, 3, 1, 2)


class Downsample(nn.Conv2d):
    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class Upsample(nn.Conv2d):
    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Sequential):
    """A sequence of layers that all take ``(x, emb)``."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb)
        return x


def _positive(option: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{option}={value!r} is not accepted; accepted: a positive integer")


class UNet(nn.Module):
    """ADM U-Net backbone; see the module docstring for the layout, heads and parameter counts.

    ``time_conditioning=False`` drops the timestep path (plain classifier/segmenter on clean
    images; ``t`` may then be None). ``num_classes`` makes it class-conditional: ``y`` (N,) int64
    in ``[0, num_classes)``, or ``-1`` for "no label" (the null class of classifier-free guidance).
    """

    def __init__(self, in_channels: int, image_size: int, out_channels: int | None = None,
                 model_channels: int = 32, channel_mult: tuple[int, ...] = (1, 2), num_res_blocks: int = 1,
                 attention_resolutions: tuple[int, ...] = (8,), head_channels: int = 32, dropout: float = 0.0,
                 num_classes: int | None = None, use_scale_shift_norm: bool = True, time_conditioning: bool = True,
                 encoder_only: bool = False):
        super().__init__()
        for option, value in [("in_channels", in_channels), ("image_size", image_size),
                              ("model_channels", model_channels), ("num_res_blocks", num_res_blocks),
                              ("head_channels", head_channels)]:
            _positive(option, value)
        if out_channels is not None:
            _positive("out_channels", out_channels)
        if num_classes is not None:
            _positive("num_classes", num_classes)
        channel_mult, attention_resolutions = tuple(channel_mult), tuple(attention_resolutions)
        if not channel_mult or any(isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in channel_mult):
            raise ConfigError(f"channel_mult={channel_mult!r} is not accepted; "
                              "accepted: a non-empty tuple of positive integers")
        factor = 2 ** (len(channel_mult) - 1)
        if image_size % factor:
            raise ConfigError(f"image_size={image_size} is not accepted with {len(channel_mult)} levels "
                              f"(channel_mult={channel_mult}); accepted: a multiple of {factor}")
        resolutions = [image_size >> level for level in range(len(channel_mult))]
        bad = [r for r in attention_resolutions if r not in resolutions]
        if bad:
            raise ConfigError(f"attention_resolutions={attention_resolutions!r}: {bad} not reachable; accepted: "
                              f"values among {sorted(resolutions)} (feature-map sizes for image_size={image_size})")
        attn_channels = {model_channels * channel_mult[-1]} | {
            model_channels * m for m, r in zip(channel_mult, resolutions) if r in attention_resolutions}
        if any(ch % head_channels for ch in attn_channels):
            raise ConfigError(f"head_channels={head_channels} does not divide the attention widths "
                              f"{sorted(attn_channels)}; accepted: a common divisor, e.g. {math.gcd(*attn_channels)}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout!r} is not accepted; accepted: a number in [0, 1)")

        self.in_channels, self.image_size, self.out_channels = in_channels, image_size, out_channels
        self.model_channels, self.num_classes = model_channels, num_classes
        self.middle_channels = model_channels * channel_mult[-1]
        self.feature_channels = model_channels * channel_mult[0]
        emb_dim = 4 * model_channels if (time_conditioning or num_classes is not None) else 0
        self.time_embed = (nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                           if time_conditioning else None)
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout, use_scale_shift_norm)

        self.input_conv = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
        skips, ch = [model_channels], model_channels
        for level, (mult, r) in enumerate(zip(channel_mult, resolutions)):
            for _ in range(num_res_blocks):
                layers = [res(ch, model_channels * mult)]
                ch = model_channels * mult
                if r in attention_resolutions:
                    layers.append(Attention(ch, head_channels))
                self.encoder.append(Block(*layers))
                skips.append(ch)
            if level < len(channel_mult) - 1:
                self.encoder.append(Block(Downsample(ch)))
                skips.append(ch)
        self.middle = Block(res(ch, ch), Attention(ch, head_channels), res(ch, ch))
        for level in reversed(range(len(channel_mult)) if not encoder_only else ()):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), model_channels * channel_mult[level])]
                ch = model_channels * channel_mult[level]
                if resolutions[level] in attention_resolutions:
                    layers.append(Attention(ch, head_channels))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                self.decoder.append(Block(*layers))
        self.encoder_only = encoder_only
        self.out = (nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1)))
                    if out_channels is not None and not encoder_only else None)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, y: torch.Tensor | None = None, *,
                decoder: bool = True) -> UNetOutput:
        """``x`` (N, in_channels, H, W), ``t`` (N,) timesteps, ``y`` (N,) labels (-1 = none)."""
        emb = None
        if self.time_embed is not None:
            if t is None:
                raise ValueError("t is required: this UNet was built with time_conditioning=True")
            t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
            emb = self.time_embed(timestep_embedding(t, self.model_channels))
        if self.label_embed is not None:
            if y is None:
                raise ValueError("y is required: this UNet is class-conditional (pass -1 for 'no label')")
            e = self.label_embed(torch.where(y < 0, self.num_classes, y))
            emb = e if emb is None else emb + e
        elif y is not None:
            raise ValueError("y was given but this UNet was built with num_classes=None")
        if emb is not None:
            emb = F.silu(emb)  # the SiLU that starts every res block's embedding projection, done once
        h = self.input_conv(x)
        hs = [h]
        for block in self.encoder:
            h = block(h, emb)
            hs.append(h)
        middle = h = self.middle(h, emb)
        if self.encoder_only and decoder:
            raise ValueError("this UNet was built with encoder_only=True: call it with decoder=False")
        if not decoder:
            return UNetOutput(out=None, middle=middle, features=None)
        for block in self.decoder:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return UNetOutput(out=self.out(h) if self.out is not None else None, middle=middle, features=h)
