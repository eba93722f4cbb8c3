"""Inpainting: complete images of which a seeded set of pixels is hidden (docs/method.md,
"Inpainting"). Three methods, given the same images and the same keep-masks:

* ``mt_conditional``: an MT model with the ``masked_image`` modality (``mt_masked``) samples
  given the masked image's known encoding (the conditional path of :func:`mtdiff.samplers.sample`,
  eq. 10 with E(x_masked) plugged in); the visible pixels are pasted back afterwards.
* ``repaint``: an image-only diffusion model (``ddpm``) with replacement (Lugmayr et al. 2022,
  RePaint): after every step t -> s the known region of z_s is overwritten by the forward-noised
  truth sqrt(abar_s) x0 + sqrt(1 - abar_s) eps (eq. 3 with no aggregation). Optional resampling
  (``resample_jumps`` extra rounds per step, jump length 1) costs that many extra network
  evaluations, which are counted in the NFE.
* ``nearest_neighbour``: the anchor. Copy into the hole the pixels of the training image that is
  nearest on the visible pixels (squared error over the keep-mask).

Keep-masks are (N, 1, H, W) floats, 1 = visible, 0 = hidden, drawn by :func:`draw_keep_masks`
with the same law as the masked-image modality's training masks.

    keep = draw_keep_masks(len(images), 8, pattern="patches", ratio=0.5, patch_size=4, seed=0)
    done = complete_mt(mt_model, mt_diffusion, images, keep, steps=25, generator=g)
    done_rp, nfe = repaint(ddpm_model, ddpm_diffusion, images, keep, steps=25, generator=g)
    done_nn, idx = nearest_neighbour_fill(images, keep, train_images)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtdiff.errors import ConfigError, choice_error
from mtdiff.samplers import SAMPLERS, check_condition, check_guidance, guided_eps, sample, timesteps

MASK_PATTERNS = ("patches", "center", "pixels")
METHODS = ("mt_conditional", "repaint", "nearest_neighbour")


# ---------------------------------------------------------------------------------------------
# masks


def _draw_once(n: int, size: int, pattern: str, ratio: float, patch_size: int, g: torch.Generator) -> torch.Tensor:
    # the law of MaskedImageModality.hide_pixels (tests pin the two together)
    if pattern == "center":
        side = round(math.sqrt(ratio) * size)
        keep = torch.ones(n, 1, size, size)
        lo = (size - side) // 2
        keep[:, :, lo : lo + side, lo : lo + side] = 0
        return keep
    p = patch_size if pattern == "patches" else 1
    u = torch.rand(n, 1, size // p, size // p, generator=g)
    keep = (u >= ratio).float()
    return F.interpolate(keep, scale_factor=p, mode="nearest") if p > 1 else keep


def draw_keep_masks(n: int, size: int, *, pattern: str = "patches", ratio: float = 0.5, patch_size: int = 4,
                    seed: int = 0, max_redraws: int = 100) -> torch.Tensor:
    """``n`` seeded keep-masks (N, 1, size, size). A mask that hides nothing or everything is
    redrawn (from the same generator, so the set is still a function of the seed): inpainting
    needs a hole to fill and visible pixels to go on."""
    if pattern not in MASK_PATTERNS:
        raise choice_error("--mask-pattern", pattern, MASK_PATTERNS)
    if not 0 < ratio < 1:
        raise ConfigError(f"--mask-ratio={ratio} must be in (0, 1): the fraction of pixels hidden")
    if pattern == "patches" and (patch_size < 1 or size % patch_size):
        raise ConfigError(f"--patch-size={patch_size} must divide the image size {size}")
    g = torch.Generator().manual_seed(seed)
    keep = _draw_once(n, size, pattern, ratio, patch_size, g)
    for _ in range(max_redraws):
        visible = keep.sum(dim=(1, 2, 3))
        bad = (visible == 0) | (visible == size * size)
        if not bad.any():
            return keep
        keep[bad] = _draw_once(int(bad.sum()), size, pattern, ratio, patch_size, g)
    raise ConfigError(f"--mask-ratio={ratio} with --mask-pattern={pattern} leaves no hole or no visible pixel; "
                      f"choose a ratio further from 0 and 1")


def check_keep_masks(images: torch.Tensor, keep: torch.Tensor) -> None:
    """The keep-mask must be (N, 1, H, W) of 0/1 for images (N, C, H, W)."""
    n, _, h, w = images.shape
    if keep.dim() != 4 or tuple(keep.shape) != (n, 1, h, w):
        raise ConfigError(f"inpainting mask of shape {tuple(keep.shape)} does not fit images {tuple(images.shape)}; "
                          f"accepted: ({n}, 1, {h}, {w}) with 1 = visible, 0 = hidden")
    if not torch.all((keep == 0) | (keep == 1)):
        raise ConfigError("inpainting mask values must be 0 (hidden) or 1 (visible)")


def paste_visible(images: torch.Tensor, keep: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """The truth where visible, ``filled`` in the hole."""
    return keep * images + (1 - keep) * filled


# ---------------------------------------------------------------------------------------------
# MT-Diffusion: conditional generation given the masked image


@torch.no_grad()
def complete_mt(model, diffusion, images, keep, *, sampler: str = "ddim", steps: int = 25, eta: float = 0.0,
                generator=None, clip_x0: bool = True, device="cpu", autocast=None,
                sample_options: dict | None = None) -> torch.Tensor:
    """Completions by an MT model that has the ``masked_image`` modality: sample with
    e_masked = E(images * keep) known (the masked image is zero, mid-grey, where hidden, as in
    training), then paste the visible pixels. ``sample_options``: further keyword arguments of
    :func:`mtdiff.samplers.sample` (e.g. a guidance mode, where the sampler offers one)."""
    if "masked_image" not in getattr(model, "modalities", {}):
        raise ConfigError(f"method mt_conditional needs a model with the masked_image modality (mt_masked); "
                          f"this one has {sorted(getattr(model, 'modalities', {})) or 'none'}")
    check_keep_masks(images, keep)
    masked = images * keep
    out = sample(model, diffusion, len(images), sampler=sampler, steps=steps, eta=eta,
                 given={"masked_image": masked}, generator=generator, clip_x0=clip_x0, device=device,
                 autocast=autocast, **(sample_options or {}))
    return paste_visible(images.to(out["image"].device), keep.to(out["image"].device), out["image"]).cpu()


# ---------------------------------------------------------------------------------------------
# RePaint: replacement with the forward-noised known pixels


def forward_noised(images: torch.Tensor, abar_s: float, noise: torch.Tensor) -> torch.Tensor:
    """A draw of q(z_s | z_0 = images) for an image-only model (eq. 3 without aggregation)."""
    return abar_s**0.5 * images + (1 - abar_s) ** 0.5 * noise


def repaint_step(model, diffusion, z, t: int, s: int, images, keep, *, eta: float, known_noise, step_noise=None,
                 clip_x0: bool = True, given: dict | None = None, given_enc: dict | None = None,
                 guidance: str = "none", guidance_scale: float = 0.0) -> torch.Tensor:
    """One generalised DDPM/DDIM step t -> s on z (as in mtdiff.samplers.sample), then the known
    region replaced by the forward-noised truth with noise ``known_noise`` (at s = 0: the truth).

    For an MT model (``given`` / ``given_enc``: the known values and encodings, e.g. the masked
    image; the other modalities take the heads' expected encodings, eq. 10) the step and the
    replacement act on the de-aggregated latent y = z - sum_i c e_i (eq. 7), which is a plain
    DDPM latent, and the aggregated mean at s is added back. ``guidance`` / ``guidance_scale``:
    the sampler's guided eps (:func:`mtdiff.samplers.guided_eps`, docs/method.md section 7;
    head guidance on the masked image for mt_masked)."""
    n = z.shape[0]
    abar = diffusion.alpha_bars
    tt = torch.full((n,), t, device=z.device, dtype=torch.long)
    _, enc, _, z0, eps = guided_eps(model, diffusion, z, tt, None, given or {}, given_enc or {}, guidance=guidance,
                                    scale=guidance_scale, clip_x0=clip_x0)
    if s == 0:
        return paste_visible(images, keep, z0)
    a_t, a_s = abar[t].item(), abar[s].item()
    sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5
    y_s = a_s**0.5 * z0 + max(1 - a_s - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        y_s = y_s + sigma * step_noise
    y_s = paste_visible(forward_noised(images, a_s, known_noise), keep, y_s)
    return y_s + diffusion.aggregated_mean(enc, torch.full((n,), s, device=z.device), z)


@torch.no_grad()
def repaint(model, diffusion, images, keep, *, sampler: str = "ddim", steps: int = 25, eta: float = 0.0,
            resample_jumps: int = 0, generator=None, clip_x0: bool = True, device="cpu", guidance: str = "none",
            guidance_scale: float = 0.0) -> tuple[torch.Tensor, int]:
    """RePaint-style completions by an image-only diffusion model (``ddpm``), or by ``mt_masked``
    given the masked image as well (method ``mt_repaint``, ours). Returns (completions, NFE):
    NFE = number of network evaluations, ``len(timesteps) * (1 + resample_jumps)`` less the
    jumps skipped at the last step. ``guidance`` (mt_masked only): head guidance on the masked
    image at ``guidance_scale`` (no extra network evaluation: the gradient goes through the same
    forward pass)."""
    mods = set(getattr(model, "modalities", None) or {})
    if mods - {"masked_image"}:
        raise ConfigError(f"method repaint is defined for image-only models (ddpm) and mt_masked; this model "
                          f"has modalities {sorted(mods)}")
    if getattr(model, "class_conditional", False):
        raise ConfigError("method repaint needs an unconditional image model (ddpm), not a class-conditional one")
    if sampler not in SAMPLERS:
        raise choice_error("--sampler", sampler, SAMPLERS)
    if isinstance(resample_jumps, bool) or not isinstance(resample_jumps, int) or resample_jumps < 0:
        raise ConfigError(f"--resample-jumps={resample_jumps!r} must be an integer >= 0 (0 = off)")
    scale = check_guidance(guidance, guidance_scale)
    check_keep_masks(images, keep)
    if SAMPLERS[sampler] is not None:
        eta = SAMPLERS[sampler]
    device = torch.device(device)
    x, m = images.to(device), keep.to(device)
    # mt_masked with replacement: the masked image is known too (method mt_repaint)
    given = {"masked_image": x * m} if mods else {}
    check_condition(model, given, None, guidance)  # e.g. head guidance on ddpm, which has no head: refused
    given_enc = {k: model.modalities[k].encode(v) for k, v in given.items()}
    shape = tuple(x.shape)

    def noise():
        return torch.randn(shape, generator=generator).to(device)

    ts = timesteps(diffusion.num_steps, steps)
    abar = diffusion.alpha_bars
    z = noise()
    nfe = 0
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else 0
        rounds = 1 + (resample_jumps if s > 0 else 0)
        for r in range(rounds):
            z_s = repaint_step(model, diffusion, z, t, s, x, m, eta=eta, known_noise=noise(), step_noise=noise(),
                               clip_x0=clip_x0, given=given, given_enc=given_enc, guidance=guidance,
                               guidance_scale=scale)
            nfe += 1
            if r + 1 < rounds:  # jump back: y_t ~ q(y_t | y_s), then redo the step (RePaint's resampling)
                # on the de-aggregated latent y = z - sum_i c e_i (eq. 7); every modality of a model
                # that gets here is given, so the aggregated mean is known exactly at s and t
                shift = {u: diffusion.aggregated_mean(given_enc, torch.full((shape[0],), u, device=device), z_s)
                         for u in (s, t)}
                ratio = abar[t].item() / abar[s].item()
                z = ratio**0.5 * (z_s - shift[s]) + (1 - ratio) ** 0.5 * noise() + shift[t]
        z = z_s
    return z.clamp(-1, 1).cpu(), nfe


def posterior_mean(complete, k: int, seed: int) -> tuple[torch.Tensor, int]:
    """The average of ``k`` completions ``complete(generator) -> (completions, nfe)`` drawn with
    the seeds seed, seed + 1, ...: a Monte-Carlo estimate of E[x_hole | visible pixels], the
    estimator that minimises the expected hidden-region MSE (and so the one PSNR and MSE reward;
    docs/method.md, "Inpainting"). It is not a sample: its FID says nothing. Returns (mean, total
    NFE = k times one completion's)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"--posterior-samples={k!r} must be an integer >= 2 (the completions averaged; 0 = off)")
    total, nfe = 0, 0
    for j in range(k):
        done, n = complete(torch.Generator().manual_seed(seed + j))
        total, nfe = total + done, nfe + n
    return total / k, nfe


# ---------------------------------------------------------------------------------------------
# nearest-neighbour anchor


@torch.no_grad()
def nearest_neighbour_fill(images, keep, train_images, *, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy into the hole the pixels of the training image nearest on the visible pixels.
    Returns (completions, index of the neighbour in ``train_images``)."""
    check_keep_masks(images, keep)
    if train_images.shape[1:] != images.shape[1:]:
        raise ConfigError(f"training images {tuple(train_images.shape[1:])} and test images "
                          f"{tuple(images.shape[1:])} differ in shape")
    n, c = images.shape[:2]
    m = keep.expand(-1, c, -1, -1).reshape(n, -1).double()
    x = images.reshape(n, -1).double()
    y = train_images.reshape(len(train_images), -1).double()
    best = torch.empty(n, dtype=torch.long)
    for i in range(0, n, chunk):
        mi, xi = m[i:i + chunk], x[i:i + chunk]
        # sum_p m_p (x_p - y_p)^2 = sum m x^2 - 2 (m x) . y + m . y^2
        d = (mi * xi**2).sum(1, keepdim=True) - 2 * (mi * xi) @ y.T + mi @ (y**2).T
        best[i:i + chunk] = d.argmin(1)
    return paste_visible(images, keep, train_images[best]), best
