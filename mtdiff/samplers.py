"""Samplers for joint and conditional generation (docs/method.md, section 5), and the
inference procedures that label or segment real images with an MT model (section 6).

Both samplers are one generalised step on the de-aggregated latent y_t = z_t - sum_i c_t e_i,
which is a plain DDPM latent (eq. 7):
    y_s = sqrt(abar_s) z0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma xi,
    sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s),
    z_s = y_s + sum_i c_s e_i,
with e_i the true encoding of a given modality and the head's expected encoding (eq. 10) for
an unknown one. With eta = 1 and s = t - 1 the step is exactly the posterior of eq. 6 with z_0
and e_i replaced by their estimates (ancestral DDPM); with eta = 0 it is DDIM.

    samples = sample(model, diffusion, 64, sampler="ddim", steps=50)
    samples = sample(model, diffusion, 64, given={"label": torch.full((64,), 3)})  # class 3
    samples = sample(model, diffusion, 64, given={"label": ...}, guidance="head", guidance_scale=2.0)

Guided conditional sampling (``guidance: head | cfg``, docs/method.md section 7, eq. 13) only
changes eps_hat and z0_hat of the step (:func:`guided_eps`).
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from mtdiff.errors import ConfigError, choice_error

SAMPLERS = {"ddpm": 1.0, "ddim": None}  # name -> fixed eta (None = use the eta option)


def timesteps(num_steps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from T down to 1 (T always included)."""
    if not 1 <= steps <= num_steps:
        raise ConfigError(f"sample.steps={steps} must be in 1..{num_steps}")
    ts = torch.linspace(num_steps, 1, steps).round().long().tolist()
    return sorted(set(ts), reverse=True)


GUIDANCES = ("none", "head", "cfg")


def check_guidance(guidance: str, scale) -> float:
    """Validate ``sample.guidance`` / ``sample.guidance_scale``; returns the scale as a float."""
    if guidance not in GUIDANCES:
        raise choice_error("sample.guidance", guidance, GUIDANCES)
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ConfigError(f"sample.guidance_scale={scale!r} is not a number; accepted: a finite number >= 0") from None
    if not math.isfinite(scale) or scale < 0:
        raise ConfigError(f"sample.guidance_scale={scale} is not accepted; accepted: a finite number >= 0")
    return scale


def check_condition(model, given: dict, class_labels, guidance: str) -> None:
    """Refuse, before any sampling, conditions the model cannot take (docs/method.md, section 7)."""
    unknown = set(given) - set(model.modalities)
    if unknown:
        raise ConfigError(f"cannot condition on {sorted(unknown)}: the model has modalities {sorted(model.modalities) or 'none'}")
    for name, value in given.items():
        model.modalities[name].check_value(value, f"condition {name}")
    if model.class_conditional:
        if class_labels is None:
            raise ConfigError("a class-conditional model needs class_labels to sample")
        k = model.unet.num_classes
        bad = class_labels[(class_labels < 0) | (class_labels >= k)]
        if bad.numel():
            raise ConfigError(f"condition label: class id {int(bad[0])} is out of range; accepted: 0..{k - 1}")
    elif class_labels is not None:
        raise ConfigError("class_labels is for a class-conditional backbone (ddpm_cond); give an MT model given={'label': ...}")
    if guidance == "none":
        return
    if not given and not model.class_conditional:
        raise ConfigError(f"sample.guidance={guidance} needs a condition (e.g. --condition label=balanced); "
                          f"joint sampling has nothing to guide towards")
    if guidance == "head" and model.class_conditional:
        raise ConfigError("sample.guidance=head needs a head for the condition, and ddpm_cond has none; "
                          "accepted for ddpm_cond: none, cfg")
    if guidance == "cfg" and not getattr(model, "cond_drop_prob", 0) > 0:
        raise ConfigError("sample.guidance=cfg needs a model trained with condition dropout, and this one was trained "
                          "with train.cond_drop_prob=0: its eps with the prior encoding / null class was never trained "
                          "as an unconditional model. Use guidance none or head, or retrain with "
                          "--set train.cond_drop_prob=0.1")


def _encodings(model, preds: dict, given_enc: dict) -> dict:
    enc = {}
    for name, mod in model.modalities.items():
        enc[name] = given_enc[name] if name in given_enc else mod.expected_encoding(preds[name])
    return enc


def _forward(model, z, tt, y, autocast):
    if autocast is not None:
        with autocast:
            preds = model(z, tt, y)
    else:
        preds = model(z, tt, y)
    return {k: v.float() for k, v in preds.items()}


def guided_eps(model, diffusion, z, tt, y, given: dict, given_enc: dict, *, guidance: str = "none",
               scale: float = 0.0, clip_x0: bool = False, autocast=None):
    """One denoising evaluation at (z_t, t): returns (preds, enc, shift_t, z0, eps), the (guided)
    estimates of z_0 and of the noise of the de-aggregated latent y_t = z_t - shift_t
    (docs/method.md, section 7). ``preds`` are the heads' (detached) outputs at z_t, ``enc`` the
    encodings used in the aggregation (true for given modalities, eq. 10 for unknown ones).

    cfg:  eps = (1 + s) eps(z_t, condition) - s eps(y_t + sum_i c_t e_prior_i, or the null class),
          then clipped like an unguided prediction.
    head: the clip first (z0_hat -> clamp, eps_hat consistent with it on y_t), then
          eps = eps - s sqrt(1 - abar_t) grad_{z_t} sum_i log p_head(x_i | z_t) and z0_hat from
          the guided eps, not clipped again, so the clip cannot take the guidance back (the order
          of ADM's condition_score). The gradient is taken through the same forward pass, run in
          fp32 outside autocast, so it is fp32 when sampling under bf16.
    """
    t = int(tt[0])
    abar = diffusion.alpha_bars
    head = guidance == "head" and scale > 0
    if head:
        with torch.enable_grad():
            zg = z.detach().float().requires_grad_(True)
            raw = model(zg, tt, y)
            logp = sum(model.modalities[k].log_likelihood(raw[k], v) for k, v in given.items())
            (grad,) = torch.autograd.grad(logp.sum(), zg)
        preds = {k: v.detach().float() for k, v in raw.items()}
    else:
        preds = _forward(model, z, tt, y, autocast)
    enc = _encodings(model, preds, given_enc)
    shift_t = diffusion.aggregated_mean(enc, tt, z)
    z0, eps = diffusion.split_prediction(preds["image"], z, tt, shift_t)
    if guidance == "cfg" and scale > 0:
        n = z.shape[0]
        if model.class_conditional:
            z_u, y_u, shift_u = z, torch.full_like(y, -1), shift_t
        else:  # the same y_t, aggregated with the prior encoding in place of every given one
            enc_u = dict(enc, **{k: model.modalities[k].prior_encoding(n, z.device) for k in given_enc})
            shift_u = diffusion.aggregated_mean(enc_u, tt, z)
            z_u, y_u = z - shift_t + shift_u, y
        pred_u = _forward(model, z_u, tt, y_u, autocast)["image"]
        _, eps_u = diffusion.split_prediction(pred_u, z_u, tt, shift_u)
        eps = (1 + scale) * eps - scale * eps_u
        z0 = (z - shift_t - (1 - abar[t]).sqrt().item() * eps) / abar[t].sqrt().item()
    if clip_x0:
        # eps_hat made consistent with the clipped z0_hat on y_t: with eta = 1 the step is then
        # the eq. 6 posterior with z_0 -> clip(z0_hat) (docs/method.md, section 6)
        z0 = z0.clamp(-1, 1)
        eps = (z - shift_t - abar[t].sqrt().item() * z0) / (1 - abar[t]).sqrt().item()
    if head:
        eps = eps - scale * (1 - abar[t]).sqrt().item() * grad
        z0 = (z - shift_t - (1 - abar[t]).sqrt().item() * eps) / abar[t].sqrt().item()
    return preds, enc, shift_t, z0, eps


@torch.no_grad()
def sample(
    model,
    diffusion,
    n: int,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    given: dict[str, torch.Tensor] | None = None,
    class_labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    clip_x0: bool = True,
    guidance: str = "none",
    guidance_scale: float = 0.0,
    device: torch.device | str = "cpu",
    autocast=None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Generate ``n`` samples. Returns ``image`` in [-1, 1] and, for every unknown modality,
    its generated value (``label`` ids, ``mask`` maps, ...) and the head's raw prediction
    (``<name>_pred``) at the last step.

    ``given``: true values of known modalities (conditional generation); ``class_labels``: the
    class for a class-conditional backbone (``ddpm_cond``). ``guidance`` / ``guidance_scale``:
    guided conditional sampling (none | head | cfg; docs/method.md, section 7).
    """
    if sampler not in SAMPLERS:
        raise choice_error("sample.sampler", sampler, SAMPLERS)
    if SAMPLERS[sampler] is not None:
        eta = SAMPLERS[sampler]
    scale = check_guidance(guidance, guidance_scale)
    given = {k: v.to(device) for k, v in (given or {}).items()}
    check_condition(model, given, class_labels, guidance)
    device = torch.device(device)
    shape = (n, model.channels, model.image_size, model.image_size)
    given_enc = {k: model.modalities[k].encode(v) for k, v in given.items()}
    y = class_labels.to(device) if class_labels is not None else None
    z = torch.randn(shape, generator=generator).to(device)
    ts = timesteps(diffusion.num_steps, steps)
    abar = diffusion.alpha_bars
    preds = {}
    for i, t in enumerate(tqdm(ts, disable=not progress, desc="sampling", leave=False)):
        s = ts[i + 1] if i + 1 < len(ts) else 0
        tt = torch.full((n,), t, device=device, dtype=torch.long)
        preds, enc, shift_t, z0, eps = guided_eps(model, diffusion, z, tt, y, given, given_enc, guidance=guidance,
                                                  scale=scale, clip_x0=clip_x0, autocast=autocast)
        a_t = abar[t].item()
        if s == 0:
            z = z0
            break
        a_s = abar[s].item()
        sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5
        y_s = a_s**0.5 * z0 + max(1 - a_s - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            y_s = y_s + sigma * torch.randn(shape, generator=generator).to(device)
        z = y_s + diffusion.aggregated_mean(enc, torch.full((n,), s, device=device), z)
    out = {"image": z.clamp(-1, 1)}
    for name, mod in model.modalities.items():
        if name in given:
            out[name] = given[name]
        else:
            out[name] = mod.decode(preds[name])
            out[f"{name}_pred"] = preds[name]
    if y is not None:
        out["label"] = y
    return out


# ---------------------------------------------------------------------------------------------
# Inference on real images (docs/method.md, section 6).

LABEL_PROCEDURES = ("head", "elbo", "elbo_joint")
MASK_PROCEDURES = ("head",)


@torch.no_grad()
def head_readout(model, diffusion, images, name: str, *, t_infer: int = 1, num_draws: int = 4, generator=None):
    """Average of the head's class probabilities p(x_name | z_t) over noise draws, with
    z_t ~ q(z_t | z_0 = image, X) and every unknown encoding at its prior mean (eq. 11)."""
    n = images.shape[0]
    t = torch.full((n,), t_infer, device=images.device, dtype=torch.long)
    enc = {k: m.prior_encoding(n, images.device) for k, m in model.modalities.items()}
    probs = 0
    for _ in range(num_draws):
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        zt = diffusion.q_sample(images, t, noise, enc)
        pred = model(zt, t)[name].float()
        dim = 1 if pred.dim() == 4 else -1
        probs = probs + pred.softmax(dim)
    return probs / num_draws


@torch.no_grad()
def elbo_label_scores(model, diffusion, images, *, num_timesteps: int = 10, num_draws: int = 1, generator=None,
                      label_term: bool = False):
    """Per-class denoising error with e_label = E(k), averaged over evenly spaced t and shared
    noise draws (a diffusion classifier; eq. 12). Lower = more likely.

    ``label_term=False`` (procedure ``elbo``): ||target - pred||^2, the image term only.
    ``label_term=True`` (procedure ``elbo_joint``): the whole reverse-mean error of the ELBO term
    L_{t-1} under hypothesis k, ||mu_tilde(z_t, x, E(k)) - mu_theta(z_t)||^2 with mu_theta built
    from z0_hat and the head's expected encoding e_hat (eq. 6), divided by
    (beta_t / (sqrt(a_t) sqrt(1 - abar_t)))^2 so that its eps part is weighted as in L_simple.
    It equals ||(eps - eps_hat) + (w_t / b_t)(E(k) - e_hat)||^2 (docs/method.md, eq. 12b): the
    label's evidence enters through w_t (E(k) - e_hat).
    """
    n = images.shape[0]
    label = model.modalities["label"]
    K = label.num_classes
    ts = timesteps(diffusion.num_steps, num_timesteps)
    others = {k: m.prior_encoding(n, images.device) for k, m in model.modalities.items() if k != "label"}
    errors = torch.zeros(n, K, device=images.device)
    for t in ts:
        tt = torch.full((n,), t, device=images.device, dtype=torch.long)
        b_t = float(diffusion.betas[t] / (diffusion.alphas[t].sqrt() * (1 - diffusion.alpha_bars[t]).sqrt()))
        for _ in range(num_draws):
            noise = torch.randn(images.shape, generator=generator).to(images.device)
            target = diffusion.target(images, noise, tt)
            for k in range(K):
                enc = dict(others, label=label.encode(torch.full((n,), k, device=images.device)))
                zt = diffusion.q_sample(images, tt, noise, enc)
                preds = {name: v.float() for name, v in model(zt, tt).items()}
                if not label_term:
                    errors[:, k] += (preds["image"] - target).pow(2).mean(dim=(1, 2, 3))
                    continue
                enc_hat = dict(others, label=label.expected_encoding(preds["label"]))
                z0_hat, _ = diffusion.split_prediction(preds["image"], zt, tt, diffusion.aggregated_mean(enc_hat, tt, zt))
                mu_true, _ = diffusion.posterior(zt, images, tt, enc)
                mu_model, _ = diffusion.posterior(zt, z0_hat, tt, enc_hat)
                errors[:, k] += (mu_true - mu_model).pow(2).mean(dim=(1, 2, 3)) / b_t**2
    return errors / (len(ts) * num_draws)


@torch.no_grad()
def predict(model, diffusion, images, task: str, *, procedure: str = "head", t_infer: int = 1,
            num_draws: int = 4, elbo_timesteps: int = 10, generator=None) -> torch.Tensor:
    """Predicted labels (N,) or masks (N, H, W) for real images, for any model kind."""
    kind = getattr(model, "kind", "")
    if kind == "classifier":
        if task != "label":
            raise ConfigError(f"a classifier predicts labels, not {task}")
        return model(images).argmax(-1)
    if kind == "segmenter":
        if task != "mask":
            raise ConfigError(f"a segmenter predicts masks, not {task}")
        return model(images).argmax(1)
    if task not in model.modalities:
        raise ConfigError(f"this model has no {task!r} head; it has {sorted(model.modalities) or 'none'}")
    accepted = LABEL_PROCEDURES if task == "label" else MASK_PROCEDURES
    if procedure not in accepted:
        raise choice_error(f"inference.{task}_procedure", procedure, accepted)
    if procedure in ("elbo", "elbo_joint"):
        return elbo_label_scores(
            model, diffusion, images, num_timesteps=elbo_timesteps, num_draws=num_draws, generator=generator,
            label_term=procedure == "elbo_joint",
        ).argmin(-1)
    probs = head_readout(model, diffusion, images, task, t_infer=t_infer, num_draws=num_draws, generator=generator)
    return probs.argmax(1 if probs.dim() == 4 else -1)
