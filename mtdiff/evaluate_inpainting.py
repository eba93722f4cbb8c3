"""``mtdiff evaluate inpainting``: complete held-out test images with every method of
:mod:`mtdiff.inpainting` on the same seeded masks, and write the records and a grid PNG.

    mtdiff evaluate inpainting --mt-run results/digits/train/mt_masked/seed0 \
        --baseline-run results/digits/train/ddpm/seed0 --extractor-weights results/digits/extractor/domain.pt \
        --out results/digits/metrics/inpainting_seed0.jsonl --grid results/digits/inpainting/seed0/grid.png

Methods: ``mt_conditional`` (the ``--mt-run``, an MT model with the masked_image modality,
sampled given the masked image, head guidance at ``--guidance-scale``), ``mt_repaint`` (the same
model with RePaint's replacement and resampling as well; ours, off with --no-mt-repaint),
``repaint`` (the ``--baseline-run``, an image-only model, with resampling), ``nearest_neighbour``
(always; the anchor, from the training split). Every diffusion method uses the same sampler and
steps; the two replacement methods the same ``--resample-jumps``, so they are at equal NFE
(steps x (1 + jumps)); mt_conditional cannot resample and runs at NFE = steps (each record
states its NFE). With ``--posterior-samples`` K >= 2 each diffusion method also gets a
``<method>_posterior_mean`` row: PSNR/MSE of the average of K completions (the MMSE estimate,
K x the NFE, no FID), next to the per-sample numbers. Mask pattern and ratio default to the MT
run's masked_image options (the masks it was trained on).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from mtdiff.errors import ConfigError

GRID_COLUMNS = ("masked", "mt_masked", "mt+RePaint", "RePaint", "nearest", "truth")
GRID_METHODS = ("mt_conditional", "mt_repaint", "repaint", "nearest_neighbour")  # one sample each


def _mask_options(cfg, pattern, ratio, patch_size) -> dict:
    m = cfg.modalities["masked_image"]
    return {"pattern": pattern or m.mask_pattern, "ratio": m.mask_ratio if ratio is None else ratio,
            "patch_size": m.patch_size if patch_size is None else patch_size}


def inpainting_grid(masked, columns: list[torch.Tensor], keep, *, rows: int = 12, min_cell: int = 56):
    """PIL image: one row per example, columns masked input | each completion | truth; hidden
    pixels of the masked input shown in red."""
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    from mtdiff.viz import to_uint8

    k = min(rows, len(masked))
    shown = to_uint8(masked[:k])
    if shown.shape[1] == 1:
        shown = shown.repeat(1, 3, 1, 1)
    hole = keep[:k].expand(-1, 3, -1, -1) == 0
    red = torch.tensor([200, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand_as(shown)
    shown = torch.where(hole, red, shown)
    cells = [shown] + [to_uint8(c[:k]).expand(-1, 3, -1, -1) if c.shape[1] == 1 else to_uint8(c[:k]) for c in columns]
    stacked = torch.stack(cells, dim=1).flatten(0, 1)  # row-major: example, column
    scale = max(1, -(-min_cell // stacked.shape[2]))
    stacked = stacked.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    grid = make_grid(stacked, nrow=len(cells), padding=2, pad_value=255)
    header = 14
    img = Image.new("RGB", (grid.shape[2], grid.shape[1] + header), (255, 255, 255))
    img.paste(Image.fromarray(grid.permute(1, 2, 0).numpy()), (0, header))
    draw = ImageDraw.Draw(img)
    w = stacked.shape[3] + 2
    for j, name in enumerate(GRID_COLUMNS[: len(cells)]):
        draw.text((2 + j * w, 1), name[: max(4, w // 6)], fill=(0, 0, 0))
    return img


def inpainting(out, *, mt_run=None, baseline_run=None, weights=None, grid=None, num_images: int | None = None,
               mask_pattern=None, mask_ratio=None, patch_size=None, mask_seed: int = 0, sampler=None, steps=None,
               eta=None, resample_jumps: int | None = None, guidance_scale: float | None = None,
               posterior_samples: int | None = None, with_mt_repaint: bool = True, seed: int = 0, cache_dir=None,
               overrides: list[str] | None = None, append=False, device="auto") -> list[dict]:
    """Run the comparison (fp32, every diffusion method alike); returns the records written to
    ``out``. Without ``weights`` (and with the domain extractor) FID/KID are left out.

    ``resample_jumps`` / ``guidance_scale`` / ``posterior_samples`` default to the run config's
    ``eval.inpaint_*`` (mtdiff/config.py); ``overrides`` (``KEY=VALUE``, as ``--set``) are applied
    to both runs' configs first: the workflow passes the current eval / sample sections."""
    from mtdiff.evaluate import _fidelity, _run_config, _write
    from mtdiff.inpainting import complete_mt, draw_keep_masks, nearest_neighbour_fill, posterior_mean, repaint
    from mtdiff.metrics.inpainting import hidden_region_errors, inpainting_records, summary
    from mtdiff.samplers import check_guidance, timesteps
    from mtdiff.train import load_run, load_split
    from mtdiff.utils import atomic_write_json, resolve_device

    if mt_run is None and baseline_run is None:
        raise ConfigError("give --mt-run (an mt_masked run) and/or --baseline-run (a ddpm run) to compare")
    dev = resolve_device(device)
    runs = {}
    for role, run in (("mt_conditional", mt_run), ("repaint", baseline_run)):
        if run is not None:
            model, diffusion, _, info, state = load_run(run, device=dev)
            runs[role] = (run, model, diffusion, _run_config(run, overrides), info, state)
    first_cfg = next(iter(runs.values()))[3]
    mask_cfg = runs["mt_conditional"][3] if "mt_conditional" in runs else first_cfg
    if "masked_image" not in mask_cfg.modalities:
        raise ConfigError("the run config has no modalities.masked_image section for the mask defaults")
    mask = dict(_mask_options(mask_cfg, mask_pattern, mask_ratio, patch_size), seed=mask_seed)
    sc, ec = first_cfg.sample, first_cfg.eval
    sampler = ec.inpaint_sampler if sampler is None else sampler
    steps = sc.steps if steps is None else steps
    eta = sc.eta if eta is None else eta
    jumps = ec.inpaint_resample_jumps if resample_jumps is None else resample_jumps
    if isinstance(jumps, bool) or not isinstance(jumps, int) or jumps < 0:
        raise ConfigError(f"--resample-jumps={jumps!r} must be an integer >= 0 (0 = off)")
    scale = ec.inpaint_guidance_scale if guidance_scale is None else guidance_scale
    try:
        scale = check_guidance("head", scale)
    except ConfigError:
        raise ConfigError(f"--guidance-scale={scale!r} (eval.inpaint_guidance_scale) is not accepted; accepted: "
                          f"a finite number >= 0 (0 = no guidance)") from None
    k_post = ec.inpaint_posterior_samples if posterior_samples is None else posterior_samples
    if isinstance(k_post, bool) or not isinstance(k_post, int) or k_post < 0 or k_post == 1:
        raise ConfigError(f"--posterior-samples={k_post!r} is not accepted; accepted: 0 (off) or an integer >= 2")
    guidance = "head" if scale > 0 else "none"
    datasets = {r[3].data.dataset for r in runs.values()}
    if len(datasets) > 1:
        raise ConfigError(f"--mt-run and --baseline-run were trained on different datasets ({sorted(datasets)})")
    test = load_split(first_cfg, "test", in_memory=True).images
    train = load_split(first_cfg, "train", in_memory=True).images
    n = num_images if num_images is not None else ec.inpaint_num_images or len(test)
    if not 2 <= n <= len(test):
        raise ConfigError(f"--num-images={n} (eval.inpaint_num_images) must be in 2..{len(test)} (the test split's size)")
    images = test[:n].float()
    keep = draw_keep_masks(n, images.shape[-1], pattern=mask["pattern"], ratio=mask["ratio"],
                           patch_size=mask["patch_size"], seed=mask_seed)
    reference = load_split(first_cfg, first_cfg.eval.reference_split, in_memory=True).images
    cache = f"{first_cfg.data.dataset}-{first_cfg.eval.reference_split}"
    records, completions = [], {}
    protocol = {"steps": steps, "eta": eta, "sample_seed": seed}

    def measure(method, model_name, done, t0, *, state=None, cfg=None, nfe=None, ema=None, extra=None,
                fidelity=True):
        # both diffusion methods run without autocast (fp32) on dev; nearest_neighbour runs no network
        errors = summary(hidden_region_errors(done, images, keep))
        fid_values, ext_name = {}, None
        if fidelity and (weights is not None or first_cfg.eval.extractor == "inception"):
            fid_values, ext_name, _, _ = _fidelity(cfg or first_cfg, done, reference, weights, cache_dir, cache)
        completions[method] = done
        records.extend(inpainting_records(
            dataset=first_cfg.data.dataset, model=model_name, method=method, seed=cfg.train.seed if cfg else 0,
            checkpoint_step=int(state["step"]) if state else None, ema=ema, sampler=sampler if nfe else None,
            nfe=nfe, n=n, errors=errors, fidelity=fid_values, reference_split=first_cfg.eval.reference_split,
            n_reference=int(len(reference)), extractor=ext_name, wall_time_s=time.time() - t0, mask=mask,
            precision="fp32" if state else None, device=dev if state else None,
            extra=dict(protocol, **(extra or {})) if nfe else dict(extra or {})))
        print(f"{method:30s} ({model_name}): NFE {nfe}, PSNR {errors['inpaint_psnr']:.2f} dB, "
              f"MSE {errors['inpaint_mse']:.4f}, FID {fid_values.get('fid', float('nan')):.3f}", flush=True)

    # every diffusion method: (method, model name, role, completion function of a generator, settings)
    methods = []
    for role, (run, model, diffusion, cfg, info, state) in runs.items():
        common = dict(sampler=sampler, steps=steps, eta=eta, clip_x0=cfg.sample.clip_x0, device=dev)
        if role == "mt_conditional":
            one_pass = len(timesteps(diffusion.num_steps, steps))

            def mt_conditional(g, model=model, diffusion=diffusion, common=common, one_pass=one_pass):
                return complete_mt(model, diffusion, images, keep, generator=g, **common,
                                   sample_options={"guidance": guidance, "guidance_scale": scale}), one_pass

            def mt_repaint(g, model=model, diffusion=diffusion, common=common):
                return repaint(model, diffusion, images, keep, generator=g, resample_jumps=jumps, guidance=guidance,
                               guidance_scale=scale, **common)

            settings = {"guidance": guidance, "guidance_scale": scale}
            methods.append(("mt_conditional", cfg.model, role, mt_conditional, dict(settings, resample_jumps=0)))
            if with_mt_repaint:  # ours: mt_masked with replacement (and resampling) too
                methods.append(("mt_repaint", f"{cfg.model}+repaint", role, mt_repaint,
                                dict(settings, resample_jumps=jumps)))
        else:
            def ddpm_repaint(g, model=model, diffusion=diffusion, common=common):
                return repaint(model, diffusion, images, keep, generator=g, resample_jumps=jumps, **common)

            methods.append(("repaint", cfg.model, role, ddpm_repaint,
                            {"guidance": "none", "guidance_scale": 0.0, "resample_jumps": jumps}))
    for method, model_name, role, complete, settings in methods:
        run, _, _, cfg, _, state = runs[role]
        t0 = time.time()
        done, nfe = complete(torch.Generator().manual_seed(seed))
        extra = dict(settings, run=str(run), posterior_samples=None)
        measure(method, model_name, done, t0, state=state, cfg=cfg, nfe=nfe, ema=True, extra=extra)
        if k_post:  # the MMSE estimate: PSNR/MSE only (the mean of K completions is not a sample)
            t0 = time.time()
            mean, nfe_k = posterior_mean(complete, k_post, seed)
            measure(f"{method}_posterior_mean", f"{model_name} posterior mean", mean, t0, state=state, cfg=cfg,
                    nfe=nfe_k, ema=True, extra=dict(extra, posterior_samples=k_post), fidelity=False)
    t0 = time.time()
    done, idx = nearest_neighbour_fill(images, keep, train.float())
    measure("nearest_neighbour", "nearest_neighbour", done, t0, extra={"neighbours_from": "train"})
    _write(records, out, append)
    if grid is not None:
        cols = [completions.get(m, torch.zeros_like(images)) for m in GRID_METHODS]
        img = inpainting_grid(images * keep, cols + [images], keep)
        Path(grid).parent.mkdir(parents=True, exist_ok=True)
        img.save(grid)
        atomic_write_json(Path(grid).with_suffix(".json"), {
            "columns": list(GRID_COLUMNS), "mask": mask, "sampler": sampler, "steps": steps, "seed": seed,
            "guidance_scale": scale, "resample_jumps": jumps, "runs": {m: str(r[0]) for m, r in runs.items()}})
    return records


def add_inpainting_parser(ev) -> None:
    """``mtdiff evaluate inpainting`` (added by mtdiff.cli to mtdiff.evaluate's commands)."""
    q = ev.add_parser("inpainting", help="inpaint test images: mt_masked vs RePaint ddpm vs nearest-neighbour copy")
    q.add_argument("--out", required=True)
    q.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    q.add_argument("--mt-run", help="run folder of an MT model with the masked_image modality (mt_masked)")
    q.add_argument("--baseline-run", help="run folder of an image-only diffusion model (ddpm), RePaint-style")
    q.add_argument("--extractor-weights", help="domain extractor weights (FID of the completions)")
    q.add_argument("--grid", help="PNG: masked input | mt_masked | mt_masked + RePaint | RePaint | nearest neighbour | truth")
    q.add_argument("--num-images", type=int, default=None, help="test images to complete (default: eval.inpaint_num_images; none: all)")
    q.add_argument("--mask-pattern", default=None, help="patches | center | pixels (default: the MT run's)")
    q.add_argument("--mask-ratio", type=float, default=None, help="fraction of pixels hidden (default: the MT run's)")
    q.add_argument("--patch-size", type=int, default=None, help="pixels (patches only; default: the MT run's)")
    q.add_argument("--mask-seed", type=int, default=0, help="seed of the masks, shared by every method")
    q.add_argument("--sampler", default=None, help="ddpm | ddim (default: eval.inpaint_sampler)")
    q.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's sample.steps)")
    q.add_argument("--eta", type=float, default=None)
    q.add_argument("--resample-jumps", type=int, default=None,
                   help="RePaint resampling rounds per step, ddpm and mt_repaint alike (default: eval.inpaint_resample_jumps)")
    q.add_argument("--guidance-scale", type=float, default=None,
                   help="head guidance on the masked image, mt_masked's methods (default: eval.inpaint_guidance_scale)")
    q.add_argument("--posterior-samples", type=int, default=None,
                   help="completions averaged for the posterior-mean PSNR/MSE, 0 = off (default: eval.inpaint_posterior_samples)")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of both runs' configs (the workflow passes the current eval / sample values)")
    q.add_argument("--no-mt-repaint", action="store_true", help="skip mt_masked with replacement (method mt_repaint)")
    q.add_argument("--seed", type=int, default=0, help="sampling noise seed")
    q.add_argument("--cache-dir")
    q.add_argument("--device", default="auto")
    q.set_defaults(func=lambda a: inpainting(
        a.out, mt_run=a.mt_run, baseline_run=a.baseline_run, weights=a.extractor_weights, grid=a.grid,
        num_images=a.num_images, mask_pattern=a.mask_pattern, mask_ratio=a.mask_ratio, patch_size=a.patch_size,
        mask_seed=a.mask_seed, sampler=a.sampler, steps=a.steps, eta=a.eta, resample_jumps=a.resample_jumps,
        guidance_scale=a.guidance_scale, posterior_samples=a.posterior_samples, overrides=a.overrides,
        with_mt_repaint=not a.no_mt_repaint,
        seed=a.seed, cache_dir=a.cache_dir, append=a.append, device=a.device))
