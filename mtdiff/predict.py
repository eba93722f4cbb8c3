"""Labels and masks of a real dataset split, from a classifier, a segmenter or an MT model.

    mtdiff predict --run results/digits/train/mt_label/seed0 --task label --split test \
        --out results/digits/predict/mt_label/seed0/label.npz [--procedure elbo | elbo_joint]

Writes ``true`` and ``pred`` arrays plus the protocol (``predict.json`` beside the .npz).
MT models use the inference procedure of docs/method.md, section 6 (``head`` readout at
``t_infer``, or the ``elbo`` / ``elbo_joint`` diffusion-classifier for labels, eqs. 12 and 12b).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mtdiff.errors import ConfigError
from mtdiff.io import atomic_open, atomic_write_json
from mtdiff.samplers import predict
from mtdiff.train import load_run, load_split
from mtdiff.utils import resolve_device


def predict_split(run, out, *, task: str, split: str = "test", procedure: str | None = None,
                  t_infer: int | None = None, num_draws: int | None = None, elbo_timesteps: int | None = None,
                  batch_size: int = 256,
                  seed: int = 0, device: str = "auto", ema: bool = True, log=print) -> dict:
    dev = resolve_device(device)
    model, diffusion, cfg, info, state = load_run(run, use_ema=ema, device=dev)
    inf = cfg.inference
    procedure = procedure or (inf.label_procedure if task == "label" else inf.mask_procedure)
    t_infer = t_infer or inf.t_infer
    num_draws = num_draws or inf.num_draws
    elbo_timesteps = elbo_timesteps or inf.elbo_timesteps
    data = load_split(cfg, split, in_memory=True)
    truth = data.labels if task == "label" else data.masks
    if truth is None:
        raise ConfigError(f"dataset {info.name!r} has no {task}s to predict")
    g = torch.Generator().manual_seed(seed)
    preds = []
    t0 = time.time()
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(dev)
        preds.append(predict(model, diffusion, images, task, procedure=procedure, t_infer=t_infer,
                             num_draws=num_draws, elbo_timesteps=elbo_timesteps, generator=g).cpu())
    pred = torch.cat(preds).numpy()
    wall = time.time() - t0
    out = Path(out)
    with atomic_open(out) as fh:
        np.savez_compressed(fh, true=truth.numpy(), pred=pred)
    is_mt = model.kind == "diffusion"
    protocol = {
        "run": str(run), "model": cfg.model, "dataset": info.name, "train_seed": cfg.train.seed, "task": task,
        "split": split, "n": int(len(pred)), "checkpoint_step": int(state["step"]), "ema": ema,
        "procedure": procedure if is_mt else "direct", "t_infer": t_infer if is_mt and procedure == "head" else None,
        "num_draws": num_draws if is_mt else None, "seed": seed, "wall_s": wall,
        # how the network ran: predict() calls it without autocast, so in fp32 whatever the run
        # trained in (metric records carry both: mtdiff.metrics.records.ran_with)
        "precision": "fp32", "device": str(dev),
    }
    atomic_write_json(out.with_suffix(".json"), protocol)
    agreement = float((pred == truth.numpy()).mean())
    log(f"wrote {out} ({len(pred)} {task} predictions, {'accuracy' if task == 'label' else 'pixel accuracy'} "
        f"{agreement:.4f}, {wall:.1f} s)")
    return protocol
