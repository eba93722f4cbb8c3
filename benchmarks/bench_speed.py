"""Speed of the default benchmark's pieces, in one run, printed as one JSON object.

Run from the repository root (about 1-2 minutes on 2 idle CPU cores)::

    .venv/bin/python benchmarks/bench_speed.py                 # the default run config, model mt_label
    .venv/bin/python benchmarks/bench_speed.py --model ddpm --json speed.json

It measures, on the run config the default workflow trains (config/runs/digits.yaml plus the
``overrides`` of config/config.yaml, so it follows the width and batch chosen there) and in the
precision that config pins (``train.precision``; ``--precision`` to compare another):

- ``bare_step``: one training step of the model as the trainer takes it (the model's loss,
  docs/method.md eq. 9, forward + backward + gradient clipping + fused AdamW) on real batches,
  no logging, EMA or checkpoints: the ceiling of the trainer;
- ``trainer``: ``mtdiff train`` itself (``mtdiff.train.train``, the loop the workflow runs:
  EMA, logging, checkpoints), images seen / its wall time after set-up;
- ``unet`` and ``diffusers_unet2d``: the eps-MSE step of mtdiff's U-Net alone and of diffusers'
  ``UNet2DModel`` built to the same size by benchmarks/bench_backbone.py (``build_diffusers``,
  same widths, levels, attention and head width: parameter counts within 128). diffusers is an
  optional dependency: without it the entry says "not installed" and has no number;
- ``sampling``: ``mtdiff sample``'s generator (``mtdiff.generate.generate``, DDIM at the config's
  ``sample.steps``, batches of ``sample.batch_size``), images per second over the whole set,
  loading the checkpoint and writing samples.npz included (after an untimed warm-up call).

Every figure is images per second from the median of timed steps (wall clock) after warm-up,
one torch thread by default (the workflow's ``threads_per_job``). The machine block names the
CPU, its vector extensions (AVX2 / AVX-512 / AVX-512 BF16 / AMX) and torch's CPU capability.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_backbone import build_diffusers  # noqa: E402  (the one builder of the equal-size diffusers net)

from mtdiff.batches import BatchStream, fetch, step_randomness  # noqa: E402
from mtdiff.config import flatten_dotted, load_yaml  # noqa: E402
from mtdiff.models import build_diffusion, build_model, count_parameters, load_run_config  # noqa: E402
from mtdiff.nets import UNet  # noqa: E402
from mtdiff.utils import autocast, resolve_precision  # noqa: E402

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> dict:
    """The CPU (model name and the vector extensions that decide fp32/bf16 kernel speed)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:  # not Linux: the model name only
        pass
    return {"cpu": name, "cpus": os.cpu_count(), "cpu_flags": {f: f in flags for f in CPU_FLAGS},
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2)}


def default_overrides(workflow_config: Path, dataset: str) -> dict:
    """The dataset's `overrides` in the workflow config (config/config.yaml): the default run."""
    d = load_yaml(workflow_config)["datasets"].get(dataset)
    if d is None:
        raise SystemExit(f"--workflow-config={workflow_config}: no dataset {dataset!r}; accepted: its datasets")
    return dict(d.get("overrides") or {})


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set={item!r} is not KEY=VALUE; accepted: e.g. --set net.model_channels=16")
        import yaml

        out[key] = yaml.safe_load(value)
    return out


def timed(step, warmup: int, iters: int) -> tuple[float, float]:
    """Median wall and median process-CPU seconds of ``step()`` over ``iters`` calls after
    ``warmup`` calls (CPU time is less sensitive to other work on a shared machine)."""
    for _ in range(warmup):
        step()
    walls, cpus = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def rates(n: int, wall: float, cpu: float) -> dict:
    return {"images_per_s": n / wall, "ms_per_step": wall * 1e3, "cpu_ms_per_step": cpu * 1e3,
            "images_per_cpu_s": n / cpu if cpu > 0 else None}


def bare_step(cfg, warmup: int, iters: int) -> dict:
    """The trainer's step without its bookkeeping (mtdiff.train.train's loop body)."""
    from mtdiff.train import load_split

    dataset = load_split(cfg, "train")
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, dataset.info).train()
    diffusion = build_diffusion(cfg) if model.kind == "diffusion" else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, fused=True)
    stream, device, n = BatchStream(len(dataset), cfg.train.batch_size, cfg.train.seed), torch.device("cpu"), cfg.train.batch_size
    amp = autocast(device, cfg.train.precision)
    state = {"step": 0}

    def step():
        i = state["step"]
        batch = fetch(dataset, stream.batch_at(i))
        batch.update(step_randomness(model, diffusion, i, seed=cfg.train.seed, global_batch=n,
                                     image_shape=tuple(batch["image"].shape[1:]), local=slice(0, n), device=device,
                                     hflip=cfg.data.hflip))
        with amp:
            loss, _ = model.loss(batch, diffusion) if diffusion is not None else model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        state["step"] += 1

    return {**rates(n, *timed(step, warmup, iters)), "parameters": count_parameters(model), "channels": dataset.info.channels}


def trainer(cfg, run_dir: Path, steps: int) -> dict:
    """`mtdiff train` for ``steps`` steps: images seen over its wall time after set-up."""
    from mtdiff.train import train

    kimg = steps * cfg.train.batch_size / 1000
    cfg = load_run_config(None, {**flatten_dotted(cfg.to_dict()), "train.total_kimg": kimg, "train.snapshot_kimg": [],
                                 "train.checkpoint_every_kimg": kimg, "train.log_every_steps": max(1, steps // 4)})
    c0 = time.process_time()
    summary = train(cfg, run_dir, progress="none", log=lambda *_: None)
    cpu = time.process_time() - c0  # includes the set-up (data, model): a little pessimistic
    return {"images_per_s": summary["images_seen"] / summary["wall_s"], "steps": summary["steps"],
            "ms_per_step": summary["wall_s"] / summary["steps"] * 1e3, "cpu_ms_per_step_with_setup": cpu / summary["steps"] * 1e3}


def backbones(cfg, channels: int, warmup: int, iters: int) -> dict:
    """eps-MSE steps of mtdiff's UNet and of diffusers' UNet2DModel at the same size."""
    n, c, size = cfg.train.batch_size, channels, cfg.data.image_size
    size_args = SimpleNamespace(size=size, channels=c, model_channels=cfg.net.model_channels,
                                channel_mult=tuple(cfg.net.channel_mult), num_res_blocks=cfg.net.num_res_blocks,
                                attention_resolutions=tuple(cfg.net.attention_resolutions),
                                head_channels=cfg.net.head_channels)
    nets = {"unet": lambda: UNet(c, size, c, cfg.net.model_channels, tuple(cfg.net.channel_mult),
                                 cfg.net.num_res_blocks, tuple(cfg.net.attention_resolutions), cfg.net.head_channels)}
    try:
        from diffusers import UNet2DModel
    except ImportError:
        UNet2DModel = None
    if UNet2DModel is not None:
        nets["diffusers_unet2d"] = lambda: build_diffusers(UNet2DModel, size_args)
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(n, c, size, size, generator=g) * 2 - 1
    amp = autocast(torch.device("cpu"), cfg.train.precision)
    out = {}
    for name, make in nets.items():
        torch.manual_seed(0)
        net = make().train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
        call = (lambda m, x, t: m(x, t).out) if name == "unet" else (lambda m, x, t: m(x, t).sample)

        def step(net=net, opt=opt, call=call):
            t = torch.randint(0, 1000, (n,))
            eps = torch.randn_like(x0)
            ab = alpha_bar[t].view(-1, 1, 1, 1)
            with amp:
                loss = F.mse_loss(call(net, ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t).float(), eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[name] = {**rates(n, *timed(step, warmup, iters)), "parameters": sum(p.numel() for p in net.parameters())}
    if UNet2DModel is None:
        out["diffusers_unet2d"] = "not installed"  # optional dependency: no number rather than a made-up one
    return out


def sampling(run_dir: Path, num_samples: int, batch_size: int | None) -> dict:
    """DDIM at the run config's sample.steps over ``num_samples`` images, after a warm-up batch."""
    from mtdiff.generate import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(run_dir, Path(tmp) / "warmup", num_samples=min(8, num_samples), write_pngs=False,
                 progress="none", log=lambda *_: None)
        t0, c0 = time.perf_counter(), time.process_time()
        meta = generate(run_dir, Path(tmp) / "s", num_samples=num_samples, batch_size=batch_size, write_pngs=False,
                        progress="none", log=lambda *_: None)
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"images_per_s": num_samples / sec, "images_per_cpu_s": num_samples / cpu if cpu > 0 else None,
            "num_samples": num_samples, "sampler": meta.get("sampler"), "nfe": meta.get("nfe")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-config", default=str(ROOT / "config/runs/digits.yaml"), help="mtdiff run config YAML")
    p.add_argument("--workflow-config", default=str(ROOT / "config/config.yaml"),
                   help="workflow config whose dataset `overrides` apply on top (the default run's)")
    p.add_argument("--model", default="mt_label", help="a model of mtdiff.models.MODELS (default: mt_label)")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"],
                   help="default: the run config's train.precision")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra run-config values (e.g. for a tiny smoke run)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed series")
    p.add_argument("--iters", type=int, default=20, help="timed steps per step benchmark (median)")
    p.add_argument("--trainer-steps", type=int, default=150, help="steps of the `mtdiff train` run")
    p.add_argument("--num-samples", type=int, default=500, help="images generated for the sampling figure")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, the workflow's threads_per_job)")
    p.add_argument("--json", help="also write the JSON object to this file")
    a = p.parse_args(argv)
    for opt, value in (("--warmup", a.warmup), ("--iters", a.iters), ("--trainer-steps", a.trainer_steps),
                       ("--num-samples", a.num_samples), ("--threads", a.threads)):
        if value < (0 if opt == "--warmup" else 1):
            p.error(f"{opt}={value}: accepted: an integer >= {0 if opt == '--warmup' else 1}")
    torch.set_num_threads(a.threads)
    overrides = {**default_overrides(Path(a.workflow_config), "digits"), **parse_sets(a.sets), "model": a.model,
                 "train.threads": a.threads}
    if a.precision:
        overrides["train.precision"] = a.precision
    cfg = load_run_config(a.run_config, overrides)
    if cfg.train.device not in ("auto", "cpu"):
        p.error(f"--run-config train.device={cfg.train.device}: this script measures the CPU; accepted: auto, cpu")
    result = {
        "machine": machine(),
        "config": {"run_config": a.run_config, "model": cfg.model, "precision": resolve_precision(cfg.train.precision, torch.device("cpu")),
                   "image_size": cfg.data.image_size, "batch_size": cfg.train.batch_size,
                   "model_channels": cfg.net.model_channels, "channel_mult": list(cfg.net.channel_mult),
                   "head_channels": cfg.net.head_channels, "sampler": cfg.sample.sampler, "sample_steps": cfg.sample.steps,
                   "overrides": {k: v for k, v in overrides.items() if k != "model"}},
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else "main(" + repr(argv) + ")",
    }
    t_start = time.time()
    result["bare_step"] = bare_step(cfg, a.warmup, a.iters)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        result["trainer"] = trainer(cfg, run_dir, a.trainer_steps)
        result.update(backbones(cfg, result["bare_step"].pop("channels"), a.warmup, a.iters))
        result["sampling"] = sampling(run_dir, a.num_samples, None)
    result["wall_s"] = round(time.time() - t_start, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
