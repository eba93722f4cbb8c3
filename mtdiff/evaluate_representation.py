"""``mtdiff evaluate representation``: joint image + representation generation by an MT model
with the ``representation`` modality (``mt_repr``; docs/method.md, "Representation").

    mtdiff evaluate representation --run results/digits/train/mt_repr/seed0 \
        --extractor-weights results/digits/extractor/domain.pt --out results/digits/metrics/repr_mt_repr_seed0.jsonl

Samples N images with their representations (the head's regression at the last step), then
measures how well the generated representation matches the extractor's features of the
generated image: ``repr_cosine`` = mean over samples of cos(generated, extractor(image)).
``repr_cosine_shuffled`` pairs each generated representation with another sample's features
(a seeded derangement): the level a representation that ignores its own image would reach.
FID/KID of the images against the reference split, as for every model.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from mtdiff.errors import ConfigError


def cosine_agreement(generated: torch.Tensor, features: torch.Tensor, *, seed: int = 0) -> dict[str, float]:
    """Mean cosine of paired rows, and of rows paired by a seeded derangement (shift of a
    random permutation, so no row meets its own partner)."""
    if generated.shape != features.shape or generated.dim() != 2 or len(generated) < 2:
        raise ConfigError(f"representations {tuple(generated.shape)} and features {tuple(features.shape)} must be "
                          f"(N, D) alike with N >= 2")
    perm = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    partner = torch.empty_like(perm)
    partner[perm] = perm.roll(1)
    return {"repr_cosine": float(F.cosine_similarity(generated, features, dim=1).mean()),
            "repr_cosine_shuffled": float(F.cosine_similarity(generated, features[partner], dim=1).mean())}


def representation(run, out, *, weights=None, num_samples=None, batch_size=None, sampler=None, steps=None, eta=None,
                   seed: int = 0, cache_dir=None, append=False, device="auto") -> list[dict]:
    from mtdiff.evaluate import _fidelity, _write
    from mtdiff.metrics.records import metric_record
    from mtdiff.samplers import sample, timesteps
    from mtdiff.train import load_run, load_split
    from mtdiff.utils import resolve_device

    dev = resolve_device(device)
    model, diffusion, cfg, info, state = load_run(run, device=dev)
    if "representation" not in getattr(model, "modalities", {}):
        raise ConfigError(f"run {str(run)!r} has no representation modality (model {cfg.model}); use an mt_repr run")
    sc = cfg.sample
    n = cfg.eval.num_samples if num_samples is None else num_samples
    if n < 2:
        raise ConfigError(f"--num-samples={n} must be >= 2")
    batch_size = sc.batch_size if batch_size is None else batch_size
    sampler, steps = sc.sampler if sampler is None else sampler, sc.steps if steps is None else steps
    eta = sc.eta if eta is None else eta
    mod = model.modalities["representation"]
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    images, reprs = [], []
    for start in range(0, n, batch_size):
        res = sample(model, diffusion, min(batch_size, n - start), sampler=sampler, steps=steps, eta=eta, generator=g,
                     clip_x0=sc.clip_x0, device=dev)
        images.append(res["image"].cpu())
        reprs.append(res["representation"].cpu())
    images, reprs = torch.cat(images), torch.cat(reprs)
    feats = mod.features(images.to(dev)).cpu()
    values = cosine_agreement(reprs, feats, seed=seed)
    wall = time.time() - t0
    common = dict(dataset=cfg.data.dataset, model=cfg.model, seed=cfg.train.seed, checkpoint_step=int(state["step"]),
                  ema=True, sampler=sampler, nfe=len(timesteps(diffusion.num_steps, steps)), n_generated=n,
                  precision="fp32", device=dev)  # sampled above without autocast, on dev
    extra = {"sample_seed": seed, "extractor_path": cfg.modalities["representation"].extractor_path}
    records = [metric_record(**common, metric=k, value=v, wall_time_s=wall, extra=dict(extra)) for k, v in values.items()]
    if weights is not None or cfg.eval.extractor == "inception":
        reference = load_split(cfg, cfg.eval.reference_split, in_memory=True).images
        fid, name, fwall, _ = _fidelity(cfg, images, reference, weights, cache_dir,
                                     f"{cfg.data.dataset}-{cfg.eval.reference_split}")
        records += [metric_record(**common, reference_split=cfg.eval.reference_split, n_reference=int(len(reference)),
                                  extractor=name, metric=k, value=v, wall_time_s=fwall, extra=dict(extra, condition="none"))
                    for k, v in fid.items()]
    _write(records, out, append)
    return records


def add_representation_parser(ev) -> None:
    """``mtdiff evaluate representation`` (added by mtdiff.cli to mtdiff.evaluate's commands)."""
    q = ev.add_parser("representation", help="mt_repr: cosine of generated representations vs the extractor, FID")
    q.add_argument("--run", required=True, help="run folder of an mt_repr model")
    q.add_argument("--out", required=True)
    q.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    q.add_argument("--extractor-weights", help="domain extractor weights (FID/KID); the cosine uses the run's own")
    q.add_argument("--num-samples", type=int, default=None, help="default: eval.num_samples of the run")
    q.add_argument("--batch-size", type=int, default=None)
    q.add_argument("--sampler", default=None)
    q.add_argument("--steps", type=int, default=None)
    q.add_argument("--eta", type=float, default=None)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--cache-dir")
    q.add_argument("--device", default="auto")
    q.set_defaults(func=lambda a: representation(
        a.run, a.out, weights=a.extractor_weights, num_samples=a.num_samples, batch_size=a.batch_size,
        sampler=a.sampler, steps=a.steps, eta=a.eta, seed=a.seed, cache_dir=a.cache_dir, append=a.append,
        device=a.device))
