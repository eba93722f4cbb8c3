"""Inpainting metrics and their records (docs/method.md, "Inpainting").

* :func:`hidden_region_errors`: per-image MSE and PSNR over the hidden pixels only, on the
  [0, 1] intensity scale (images are given in [-1, 1]). PSNR = 10 log10(1 / MSE) with the MSE
  floored at (0.5 / 255)^2, half a grey level: an exact copy scores about 54 dB instead of inf.
* :func:`inpainting_records`: one record per metric in the format of
  :mod:`mtdiff.metrics.records`; the protocol fields carry N, seed, NFE, sampler and checkpoint
  step, and ``extra`` the method, the mask (pattern, ratio, patch size, seed) and
  ``condition`` = ``inpaint <pattern> <ratio>``, which the report uses as the column qualifier
  so that different masks are never averaged together.

Metric names: ``inpaint_mse`` and ``inpaint_psnr`` (hidden region, mean over images),
``inpaint_fid`` / ``inpaint_kid_mean`` / ``inpaint_kid_std`` (completions vs the reference split).
"""

from __future__ import annotations

import torch

from mtdiff.errors import ConfigError

MSE_FLOOR = (0.5 / 255) ** 2
INPAINT_METRICS = ("inpaint_mse", "inpaint_psnr", "inpaint_fid", "inpaint_kid_mean", "inpaint_kid_std")


def hidden_region_errors(completed: torch.Tensor, truth: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"mse": (N,), "psnr": (N,)}`` over the hidden pixels (keep == 0) of each image, all
    channels, intensities mapped from [-1, 1] to [0, 1]."""
    if completed.shape != truth.shape:
        raise ConfigError(f"completions {tuple(completed.shape)} and truth {tuple(truth.shape)} differ in shape")
    n, c, h, w = truth.shape
    if tuple(keep.shape) != (n, 1, h, w):
        raise ConfigError(f"inpainting mask of shape {tuple(keep.shape)} does not fit images {tuple(truth.shape)}; "
                          f"accepted: ({n}, 1, {h}, {w})")
    hidden = (1 - keep.float()).expand(-1, c, -1, -1)
    count = hidden.sum(dim=(1, 2, 3))
    if (count == 0).any():
        raise ConfigError("an inpainting mask hides no pixel; the hidden-region error is undefined (redraw the masks)")
    diff = (completed.float() - truth.float()) / 2  # [-1, 1] -> [0, 1] scale
    mse = (diff.pow(2) * hidden).sum(dim=(1, 2, 3)) / count
    psnr = 10 * torch.log10(1 / mse.clamp_min(MSE_FLOOR))
    return {"mse": mse, "psnr": psnr}


def summary(errors: dict[str, torch.Tensor]) -> dict[str, float]:
    """Means over images: ``inpaint_mse``, ``inpaint_psnr``."""
    return {"inpaint_mse": float(errors["mse"].mean()), "inpaint_psnr": float(errors["psnr"].mean())}


def mask_condition(pattern: str, ratio: float) -> str:
    return f"inpaint {pattern} {ratio:g}"


def inpainting_records(*, dataset: str, model: str, method: str, seed: int, checkpoint_step, ema, sampler, nfe,
                       n: int, errors: dict[str, float], fidelity: dict[str, float] | None, reference_split: str | None,
                       n_reference: int | None, extractor: str | None, wall_time_s: float, mask: dict,
                       precision: str | None, device: str | None, extra: dict | None = None) -> list[dict]:
    """Records (dicts, validated by :class:`mtdiff.metrics.MetricRecord`) of one method.

    ``mask``: ``pattern``, ``ratio``, ``patch_size``, ``seed``. Hidden-region errors compare
    with the test images themselves (reference split ``test``, N of them); FID/KID with the
    reference split."""
    from mtdiff.metrics.records import metric_record

    common = dict(dataset=dataset, model=model, seed=seed, checkpoint_step=checkpoint_step, ema=ema, sampler=sampler,
                  nfe=nfe, n_generated=n, wall_time_s=wall_time_s, precision=precision, device=device)
    ex = dict(extra or {}, method=method, condition=mask_condition(mask["pattern"], mask["ratio"]),
              mask_pattern=mask["pattern"], mask_ratio=mask["ratio"], patch_size=mask["patch_size"],
              mask_seed=mask["seed"])
    out = []
    for metric, value in errors.items():
        out.append(dict(common, reference_split="test", n_reference=n, extractor=None, metric=metric,
                        value=value, extra=dict(ex)))
    for metric, value in (fidelity or {}).items():
        out.append(dict(common, reference_split=reference_split, n_reference=n_reference, extractor=extractor,
                        metric=f"inpaint_{metric}", value=value, extra=dict(ex)))
    return [metric_record(**r) for r in out]
