"""Mask-to-image ("image transition", docs/method.md, section 7): images generated given the
semantic masks of the test split, judged by the trained segmenter (mIoU of its masks of the
generated images vs the given masks) and by FID/KID against the reference split.

    python -m mtdiff.mask_to_image --run results/digits/train/mt_all/seed0 \
        --segmenter results/digits/train/segmenter/seed0 --extractor-weights results/digits/extractor/domain.pt \
        --out results/digits/metrics/m2i_mt_all_seed0.jsonl [--scales 0,1,4] [--samples-root DIR]

MT models (``mt_mask``, ``mt_all``) are sampled with ``guidance: head`` on the mask (eq. 13).
The single-task baseline is ``ddpm`` with *universal guidance* (Bansal et al. 2023, forward
guidance): eps_g = eps - s sqrt(1 - abar_t) grad_{z_t} log p_seg(mask | x0_hat(z_t)), with the
trained segmenter applied to the current estimate x0_hat = (z_t - sqrt(1 - abar_t) eps(z_t)) /
sqrt(abar_t) and the gradient taken through both networks. Both use the run's sampler and
``sample.steps`` (equal NFE; both do one forward and one backward per step), the same test
masks and the same noise seed. Records: ``m2i_miou``, ``m2i_pixel_accuracy``, ``m2i_fid``,
``m2i_kid_mean``, ``m2i_kid_std``; ``extra`` holds guidance, guidance_scale and the route.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mtdiff.errors import ConfigError, exit_status
from mtdiff.samplers import check_guidance, sample, timesteps


def universal_guided_sample(model, diffusion, segmenter, masks, *, steps: int, scale: float, clip_x0: bool = True,
                            generator=None) -> torch.Tensor:
    """DDIM (eta = 0) of an image-only diffusion model guided by a segmenter on x0_hat."""
    if model.modalities or model.class_conditional:
        raise ConfigError("universal guidance here is the ddpm baseline: the run must be model=ddpm")
    n = masks.shape[0]
    z = torch.randn(n, model.channels, model.image_size, model.image_size, generator=generator)
    abar = diffusion.alpha_bars
    ts = timesteps(diffusion.num_steps, steps)
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else 0
        tt = torch.full((n,), t, dtype=torch.long)
        a_t = abar[t].item()
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            pred = model(zg, tt)["image"].float()
            x0_g, eps_g = diffusion.split_prediction(pred, zg, tt, torch.zeros_like(zg))
            if scale > 0:
                logp = -F.cross_entropy(segmenter(x0_g), masks.long(), reduction="none").flatten(1).sum(1)
                (grad,) = torch.autograd.grad(logp.sum(), zg)
        z0, eps = x0_g.detach(), eps_g.detach()
        if clip_x0:  # the same clip-then-guide order as samplers.guided_eps
            z0 = z0.clamp(-1, 1)
            eps = (z - a_t**0.5 * z0) / (1 - a_t) ** 0.5
        if scale > 0:
            eps = eps - scale * (1 - a_t) ** 0.5 * grad
            z0 = (z - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        if s == 0:
            z = z0
            break
        a_s = abar[s].item()
        z = a_s**0.5 * z0 + (1 - a_s) ** 0.5 * eps
    return z.clamp(-1, 1)


def evaluate_mask_to_image(run, segmenter_run, weights, out, *, scales=(0.0, 1.0, 4.0), num_samples: int | None = None,
                           seed: int = 0, samples_root=None, cache_dir=None, log=print) -> list[dict]:
    from mtdiff import evaluate
    from mtdiff.metrics import segmentation_metrics
    from mtdiff.metrics.records import metric_record
    from mtdiff.train import load_run, load_split
    from mtdiff.viz import sample_grid, to_uint8

    model, diffusion, cfg, info, state = load_run(run, device="cpu")
    seg = evaluate._load_judge(segmenter_run, "segmenter").eval()
    for p in seg.parameters():
        p.requires_grad_(False)
    route = "mt_head" if "mask" in model.modalities else "ddpm_universal"
    if route == "ddpm_universal" and (model.modalities or model.class_conditional):
        raise ConfigError(f"run {str(run)!r} (model={cfg.model}): mask-to-image needs mt_mask / mt_all, or ddpm "
                          f"(the universal-guidance baseline)")
    scales = [check_guidance("head", s) for s in scales]
    test = load_split(cfg, "test", in_memory=True)
    if test.masks is None:
        raise ConfigError(f"dataset {info.name!r} has no masks")
    num_samples = num_samples or cfg.eval.num_samples
    idx = torch.arange(num_samples) % len(test)
    masks = test.masks[idx].long()
    reference = evaluate._reference(cfg)
    records = []
    for scale in scales:
        g = torch.Generator().manual_seed(seed)
        t0 = time.time()
        chunks = []
        for start in range(0, num_samples, cfg.sample.batch_size):
            m = masks[start : start + cfg.sample.batch_size]
            if route == "mt_head":
                res = sample(model, diffusion, len(m), sampler="ddim", steps=cfg.sample.steps, eta=0.0,
                             given={"mask": m}, generator=g, clip_x0=cfg.sample.clip_x0, guidance="head",
                             guidance_scale=scale)
                chunks.append(res["image"])
            else:
                chunks.append(universal_guided_sample(model, diffusion, seg, m, steps=cfg.sample.steps, scale=scale,
                                                      clip_x0=cfg.sample.clip_x0, generator=g))
        images = torch.cat(chunks)
        wall = time.time() - t0
        with torch.no_grad():
            pred = seg(images).argmax(1)
        sm = segmentation_metrics(masks.numpy(), pred.numpy(), seg.mask.num_classes)
        u8 = to_uint8(images)
        fid, name, fid_wall, _ = evaluate._fidelity(cfg, u8.numpy(), reference, weights, cache_dir,
                                                    f"{cfg.data.dataset}-{cfg.eval.reference_split}")
        if samples_root is not None:
            folder = Path(samples_root) / f"s{scale:g}"
            folder.mkdir(parents=True, exist_ok=True)
            sample_grid(u8[:64], masks=masks[:64].numpy()).save(folder / "grid.png")
        common = dict(dataset=info.name, model=cfg.model, seed=cfg.train.seed, checkpoint_step=int(state["step"]),
                      ema=True, sampler="ddim", nfe=len(timesteps(diffusion.num_steps, cfg.sample.steps)),
                      n_generated=num_samples, precision="fp32", device="cpu")  # loaded on the CPU, no autocast
        extra = {"condition": "mask=test", "guidance": "head" if route == "mt_head" else "universal",
                 "guidance_scale": scale, "route": route, "judge": str(segmenter_run), "sampling_wall_s": wall}
        records += [metric_record(**common, metric=f"m2i_{k}", value=sm[v], wall_time_s=wall, extra=extra)
                    for k, v in (("miou", "mean_iou"), ("pixel_accuracy", "pixel_accuracy"))]
        records += [metric_record(**common, reference_split=cfg.eval.reference_split, n_reference=int(len(reference)),
                                  extractor=name, metric=f"m2i_{k}", value=v, wall_time_s=fid_wall, extra=extra)
                    for k, v in fid.items()]
        log(f"{cfg.model} ({route}) s={scale:g}: mIoU {sm['mean_iou']:.3f}, FID {fid['fid']:.3f}, sampling {wall:.1f} s")
    evaluate._write(records, out)
    return records


def main(argv: list[str] | None = None) -> int:
    from mtdiff.guidance_sweep import guided_evaluation_parser, parse_scales

    p = guided_evaluation_parser(
        "python -m mtdiff.mask_to_image", __doc__,
        run_help="mt_mask / mt_all run, or a ddpm run (universal-guidance baseline)",
        judge=("--segmenter", "run folder of the trained segmenter (judge and baseline guide)"),
        scales_default="0,1,4", scales_help="comma-separated guidance scales >= 0",
        samples_root_help="write a grid per scale under this folder")
    a = p.parse_args(argv)
    return exit_status(lambda: evaluate_mask_to_image(
        a.run, a.segmenter, a.extractor_weights, a.out, scales=parse_scales(a.scales), num_samples=a.num_samples,
        seed=a.seed, samples_root=a.samples_root, cache_dir=a.cache_dir))


if __name__ == "__main__":
    sys.exit(main())
