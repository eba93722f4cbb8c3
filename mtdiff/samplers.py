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
"""

from __future__ import annotations

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


def _encodings(model, preds: dict, given_enc: dict) -> dict:
    enc = {}
    for name, mod in model.modalities.items():
        enc[name] = given_enc[name] if name in given_enc else mod.expected_encoding(preds[name])
    return enc


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
    device: torch.device | str = "cpu",
    autocast=None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Generate ``n`` samples. Returns ``image`` in [-1, 1] and, for every unknown modality,
    its generated value (``label`` ids, ``mask`` maps, ...) and the head's raw prediction
    (``<name>_pred``) at the last step.

    ``given``: true values of known modalities (conditional generation); ``class_labels``: the
    class for a class-conditional backbone (``ddpm_cond``).
    """
    if sampler not in SAMPLERS:
        raise choice_error("sample.sampler", sampler, SAMPLERS)
    if SAMPLERS[sampler] is not None:
        eta = SAMPLERS[sampler]
    given = dict(given or {})
    unknown = set(given) - set(model.modalities)
    if unknown:
        raise ConfigError(f"cannot condition on {sorted(unknown)}: the model has modalities {sorted(model.modalities)}")
    if model.class_conditional and class_labels is None:
        raise ConfigError("a class-conditional model needs class_labels to sample")
    device = torch.device(device)
    shape = (n, model.channels, model.image_size, model.image_size)
    given_enc = {k: model.modalities[k].encode(v.to(device)) for k, v in given.items()}
    y = class_labels.to(device) if class_labels is not None else None
    z = torch.randn(shape, generator=generator).to(device)
    ts = timesteps(diffusion.num_steps, steps)
    abar = diffusion.alpha_bars
    preds = {}
    for i, t in enumerate(tqdm(ts, disable=not progress, desc="sampling", leave=False)):
        s = ts[i + 1] if i + 1 < len(ts) else 0
        tt = torch.full((n,), t, device=device, dtype=torch.long)
        if autocast is not None:
            with autocast:
                preds = model(z, tt, y)
        else:
            preds = model(z, tt, y)
        preds = {k: v.float() for k, v in preds.items()}
        enc = _encodings(model, preds, given_enc)
        shift_t = diffusion.aggregated_mean(enc, tt, z)
        z0, eps = diffusion.split_prediction(preds["image"], z, tt, shift_t)
        if clip_x0:
            z0 = z0.clamp(-1, 1)
            eps = (z - shift_t - abar[t].sqrt().item() * z0) / (1 - abar[t]).sqrt().item()
        if s == 0:
            z = z0
            break
        a_t, a_s = abar[t].item(), abar[s].item()
        sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5
        y_s = a_s**0.5 * z0 + max(1 - a_s - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            y_s = y_s + sigma * torch.randn(shape, generator=generator).to(device)
        z = y_s + diffusion.aggregated_mean(enc, torch.full((n,), s, device=device), z)
    out = {"image": z.clamp(-1, 1)}
    for name, mod in model.modalities.items():
        if name in given:
            out[name] = given[name].to(device)
        else:
            out[name] = mod.decode(preds[name])
            out[f"{name}_pred"] = preds[name]
    if y is not None:
        out["label"] = y
    return out


# ---------------------------------------------------------------------------------------------
# Inference on real images (docs/method.md, section 6).

LABEL_PROCEDURES = ("head", "elbo")
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
def elbo_label_scores(model, diffusion, images, *, num_timesteps: int = 10, num_draws: int = 1, generator=None):
    """Per-class denoising error ||target - pred||^2 with e_label = E(k), averaged over evenly
    spaced t and shared noise draws (a diffusion classifier; eq. 12). Lower = more likely."""
    n = images.shape[0]
    label = model.modalities["label"]
    K = label.num_classes
    ts = timesteps(diffusion.num_steps, num_timesteps)
    others = {k: m.prior_encoding(n, images.device) for k, m in model.modalities.items() if k != "label"}
    errors = torch.zeros(n, K, device=images.device)
    for t in ts:
        tt = torch.full((n,), t, device=images.device, dtype=torch.long)
        for _ in range(num_draws):
            noise = torch.randn(images.shape, generator=generator).to(images.device)
            target = diffusion.target(images, noise, tt)
            for k in range(K):
                enc = dict(others, label=label.encode(torch.full((n,), k, device=images.device)))
                zt = diffusion.q_sample(images, tt, noise, enc)
                pred = model(zt, tt)["image"].float()
                errors[:, k] += (pred - target).pow(2).mean(dim=(1, 2, 3))
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
    if procedure == "elbo":
        return elbo_label_scores(
            model, diffusion, images, num_timesteps=elbo_timesteps, num_draws=num_draws, generator=generator
        ).argmin(-1)
    probs = head_readout(model, diffusion, images, task, t_infer=t_infer, num_draws=num_draws, generator=generator)
    return probs.argmax(1 if probs.dim() == 4 else -1)
