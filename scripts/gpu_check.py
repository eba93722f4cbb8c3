#!/usr/bin/env python
"""Self-contained GPU check of mtdiff: train, sample and score a CIFAR-sized model on one GPU
in a few minutes, and print what the hardware achieved.

    .venv/bin/python scripts/gpu_check.py                        # one GPU: 44 s on an H200 (2026-12-04)
    .venv/bin/python scripts/gpu_check.py --channels-last --json gpu_check.json
    .venv/bin/python scripts/gpu_check.py --compile --json gpu_check_compile.json   # train.compile
    .venv/bin/python scripts/gpu_check.py --device cpu --steps 3 --quick   # smoke test, seconds

What it does, with nothing downloaded (the generated ``shapes`` data at 3x32x32):

1. trains the ``ddpm`` model with an ADM-style U-Net of CIFAR-10 size (128 channels, mult
   (1,2,2,2), 2 res blocks, attention at 16x16: 38.3M parameters) for ``--steps`` steps through
   :func:`mtdiff.train.train` -- the loop the workflow runs, with its EMA, checkpoint, bf16
   autocast (precision auto = bf16 on GPUs that have it), TF32, channels_last and compile options --
   and checks that the loss falls (mean of the last quarter of the log records below 0.7x that
   of the first quarter; skipped with fewer than 4 records);
2. times bare training steps (forward + backward + fused AdamW on one batch, no data loading,
   logging or EMA) and counts their FLOPs with :class:`torch.utils.flop_counter.FlopCounterMode`
   (matmuls, convolutions and attention of the forward *and* backward pass; element-wise ops and
   GroupNorm are not counted), giving achieved TFLOP/s against the GPU's dense bf16 peak;
3. samples ``--num-samples`` images with DDIM (EMA weights) and checks they are finite;
4. trains the domain feature extractor briefly and computes FID/KID of the samples against the
   test split (a plumbing check: the numbers are not comparable with any published FID).

Prints a table and exits with status 1 if a check failed (0 otherwise). ``--quick`` shrinks
everything (data, sample count, extractor steps) for a CPU smoke test (tests/test_scaleout.py).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets; the first
#: name fragment contained in torch.cuda.get_device_name() wins. Anything else: "n/a".
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),  # SXM5
    ("H200", 989.0),  # SXM
    ("A100", 312.0),
)


def bf16_peak(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda" or precision != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB; whole process


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--precision", default="auto", help="auto (bf16 where fast) | bf16 | fp32 | fp16")
    p.add_argument("--steps", type=int, default=300, help="training steps through mtdiff.train (default 300)")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 128; --quick 16)")
    p.add_argument("--channels", type=int, default=128, help="U-Net base width (default 128)")
    p.add_argument("--channel-mult", type=ints, default=None, help="default 1,2,2,2 (--quick 1,2)")
    p.add_argument("--num-res-blocks", type=int, default=None, help="default 2 (--quick 1)")
    p.add_argument("--num-samples", type=int, default=None, help="samples for the FID (default 1000; --quick 32)")
    p.add_argument("--sample-steps", type=int, default=None, help="DDIM steps (default 50; --quick 4)")
    p.add_argument("--sample-batch", type=int, default=500)
    p.add_argument("--extractor-steps", type=int, default=None, help="domain extractor steps (default 150; --quick 3)")
    p.add_argument("--bench-steps", type=int, default=None, help="timed bare steps (default 20; --quick 2)")
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="train.tf32=false")
    p.add_argument("--channels-last", action="store_true", help="train.channels_last=true (CUDA only)")
    p.add_argument("--compile", action="store_true",
                   help="train.compile=true: torch.compile the forward, in the trainer and the bare step")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny sizes everywhere: a smoke test, not a measurement")
    p.add_argument("--out", default=None, help="keep the run folder here (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args(argv)
    q = a.quick
    defaults = dict(batch=16 if q else 128, channel_mult=(1, 2) if q else (1, 2, 2, 2),
                    num_res_blocks=1 if q else 2, num_samples=32 if q else 1000, sample_steps=4 if q else 50,
                    extractor_steps=3 if q else 150, bench_steps=2 if q else 20)
    for key, value in defaults.items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    if a.steps < 1 or a.batch < 2 or a.num_samples < 2:
        p.error("--steps must be >= 1, --batch and --num-samples >= 2")
    return a


def build_config(a, device_name: str):
    from mtdiff.config import load_config

    size = 32
    levels = [size >> i for i in range(len(a.channel_mult))]
    attention = [16] if 16 in levels else [levels[-1]]
    head = 64 if a.channels % 64 == 0 else a.channels
    total_kimg = a.steps * a.batch / 1000
    num_train = max(a.batch * 2, 256 if a.quick else 5000)
    return load_config(None, {
        "model": "ddpm",
        "data": {"dataset": "shapes", "image_size": size, "num_train": num_train, "num_test": a.num_samples},
        "net": {"model_channels": a.channels, "channel_mult": list(a.channel_mult),
                "num_res_blocks": a.num_res_blocks, "attention_resolutions": attention, "head_channels": head},
        "train": {"total_kimg": total_kimg, "batch_size": a.batch, "lr": 2e-4,
                  "lr_warmup_kimg": min(2.0, total_kimg / 10), "ema_halflife_kimg": 2.0,
                  "checkpoint_every_kimg": total_kimg, "log_every_steps": max(1, a.steps // 30),
                  "device": device_name, "precision": a.precision, "tf32": a.tf32,
                  "channels_last": a.channels_last, "compile": a.compile, "threads": a.threads},
    })


def count_step_flops(model, diffusion, batch, amp) -> int:
    """FLOPs of one training step's forward and backward pass (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        with amp:
            loss, _ = model.loss(batch, diffusion)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def bare_steps(model, diffusion, batch, amp, device, n: int, forward=None) -> float:
    """Seconds per bare training step (forward + backward + fused AdamW), after 3 warm-up steps
    (which hold the compilation, if any). ``forward``: what runs the forward pass, as in the
    trainer (e.g. ``torch.compile(model)``); the model itself by default."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step():
        with amp:
            loss, _ = model.loss(batch, diffusion, forward=forward)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return (time.perf_counter() - t0) / n


def training_rate(records: list[dict], summary: dict) -> float:
    """Steady-state images/s of the train loop: between the first and the last log record (the
    first interval holds the warm-up); the whole run's rate when there are fewer than 2."""
    if len(records) >= 2 and records[-1]["wall_s"] > records[0]["wall_s"]:
        return (records[-1]["kimg"] - records[0]["kimg"]) * 1000 / (records[-1]["wall_s"] - records[0]["wall_s"])
    return summary["images_seen"] / max(summary["wall_s"], 1e-9)


def run(a) -> dict:
    from mtdiff.data import load_dataset
    from mtdiff.metrics import generation_metrics, train_domain_extractor
    from mtdiff.models import build_diffusion, build_model, count_parameters
    from mtdiff.samplers import sample
    from mtdiff.train import load_run, train
    from mtdiff.utils import autocast, resolve_device, resolve_precision

    t_start = time.perf_counter()
    device = resolve_device(a.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    precision = resolve_precision(a.precision, device)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = build_config(a, str(device))
    res: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__, "precision": precision, "tf32": device.type == "cuda" and a.tf32,
        "channels_last": device.type == "cuda" and a.channels_last, "compile": a.compile, "batch": a.batch,
        "steps": a.steps,
        "net": f"{a.channels} ch, mult {tuple(a.channel_mult)}, {a.num_res_blocks} res blocks",
        "memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process max RSS, so far",
    }
    keep = Path(a.out) if a.out else None
    with tempfile.TemporaryDirectory() as tmp:
        work = keep or Path(tmp)
        run_dir = work / "run"
        # 1. the workflow's training loop
        reset_peak(device)
        summary = train(cfg, run_dir, progress=False, log=lambda *_: None)
        sync(device)
        records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
        res.update(parameters=summary["parameters"], train_wall_s=summary["wall_s"],
                   train_images_per_s=training_rate(records, summary), train_peak_gib=peak_memory_gib(device),
                   loss_logged=len(records))
        k = max(1, len(records) // 4)  # mean of the first and of the last quarter of the log records
        res["loss_first"] = sum(r["loss"] for r in records[:k]) / k
        res["loss_last"] = sum(r["loss"] for r in records[-k:]) / k

        # 2. bare steps: FLOPs and achieved throughput
        train_split = load_dataset("shapes", "train", image_size=32, num_samples=cfg.data.num_train)
        info = train_split.info
        torch.manual_seed(0)
        model = build_model(cfg, info).to(device).train()
        if res["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        diffusion = build_diffusion(cfg)
        amp = autocast(device, precision)
        g = torch.Generator().manual_seed(0)
        fmt = torch.channels_last if res["channels_last"] else torch.contiguous_format
        batch = {"image": (torch.rand(a.batch, 3, 32, 32, generator=g) * 2 - 1).to(device).contiguous(memory_format=fmt),
                 "t": torch.randint(1, diffusion.num_steps + 1, (a.batch,), generator=g).to(device),
                 "noise": torch.randn(a.batch, 3, 32, 32, generator=g).to(device).contiguous(memory_format=fmt)}
        flops = count_step_flops(model, diffusion, batch, amp)
        sec = bare_steps(model, diffusion, batch, amp, device, a.bench_steps,
                         forward=torch.compile(model) if a.compile else None)
        del model
        res.update(flops_per_image=flops / a.batch, bare_step_ms=sec * 1000, bare_images_per_s=a.batch / sec)
        res["bare_tflops"] = flops / sec / 1e12
        res["train_tflops"] = res["flops_per_image"] * res["train_images_per_s"] / 1e12
        res["peak_bf16_tflops"] = bf16_peak(device, precision)

        # 3. sampling (EMA weights, DDIM), finite check
        ema_model, diffusion, _, _, _ = load_run(run_dir, device=device)
        gen = torch.Generator().manual_seed(1)
        reset_peak(device)
        chunks = []
        sync(device)
        t0 = time.perf_counter()
        for start in range(0, a.num_samples, a.sample_batch):
            n = min(a.sample_batch, a.num_samples - start)
            out = sample(ema_model, diffusion, n, sampler="ddim", steps=a.sample_steps, generator=gen, device=device,
                         autocast=autocast(device, precision))
            chunks.append(out["image"].float().cpu())
        sync(device)
        sample_s = time.perf_counter() - t0
        images = torch.cat(chunks)
        res.update(sample_steps=a.sample_steps, num_samples=a.num_samples, sample_images_per_s=a.num_samples / sample_s,
                   sample_peak_gib=peak_memory_gib(device), samples_finite=bool(torch.isfinite(images).all()))

        # 4. FID/KID with the domain extractor (trained briefly), against the test split
        test_split = load_dataset("shapes", "test", image_size=32, num_samples=a.num_samples)
        weights = work / "domain.pt"
        t0 = time.perf_counter()
        meta = train_domain_extractor(train_split.images, train_split.labels, num_classes=info.num_classes,
                                      out_path=weights, steps=a.extractor_steps, dataset="shapes", num_threads=None)
        n_ref = len(test_split)
        metrics = generation_metrics(images.clamp(-1, 1), test_split.images, extractor="domain", weights_path=weights,
                                     device="cuda" if device.type == "cuda" else "cpu",
                                     kid_subset_size=min(1000, a.num_samples, n_ref), num_threads=None)
        res.update(extractor_train_accuracy=meta["train_accuracy"], fid=metrics["fid"], kid=metrics["kid_mean"],
                   fid_reference=n_ref, fid_s=time.perf_counter() - t0)
    res["total_s"] = time.perf_counter() - t_start

    checks = {"samples are finite": res["samples_finite"], "FID is finite": math.isfinite(res["fid"])}
    if len(records) >= 4:  # too few logged steps (e.g. --steps 3) say nothing about the trend
        checks["training loss falls"] = res["loss_last"] < 0.7 * res["loss_first"]
    res["checks"] = checks
    res["ok"] = all(checks.values())
    return res


def fmt(value, spec: str = ".1f", unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:{spec}}{unit}"


def table(res: dict) -> str:
    peak = res["peak_bf16_tflops"]

    def share(tflops):
        return f" ({100 * tflops / peak:.0f}% of peak)" if peak else ""

    rows = [
        ("device", f"{res['device']}, torch {res['torch']}"),
        ("precision", f"{res['precision']}, tf32 {'on' if res['tf32'] else 'off'}, "
                      f"channels_last {'on' if res['channels_last'] else 'off'}, "
                      f"compile {'on' if res['compile'] else 'off'}"),
        ("model", f"ddpm U-Net {res['net']}, {res['parameters'] / 1e6:.1f}M params, 3x32x32"),
        ("FLOPs per training image", f"{res['flops_per_image'] / 1e9:.2f} GFLOP (fwd+bwd, FlopCounterMode)"),
        ("training images/s (mtdiff.train loop)", f"{res['train_images_per_s']:.0f} (batch {res['batch']}, "
                                                  f"{res['steps']} steps, {res['train_wall_s']:.1f} s)"),
        ("training images/s (bare step)", f"{res['bare_images_per_s']:.0f} ({res['bare_step_ms']:.1f} ms/step)"),
        ("achieved TFLOP/s (train loop)", f"{res['train_tflops']:.2f}{share(res['train_tflops'])}"),
        ("achieved TFLOP/s (bare step)", f"{res['bare_tflops']:.2f}{share(res['bare_tflops'])}"),
        ("bf16 dense peak TFLOP/s", fmt(peak, ".0f")),
        ("sampling images/s", f"{res['sample_images_per_s']:.1f} (DDIM {res['sample_steps']} steps, "
                              f"{res['num_samples']} images)"),
        ("peak memory, training", fmt(res["train_peak_gib"], ".2f", f" GiB ({res['memory_kind']})")),
        ("peak memory, sampling", fmt(res["sample_peak_gib"], ".2f", f" GiB ({res['memory_kind']})")),
        ("training loss, first -> last quarter", f"{res['loss_first']:.4f} -> {res['loss_last']:.4f} "
                                                 f"(means over {res['loss_logged']} log records)"),
        ("FID / KID (domain extractor)", f"{res['fid']:.2f} / {res['kid']:.4f} ({res['num_samples']} samples vs "
                                         f"{res['fid_reference']} test images; plumbing check only)"),
        ("total wall time", f"{res['total_s']:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    for name, ok in res["checks"].items():
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}")
    if "training loss falls" not in res["checks"]:
        lines.append("skip  training loss falls (fewer than 4 logged steps)")
    return "\n".join(lines)


def main(argv=None) -> int:
    from mtdiff.errors import MtdiffError

    a = parse_args(argv)
    try:
        res = run(a)
    except MtdiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
