"""Generating from a trained run (`mtdiff sample`): per-image PNGs, one .npz of everything, a grid PNG.

The sampling algorithms themselves are mtdiff.samplers; this module drives them for a run
folder (loads the checkpoint, batches, conditions, writes the files).

    mtdiff sample --run results/digits/train/mt_label/seed0 --out results/digits/samples/mt_label/seed0 \
        --num-samples 500 --sampler ddim --steps 50 --seed 0
    mtdiff sample --run ... --out ... --condition label=3          # MT-Diffusion given class 3
    mtdiff sample --run ... --out ... --condition label=balanced   # classes 0..K-1 in turn
    mtdiff sample --run ... --out ... --condition label=balanced --guidance head --guidance-scale 3

Writes ``images/000000.png ...``, ``samples.npz`` (``images`` uint8 N,C,H,W; ``label`` /
``mask`` / ``masked_image`` for generated or given modalities), ``grid.png`` (first 64; masks
coloured beside their images, labels written under them) and ``sample.json`` (the protocol:
checkpoint step, EMA, sampler, NFE, eta, seed, condition, guidance, guidance scale, and the
device and precision the network ran in).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from mtdiff.errors import ConfigError
from mtdiff.io import atomic_path as _atomic_path
from mtdiff.io import atomic_write_json
from mtdiff.progress import Progress
from mtdiff.samplers import check_guidance, sample, timesteps
from mtdiff.utils import autocast, resolve_device, resolve_precision
from mtdiff.viz import sample_grid, to_uint8

CONDITIONS = ("none", "label=K", "label=balanced", "mask=test", "masked_image=test")


def parse_condition(condition: str | None, model, info) -> tuple[str | None, str | None]:
    """'label=3' -> ('label', '3'); validates against the model and dataset."""
    if condition in (None, "", "none"):
        if model.class_conditional:
            return "label", "balanced"  # a class-conditional model always needs classes
        return None, None
    if "=" not in condition:
        raise ConfigError(f"--condition {condition!r} is not understood; accepted: {', '.join(CONDITIONS)}")
    name, value = condition.split("=", 1)
    has = set(model.modalities) | ({"label"} if model.class_conditional else set())
    if name not in has:
        raise ConfigError(f"--condition {condition!r}: the model has no {name!r} modality; it has {sorted(has) or 'none'}")
    if name == "label" and value != "balanced":
        if not value.isdigit() or not 0 <= int(value) < info.num_classes:
            raise ConfigError(f"--condition label={value}: accepted class ids 0..{info.num_classes - 1} or 'balanced'")
    elif name == "label":
        pass
    elif value != "test":
        raise ConfigError(f"--condition {name}={value}: accepted {name}=test (values from the test split)")
    return name, value


def _given_values(name, value, start, n, info, test_split, model):
    if name == "label":
        if value == "balanced":
            return (torch.arange(start, start + n) % info.num_classes).long()
        return torch.full((n,), int(value), dtype=torch.long)
    idx = torch.arange(start, start + n) % len(test_split)
    batch = {"image": test_split.images[idx]}
    if test_split.masks is not None:
        batch["mask"] = test_split.masks[idx]
    mod = model.modalities[name]
    g = torch.Generator().manual_seed(start)
    return mod.training_value(batch, g)


def generate(run: str | Path, out: str | Path, *, num_samples: int | None = None, batch_size: int | None = None,
             sampler: str | None = None, steps: int | None = None, eta: float | None = None, seed: int | None = None,
             condition: str | None = None, ema: bool | None = None, clip_x0: bool | None = None,
             guidance: str | None = None, guidance_scale: float | None = None, device: str = "auto",
             precision: str | None = None, write_pngs: bool = True, progress: str | bool = "auto", log=print) -> dict:
    """Sample a trained run; options left None take the run config's ``sample`` section, and
    ``precision`` None the run's ``train.precision`` (so a run pinned to fp32 also samples in
    fp32 on a CPU where ``auto`` would pick bf16)."""
    from mtdiff.train import load_run, load_split

    dev = resolve_device(device)
    model, diffusion, cfg, info, state = load_run(run, use_ema=True if ema is None else ema, device=dev)
    sc = cfg.sample
    num_samples = sc.default_num_images if num_samples is None else num_samples
    batch_size = sc.batch_size if batch_size is None else batch_size
    sampler = sc.sampler if sampler is None else sampler
    steps = sc.steps if steps is None else steps
    eta = sc.eta if eta is None else eta
    seed = sc.seed if seed is None else seed
    ema = sc.ema if ema is None else ema
    clip_x0 = sc.clip_x0 if clip_x0 is None else clip_x0
    # default: the run's pinned train.precision, so a run config's fp32 also holds for its samples
    # (bf16 and fp32 samples differ; "auto" would pick bf16 on some CPUs only)
    precision = cfg.train.precision if precision is None else precision
    if guidance is None:
        # the run config's guidance is for samples given a condition (sample_conditional); joint
        # samples of a model that is not class-conditional have nothing to be guided towards
        no_condition = condition in (None, "", "none") and not getattr(model, "class_conditional", False)
        guidance = "none" if no_condition else sc.guidance
    guidance_scale = check_guidance(guidance, sc.guidance_scale if guidance_scale is None else guidance_scale)
    if not ema:
        model, diffusion, cfg, info, state = load_run(run, use_ema=False, device=dev)
    if model.kind != "diffusion":
        raise ConfigError(f"run {str(run)!r} is a {model.kind}, which does not generate; use mtdiff predict")
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    name, value = parse_condition(condition, model, info)
    test_split = load_split(cfg, "test", in_memory=True) if value == "test" else None
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    amp = autocast(dev, precision)
    chunks: dict[str, list] = {}
    t0 = time.time()
    bar = Progress(math.ceil(num_samples / batch_size), f"sample {cfg.model} (NFE {steps}) batch", mode=progress,
                   unit="batch", unit_scale=batch_size)
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        given, class_labels = {}, None
        if name is not None:
            v = _given_values(name, value, start, n, info, test_split, model)
            if name == "label" and model.class_conditional:
                class_labels = v
            else:
                given[name] = v
        res = sample(model, diffusion, n, sampler=sampler, steps=steps, eta=eta, given=given,
                     class_labels=class_labels, generator=g, clip_x0=clip_x0, guidance=guidance,
                     guidance_scale=guidance_scale, device=dev, autocast=amp)
        chunks.setdefault("images", []).append(to_uint8(res["image"].cpu()))
        for key in ("label", "mask"):
            if key in res:
                chunks.setdefault(key, []).append(res[key].cpu().long())
        if "masked_image" in res:
            chunks.setdefault("masked_image", []).append(to_uint8(res["masked_image"].cpu()))
        bar.update(1)
    bar.close()
    arrays = {k: torch.cat(v).numpy() for k, v in chunks.items()}
    wall = time.time() - t0
    with _atomic_path(out / "samples.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    if write_pngs:
        from PIL import Image

        for i, img in enumerate(arrays["images"]):
            arr = img.transpose(1, 2, 0)
            Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(out / "images" / f"{i:06d}.png")
    k = min(64, num_samples)
    grid = sample_grid(torch.from_numpy(arrays["images"][:k]),
                       masks=arrays["mask"][:k] if "mask" in arrays else None,
                       labels=arrays["label"][:k] if "label" in arrays else None,
                       class_names=info.class_names or None)
    with _atomic_path(out / "grid.png") as tmp:
        grid.save(tmp, format="PNG")
    protocol = {
        "run": str(run), "model": cfg.model, "dataset": info.name, "train_seed": cfg.train.seed,
        "checkpoint_step": int(state["step"]), "images_seen": int(state["step"]) * cfg.train.batch_size,
        "ema": ema, "sampler": sampler, "nfe": len(timesteps(diffusion.num_steps, steps)),
        "eta": eta if sampler == "ddim" else 1.0, "seed": seed, "condition": condition or "none",
        "num_samples": num_samples, "clip_x0": clip_x0, "guidance": guidance, "guidance_scale": guidance_scale,
        "cond_drop_prob": cfg.train.cond_drop_prob, "wall_s": wall, "device": str(dev),
        # the precision the network ran in (autocast above), which metric records carry
        "precision": resolve_precision(precision, dev),
    }
    atomic_write_json(out / "sample.json", protocol)
    log(f"wrote {num_samples} samples to {out} (samples.npz, grid.png{', images/' if write_pngs else ''}) in {wall:.1f} s")
    return protocol
