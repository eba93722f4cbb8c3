"""One training loop for every registered model, with EMA, mixed precision, exact resume and
DistributedDataParallel.

    mtdiff train --config config/runs/example.yaml --out results/digits/train/mt_label/seed0
    torchrun --nproc_per_node=2 -m mtdiff.cli train --config ... --out ...   # DDP (gloo on CPU)

A run folder holds ``config.yaml`` (the resolved config), ``run.json`` (versions, parameters,
device), ``train_log.jsonl`` (one record per ``log_every_steps``), ``checkpoints/`` (rolling
``ckpt-<step>.pt`` plus kept snapshots) and, when done, ``final.pt`` and ``summary.json``.

Resume is automatic: rerunning the same command continues from the newest readable checkpoint
(a truncated or corrupt one is reported and skipped). Everything random is a function of the
seed and the step, or lives in the checkpoint, so an interrupted and resumed run ends with the
same weights as an uninterrupted one (CPU).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import re
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from tqdm.auto import tqdm

import mtdiff
from mtdiff.batches import (  # noqa: F401 (BatchStream, fetch: re-exported for callers of mtdiff.train)
    BatchStream, StepBatches, apply_hflip, fetch, step_generator, step_randomness,
)
from mtdiff.config import RunConfig, _merge, config_from_dict
from mtdiff.errors import CheckpointError, ConfigError, MtdiffError
from mtdiff.models import build_diffusion, build_model, count_parameters, get_model_spec
from mtdiff.utils import (
    _atomic_path, atomic_torch_save, atomic_write_json, autocast, check_gpu_request, resolve_device,
    resolve_precision,
)

CKPT_RE = re.compile(r"ckpt-(\d{8})\.pt$")

# Keys whose change does not alter the trained weights up to the current step: a run folder may
# be continued with different values of these (e.g. a larger budget), never of anything else.
# train.gpus is parallelism only (same global batch, data, noise and math; results agree to float
# rounding, as between DDP and one process), so a run may resume on another GPU count.
# train.tf32 is not: like train.precision it changes the arithmetic of every step (10-bit mantissa
# matmuls/convs), so a run keeps the value it started with. Nor is train.channels_last: the saved
# optimizer state keeps the parameters' memory layout, and fused AdamW refuses a mismatch.
RESUMABLE_KEYS = (
    "train.total_kimg", "train.checkpoint_every_kimg", "train.keep_last", "train.snapshot_kimg",
    "train.log_every_steps", "train.num_workers", "train.threads", "train.gpus", "sample", "inference", "eval",
)


class TrainingDiverged(MtdiffError):
    """A loss term became NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# Data


def load_split(cfg: RunConfig, split: str, *, in_memory: bool = False):
    """The dataset split named by ``cfg.data`` (see mtdiff.data.load_dataset).

    ``in_memory``: return an ArrayDataset (``.images``, ``.labels``, ``.masks`` tensors) even
    for the lazy, torchvision-backed datasets, which are then decoded once, whole: what
    evaluation needs (reference images for FID, labels and masks to score predictions).
    """
    from mtdiff.data import ArrayDataset, load_dataset

    d = cfg.data
    dataset = load_dataset(
        d.dataset, split, image_size=d.image_size, root=d.root, download=d.download,
        num_samples=d.num_train if split == "train" else d.num_test, **d.options,
    )
    if in_memory and getattr(dataset, "images", None) is None:
        arrays = dataset.numpy()
        dataset = ArrayDataset(arrays["images"], arrays.get("labels"), arrays.get("masks"), info=dataset.info)
    return dataset


# ---------------------------------------------------------------------------------------------
# EMA


def ema_beta(batch_size: int, images_seen: int, halflife_kimg: float, rampup_ratio: float | None) -> float:
    """Per-step EMA decay for a half-life in images (NVlabs/edm): beta = 0.5^(batch / halflife)."""
    halflife = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife = min(halflife, images_seen * rampup_ratio)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * model for parameters; buffers copied. One fused
    (multi-tensor) kernel per call instead of a Python loop over parameters."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1 - beta)
    buffers = list(ema.buffers())
    if buffers:
        torch._foreach_copy_(buffers, list(model.buffers()))


# ---------------------------------------------------------------------------------------------
# Checkpoints


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    ckpt_dir = Path(run_dir) / "checkpoints"
    found = []
    for p in ckpt_dir.glob("ckpt-*.pt") if ckpt_dir.is_dir() else []:
        m = CKPT_RE.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


REQUIRED_KEYS = ("model", "ema", "optimizer", "step", "config")


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint; raise CheckpointError (not a torch traceback) if it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; train the model first (mtdiff train)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, bad pickle, ...: all mean "unusable"
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}; it is not an mtdiff checkpoint")
    return state


def latest_checkpoint(run_dir: Path, log=print) -> dict | None:
    """Newest readable checkpoint of a run; unreadable ones are reported and skipped."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            return read_checkpoint(path)
        except CheckpointError as exc:
            log(f"warning: {exc}; falling back to the previous checkpoint")
    return None


def _diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        dotted = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += _diff_keys(a[k], b[k], dotted + ".")
        elif a.get(k) != b.get(k):
            keys.append(dotted)
    return keys


def check_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse to continue a run folder that holds a run of a different configuration."""
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    old = yaml.safe_load(saved.read_text()) or {}
    old = _merge(RunConfig().to_dict(), old)  # keys added to RunConfig since then: their defaults
    diff = [k for k in _diff_keys(old, cfg.to_dict()) if not k.startswith(RESUMABLE_KEYS)]
    if diff:
        raise ConfigError(
            f"{str(run_dir)!r} holds a run of a different config (differs at {', '.join(diff)}); "
            f"choose another --out, or delete that folder to start over"
        )


# ---------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> DistInfo:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on CUDA)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        cuda = device_name != "cpu" and torch.cuda.is_available()
        dist.init_process_group("nccl" if cuda else "gloo")
    return info


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True, stop_after_steps: int | None = None,
          log=print) -> dict:
    """Train ``cfg`` into ``run_dir`` (resuming if it holds checkpoints); returns the summary.

    ``stop_after_steps`` ends the call early after that many steps of this call (used by the
    resume tests to simulate an interruption; the run is resumable afterwards).
    """
    run_dir = Path(run_dir)
    tc = cfg.train
    check_gpu_request(tc.gpus, int(os.environ.get("WORLD_SIZE", 1)))  # before any process group
    dist_info = init_distributed(tc.device)
    device = resolve_device(tc.device)
    if device.type == "cuda" and dist_info.world > 1:
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if device.type == "cuda":  # set both ways: cuDNN allows TF32 by default, matmuls do not
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tc.tf32
    channels_last = tc.channels_last and device.type == "cuda"  # slower on CPU (GroupNorm)
    if tc.batch_size % dist_info.world:
        raise ConfigError(f"train.batch_size={tc.batch_size} must be divisible by the number of processes ({dist_info.world})")
    check_run_dir(run_dir, cfg)

    dataset = load_split(cfg, "train")
    info = dataset.info
    torch.manual_seed(tc.seed)  # model init: the same weights on every rank
    model = build_model(cfg, info).to(device)
    if dist_info.rank > 0:  # then each rank its own stream (dropout), rank 0 that of one process
        torch.manual_seed(tc.seed * 1_000_003 + 7919 * dist_info.rank)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    diffusion = build_diffusion(cfg) if model.kind == "diffusion" else None
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay, fused=True)
    warmup_steps = max(1, round(tc.lr_warmup_kimg * 1000 / tc.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup_steps))
    precision = resolve_precision(tc.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=(precision == "fp16"))
    total_steps = math.ceil(tc.total_kimg * 1000 / tc.batch_size)
    ckpt_every = max(1, round(tc.checkpoint_every_kimg * 1000 / tc.batch_size))
    snapshot_steps = {max(1, round(k * 1000 / tc.batch_size)) for k in tc.snapshot_kimg}
    stream = BatchStream(len(dataset), tc.batch_size, tc.seed)

    step, wall_before = 0, 0.0
    state = latest_checkpoint(run_dir, log)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        restore_rng(state, dist_info, device, log)
        step, wall_before = state["step"], state.get("wall_s", 0.0)
        if dist_info.main:
            log(f"resuming {run_dir} from step {step}")

    net = model
    if dist_info.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False,
        )

    if dist_info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
        atomic_write_json(run_dir / "run.json", {
            "model": cfg.model, "dataset": info.name, "parameters": count_parameters(model),
            "device": str(device), "precision": precision, "world_size": dist_info.world, "mtdiff": mtdiff.__version__,
            "tf32": device.type == "cuda" and tc.tf32, "channels_last": channels_last, "gpus": tc.gpus,
            "torch": torch.__version__, "python": platform.python_version(), "info": info.to_dict(),
        })

    def save_checkpoint(at_step: int) -> None:
        rng = gather_rng(dist_info, device)  # a collective: every rank takes part
        if not dist_info.main:
            return
        payload = {
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "step": at_step,
            "images_seen": at_step * tc.batch_size, "wall_s": wall_before + (time.time() - t_start),
            "rng": rng[0], "rng_per_rank": rng, "config": cfg.to_dict(), "info": info.to_dict(),
            "versions": {"mtdiff": mtdiff.__version__, "torch": torch.__version__},
        }
        atomic_torch_save(payload, run_dir / "checkpoints" / f"ckpt-{at_step:08d}.pt")
        kept = list_checkpoints(run_dir)
        rolling = [(s, p) for s, p in kept if s not in snapshot_steps]
        for s, p in rolling[: max(0, len(rolling) - tc.keep_last)]:
            p.unlink(missing_ok=True)

    t_start = time.time()
    log_path = run_dir / "train_log.jsonl"
    bar = tqdm(total=total_steps, initial=step, disable=not (progress and dist_info.main), desc=cfg.model,
               mininterval=2.0, file=sys.stderr)
    amp = autocast(device, precision)
    steps_this_call, t_log, img_log = 0, time.time(), 0
    local = slice(dist_info.rank * tc.batch_size // dist_info.world, (dist_info.rank + 1) * tc.batch_size // dist_info.world)
    model.train()
    guard = FiniteGuard()
    in_memory = getattr(dataset, "images", None) is not None
    loader = None
    if not in_memory:  # lazy dataset: decode in DataLoader workers, this rank's share only
        stop = total_steps if stop_after_steps is None else min(total_steps, step + stop_after_steps)
        loader = iter(torch.utils.data.DataLoader(
            dataset, batch_sampler=StepBatches(stream, step, stop, local), num_workers=tc.num_workers,
            pin_memory=device.type == "cuda"))
    while step < total_steps:
        if stop_after_steps is not None and steps_this_call >= stop_after_steps:
            break
        if in_memory:
            batch = {k: v[local] for k, v in fetch(dataset, stream.batch_at(step)).items()}
        else:
            batch = next(loader)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        # t, noise, masked-image patterns and flips: drawn for the global batch from (seed, step)
        # and sliced, so DDP ranks together draw what one process would (mtdiff.batches).
        batch.update(step_randomness(model, diffusion, step, seed=tc.seed, global_batch=tc.batch_size,
                                     image_shape=tuple(batch["image"].shape[1:]), local=local, device=device,
                                     hflip=cfg.data.hflip))
        batch = apply_hflip(batch)
        g = step_generator(tc.seed, step)  # for any draw a model makes itself (none of ours)
        if channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
        with amp:
            loss, terms = _loss(net, model, batch, diffusion, g)
        guard.update(step, loss, terms)  # on the device: no host sync per step
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if tc.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        step += 1
        steps_this_call += 1
        ema_update(ema, model, ema_beta(tc.batch_size, step * tc.batch_size, tc.ema_halflife_kimg, tc.ema_rampup_ratio))
        bar.update(1)
        img_log += tc.batch_size
        if dist_info.main and (step % tc.log_every_steps == 0 or step == total_steps):
            guard.check(bar, run_dir)
            now = time.time()
            rec = {"step": step, "kimg": step * tc.batch_size / 1000, "loss": float(loss.detach()),
                   **{f"loss_{k}": float(v.detach()) for k, v in terms.items()}, "lr": sched.get_last_lr()[0],
                   "images_per_s": img_log / max(now - t_log, 1e-9), "wall_s": wall_before + now - t_start,
                   "peak_memory_mb": _peak_memory_mb(device)}
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", img_s=f"{rec['images_per_s']:.0f}")
            t_log, img_log = now, 0
        if step % ckpt_every == 0 or step in snapshot_steps or step == total_steps:
            guard.check(bar, run_dir)  # never checkpoint weights that saw a non-finite loss
            save_checkpoint(step)
    guard.check(bar, run_dir)
    bar.close()
    wall = wall_before + time.time() - t_start
    summary = {"model": cfg.model, "dataset": info.name, "seed": tc.seed, "parameters": count_parameters(model),
               "steps": step, "images_seen": step * tc.batch_size, "batch_size": tc.batch_size,
               "wall_s": wall, "peak_memory_mb": _peak_memory_mb(device), "device": str(device), "precision": precision,
               "world_size": dist_info.world, "done": step >= total_steps}
    if dist_info.main and step >= total_steps:
        final = list_checkpoints(run_dir)[-1][1]
        atomic_write_bytes_copy(final, run_dir / "final.pt")
        atomic_write_json(run_dir / "summary.json", summary)
        log(f"wrote {run_dir / 'final.pt'} (step {step}, {step * tc.batch_size} images, {wall:.0f} s) "
            f"and {run_dir / 'summary.json'}")
    return summary


class FiniteGuard:
    """Remembers, on the device, the first step whose loss (or a loss term) was not finite.

    Checking ``torch.isfinite(loss)`` on the host every step forces a GPU sync per step; the
    guard instead accumulates with device ops and is checked (one sync) at log and checkpoint
    steps, before anything is written, so no checkpoint ever holds weights updated by a
    non-finite loss and the error still names the first bad step and term.
    """

    def __init__(self):
        self.names, self.first_step, self.values = None, None, None

    def update(self, step: int, loss: torch.Tensor, terms: dict) -> None:
        vals = torch.stack([loss.detach().float().reshape(()), *(v.detach().float().reshape(()) for v in terms.values())])
        if self.names is None:
            self.names = ["total", *terms]
            self.first_step = torch.full((), -1, dtype=torch.long, device=vals.device)
            self.values = torch.zeros_like(vals)
        bad = ~torch.isfinite(vals).all()
        new = bad & (self.first_step < 0)
        self.first_step = torch.where(new, torch.full_like(self.first_step, step), self.first_step)
        self.values = torch.where(new, vals, self.values)

    def check(self, bar, run_dir: Path) -> None:
        if self.first_step is None or int(self.first_step) < 0:
            return
        bar.close()
        vals = self.values.tolist()
        # name a term (not the total) when one is bad: that is where to look
        i = next((j for j in range(1, len(vals)) if not math.isfinite(vals[j])), 0)
        raise TrainingDiverged(
            f"loss term {self.names[i]} is {vals[i]} at step {int(self.first_step)}; the run stops here, the last "
            f"good checkpoint is kept in {run_dir / 'checkpoints'} (try a lower train.lr or train.precision=fp32)"
        )


def gather_rng(dist_info: DistInfo, device: torch.device) -> list[dict]:
    """Every rank's RNG state (CPU, and CUDA where used), gathered for the checkpoint: a
    resumed run continues each rank's dropout stream exactly."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if dist_info.world == 1:
        return [state]
    states = [None] * dist_info.world
    dist.all_gather_object(states, state)
    return states


def restore_rng(state: dict, dist_info: DistInfo, device: torch.device, log=print) -> None:
    per_rank = state.get("rng_per_rank") or [state["rng"]]
    if len(per_rank) == dist_info.world:
        mine = per_rank[dist_info.rank]
    elif dist_info.main:
        mine = per_rank[0]
    else:  # resumed on another process count: rank 0 continues exactly, the others reseed
        log(f"note: rank {dist_info.rank}: checkpoint has {len(per_rank)} rank RNG state(s); dropout streams "
            f"of ranks > 0 restart (only matters with net.dropout > 0)")
        return
    torch.set_rng_state(mine["torch"])
    if device.type == "cuda" and "cuda" in mine:
        torch.cuda.set_rng_state(mine["cuda"], device)


def _loss(net, model, batch, diffusion, generator):
    """The model's loss, with the forward pass through ``net`` (the DDP wrapper, if any) so
    gradients are all-reduced."""
    if model.kind == "diffusion":
        return model.loss(batch, diffusion, generator, forward=net)
    return model.loss(batch, forward=net)


def atomic_write_bytes_copy(src: Path, dst: Path) -> None:
    import shutil

    with _atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def load_run(run_dir_or_ckpt: str | Path, *, use_ema: bool = True, device="cpu"):
    """(model, diffusion, cfg, info, checkpoint) from a run folder (final.pt, else the newest
    checkpoint) or a checkpoint file; the model holds the EMA weights unless use_ema=False."""
    from mtdiff.data import DatasetInfo

    p = Path(run_dir_or_ckpt)
    if p.is_dir():
        state = read_checkpoint(p / "final.pt") if (p / "final.pt").exists() else latest_checkpoint(p)
        if state is None:
            raise CheckpointError(f"{str(p)!r} holds no checkpoint; train it first: mtdiff train --out {p}")
    else:
        state = read_checkpoint(p)
    cfg = config_from_dict(state["config"])
    info = DatasetInfo.from_dict(state["info"])
    model = build_model(cfg, info)
    model.load_state_dict(state["ema" if use_ema else "model"])
    model.to(device).eval()
    diffusion = build_diffusion(cfg) if model.kind == "diffusion" else None
    return model, diffusion, cfg, info, state
