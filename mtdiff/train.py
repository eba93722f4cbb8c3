"""One training loop for every registered model, with EMA, mixed precision, exact resume and
DistributedDataParallel.

    mtdiff train --config config/runs/example.yaml --out results/digits/train/mt_label/seed0
    torchrun --nproc_per_node=2 -m mtdiff.cli train --config ... --out ...   # DDP (gloo on CPU)

A run folder holds ``config.yaml`` (the resolved config), ``run.json`` (versions, parameters,
device), ``train_log.jsonl`` (one record per ``log_every_steps``), ``checkpoints/`` (rolling
``ckpt-<step>.pt`` plus kept snapshots) and, when done, ``final.pt`` and ``summary.json``.

Resume is automatic: rerunning the same command continues from the newest usable checkpoint
(mtdiff.checkpoints: one whose checksum fails, of another config or architecture, or past the
budget is reported by name and skipped). Temp files of a killed write are removed, and log
records past the resumed step dropped, so the log holds each step once. A finished run folder
is reused only by the same config (its final.pt and summary.json describe that config). Everything
random is a function of the seed and the step, or lives in the checkpoint, so an interrupted and
resumed run ends with the same weights as an uninterrupted one (CPU).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

import mtdiff
from mtdiff.batches import (  # noqa: F401 (BatchStream, fetch: re-exported for callers of mtdiff.train)
    BatchStream, StepBatches, apply_hflip, fetch, step_generator, step_randomness,
)
from mtdiff.checkpoints import (  # noqa: F401  (load_run, read_checkpoint: re-exported for older imports)
    check_state_fits, clean_temp_files, copy_checkpoint, diff_keys, latest_checkpoint, list_checkpoints, load_run,
    read_checkpoint, read_run_config, write_checkpoint,
)
from mtdiff.config import EXECUTION_KEYS, RunConfig, config_from_dict, merge
from mtdiff.errors import CheckpointError, ConfigError, MtdiffError
from mtdiff.models import build_diffusion, build_model, check_config, count_parameters
from mtdiff.progress import Progress
from mtdiff.utils import atomic_write_json, atomic_write_text, autocast, check_gpu_request, resolve_device, resolve_precision

# Keys whose change does not alter the trained weights up to the current step: a run folder may
# be continued with different values of these (e.g. a larger budget), never of anything else.
# train.gpus is parallelism only (same global batch, data, noise and math; results agree to float
# rounding, as between DDP and one process), so a run may resume on another GPU count.
# train.tf32 is not: like train.precision it changes the arithmetic of every step (10-bit mantissa
# matmuls/convs), so a run keeps the value it started with. Nor is train.channels_last: the saved
# optimizer state keeps the parameters' memory layout, and fused AdamW refuses a mismatch.
# train.compile is resumable: compiled kernels compute the same math to float rounding.
RESUMABLE_KEYS = (
    *EXECUTION_KEYS, "train.total_kimg", "train.checkpoint_every_kimg", "train.keep_last", "train.snapshot_kimg",
    "train.log_every_steps", "sample", "inference", "eval",
)


class TrainingDiverged(MtdiffError):
    """A loss term became NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# Data


def load_split(cfg: RunConfig, split: str, *, in_memory: bool = False, max_items: int | None = None):
    """The dataset split named by ``cfg.data`` (see mtdiff.data.load_dataset).

    ``in_memory``: return an ArrayDataset (``.images``, ``.labels``, ``.masks`` tensors) even
    for the lazy, torchvision-backed datasets, which are then decoded once, whole: what
    evaluation needs (reference images for FID, labels and masks to score predictions).
    ``max_items``: keep at most that many items, the first of the split's class-stratified
    order (mtdiff.data), so only those are ever decoded: a bounded, class-balanced sample of
    a large split (ImageNet's 1.28M training images) for the anchors.
    """
    from mtdiff.data import ArrayDataset, load_dataset

    d = cfg.data
    n = d.num_train if split == "train" else d.num_test
    if max_items is not None:
        n = max_items if n is None else min(n, max_items)
    dataset = load_dataset(
        d.dataset, split, image_size=d.image_size, root=d.root, download=d.download, num_samples=n, **d.options,
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
# Run folder: may this config continue it, and from which checkpoint


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "final.pt").exists() or (run_dir / "summary.json").exists()


# What a restart sets aside (renamed to <name>.replaced, the previous such copy overwritten).
RUN_STATE = ("checkpoints", "train_log.jsonl", "final.pt", "final.pt.sha256", "summary.json")


def check_run_dir(run_dir: Path, cfg: RunConfig, *, restart_on_change: bool = False, log=print) -> None:
    """Refuse to continue a run folder that holds a run of a different configuration: any
    difference once the run is finished (its final.pt and summary.json describe the saved
    config, budget included), the non-resumable keys while it is not. ``restart_on_change``:
    start over instead, setting the old run's files aside as ``*.replaced`` (the workflow's
    train rule, which Snakemake reruns exactly when the config it trains on changed)."""
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    old = read_run_config(saved)
    diff = diff_keys(old, cfg.to_dict())
    finished = is_finished(run_dir)
    if restart_on_change and (diff if finished else [k for k in diff if not k.startswith(RESUMABLE_KEYS)]):
        log(f"warning: {run_dir} holds a run of another config (differs at {', '.join(diff)}); starting over, "
            f"its files set aside as *.replaced")
        for name in RUN_STATE:
            path = run_dir / name
            if path.exists():
                target = run_dir / f"{name}.replaced"
                if target.is_dir():
                    shutil.rmtree(target)
                path.replace(target)
        return
    if finished:
        if diff:
            raise ConfigError(
                f"{str(run_dir)!r} holds a finished run of a different config (differs at {', '.join(diff)}); "
                f"its final.pt and summary.json are that run's: choose another --out, or delete the folder "
                f"to start over"
            )
        return
    diff = [k for k in diff if not k.startswith(RESUMABLE_KEYS)]
    if diff:
        raise ConfigError(
            f"{str(run_dir)!r} holds a run of a different config (differs at {', '.join(diff)}); "
            f"choose another --out, or delete that folder to start over"
        )


def _resumable(cfg: RunConfig, model: torch.nn.Module, total_steps: int):
    """``accept`` for latest_checkpoint: a checkpoint of this config's architecture and
    non-resumable settings, at most at this budget's last step."""
    def accept(state: dict, path: Path) -> None:
        try:
            old = diff_keys(read_config_dict(state["config"]), cfg.to_dict())
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} holds an invalid config ({exc})") from None
        other = [k for k in old if not k.startswith(RESUMABLE_KEYS)]
        if other:
            raise CheckpointError(f"checkpoint {str(path)!r} is of another config (differs at {', '.join(other)})")
        if state["step"] > total_steps:
            raise CheckpointError(f"checkpoint {str(path)!r} is at step {state['step']}, past this budget's "
                                  f"{total_steps} steps (train.total_kimg)")
        check_state_fits(model, state["model"], path)
    return accept


def read_config_dict(values: dict) -> dict:
    """A saved config (from a checkpoint) resolved against today's defaults and checked."""
    return config_from_dict(merge(RunConfig().to_dict(), values)).to_dict()


def truncate_log(log_path: Path, step: int, log=print) -> None:
    """Keep the records of train_log.jsonl up to ``step`` (the resumed checkpoint's): those
    written after it are repeated by the resumed run; a line cut by a kill is dropped."""
    if not log_path.exists():
        return
    kept, dropped = [], 0
    for line in log_path.read_text().splitlines():
        try:
            rec = json.loads(line)
            ok = isinstance(rec, dict) and rec.get("step", 0) <= step
        except json.JSONDecodeError:
            ok = False
        if ok:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_text(log_path, "".join(f"{line}\n" for line in kept))
        log(f"note: dropped {dropped} record(s) of {log_path} after step {step} (the resumed run writes them again)")


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


def train(cfg: RunConfig, run_dir: str | Path, *, progress: str | bool = "auto", stop_after_steps: int | None = None,
          restart_on_change: bool = False, log=print) -> dict:
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
    check_config(cfg)
    if dist_info.main or not restart_on_change:
        check_run_dir(run_dir, cfg, restart_on_change=restart_on_change, log=log)
    if dist_info.world > 1:
        dist.barrier()  # a restart's renames (main rank) happen before any rank reads checkpoints
    if dist_info.main:
        clean_temp_files(run_dir, log)

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
    state = latest_checkpoint(run_dir, log, accept=_resumable(cfg, model, total_steps))
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
    if tc.compile:  # the forward only; `model` keeps the uncompiled module, so checkpoints are unchanged
        net = torch.compile(net)

    if dist_info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        truncate_log(run_dir / "train_log.jsonl", step, log)
        # checkpoints past the resumed one (refused above: damaged, past a shorter budget, or of
        # another config) would outlive the new ones in the keep_last rotation and mislead
        # curves: set aside as *.rejected (kept for inspection, never read)
        for s_later, p_later in list_checkpoints(run_dir):
            if s_later > step:
                log(f"warning: set aside {p_later} as {p_later.name}.rejected (resumed at step {step})")
                p_later.replace(p_later.with_name(p_later.name + ".rejected"))
        atomic_write_json(run_dir / "run.json", {
            "model": cfg.model, "dataset": info.name, "parameters": count_parameters(model),
            "device": str(device), "precision": precision, "world_size": dist_info.world, "mtdiff": mtdiff.__version__,
            "tf32": device.type == "cuda" and tc.tf32, "channels_last": channels_last, "compile": tc.compile,
            "gpus": tc.gpus,
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
        write_checkpoint(payload, run_dir / "checkpoints" / f"ckpt-{at_step:08d}.pt")
        kept = list_checkpoints(run_dir)
        rolling = [(s, p) for s, p in kept if s not in snapshot_steps]
        for s, p in rolling[: max(0, len(rolling) - tc.keep_last)]:
            p.unlink(missing_ok=True)
            Path(str(p) + ".sha256").unlink(missing_ok=True)

    t_start = time.time()
    log_path = run_dir / "train_log.jsonl"
    # progress: a bar on a terminal, periodic lines in a log (mtdiff.progress); main process only
    bar = Progress(total_steps, f"train {cfg.model} step", mode=progress if dist_info.main else "none", unit="step",
                   initial=step, unit_scale=tc.batch_size)
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
        bar.update(1)  # no loss here: reading it would sync with the GPU every step
        img_log += tc.batch_size
        if dist_info.main and (step % tc.log_every_steps == 0 or step == total_steps):
            guard.check(bar, run_dir)
            bar.update(0, loss=float(loss.detach()))
            now = time.time()
            rec = {"step": step, "kimg": step * tc.batch_size / 1000, "loss": float(loss.detach()),
                   **{f"loss_{k}": float(v.detach()) for k, v in terms.items()}, "lr": sched.get_last_lr()[0],
                   "images_per_s": img_log / max(now - t_log, 1e-9), "wall_s": wall_before + now - t_start,
                   "peak_memory_mb": _peak_memory_mb(device)}
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
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
        copy_checkpoint(final, run_dir / "final.pt")
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
