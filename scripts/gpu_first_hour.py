#!/usr/bin/env python
"""The first hour on a GPU machine: one script, 3.5 minutes on one H200, that measures what
the GPU configs' cost estimates assume, and prints a table and JSON.

    .venv/bin/python scripts/gpu_first_hour.py --json first_hour.json            # one or more GPUs
    .venv/bin/python scripts/gpu_first_hour.py --inception-weights weights/weights-inception-2015-12-05-6726825d.pth
    .venv/bin/python scripts/gpu_first_hour.py --smoke                           # CPU smoke test, < 1 min

Sections (each timed; a failing section is reported and the others still run):

env        GPU, driver, torch, CUDA, cuDNN, NCCL, bf16 support, CPU count.
train      for the networks of config/runs/{cifar10,imagenet64,pets}.yaml (on generated data of
           the same shape): bare-step images/s, FLOPs per image (FlopCounterMode), TFLOP/s and %
           of the dense bf16 peak; for cifar10 and imagenet64 also the real trainer loop
           (mtdiff.train.train) side by side; peak memory.
loader     DataLoader images/s reading a synthetic ImageFolder of PNGs (mtdiff's `imagefolder`
           dataset, 64x64) with 0, 4 and 8 workers.
fid        Inception-v3 feature images/s on the GPU; a FID computed with and without the
           reference features cached; the same FID on the CPU and its difference from the GPU
           one (TF32 off, as mtdiff's FID does), on 1,000 vs 1,000 images. Without
           --inception-weights the network has random weights: the timings and the GPU-vs-CPU
           agreement are real, the FID values mean nothing (labelled so).
sample     DDIM-50 images/s of the CIFAR-10 network, extrapolated to 50,000 images.
resume     20 steps straight vs 10 + 10 resumed: largest weight difference.
ddp        with 2+ GPUs: a 50-step `torchrun` run of mt_masked (skipped with fewer).
project    GPU-hours of each GPU workflow config from the measured images/s, beside the
           estimates written in its run config.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402  (bf16 peaks, FLOP counting, bare steps: shared with gpu_check.py)

NETS = {  # run config -> (image size, per-GPU batch for the measurement)
    "cifar10": ("config/runs/cifar10.yaml", 32, 128),
    "imagenet64": ("config/runs/imagenet64.yaml", 64, 64),
    "pets": ("config/runs/pets.yaml", 64, 64),
}
LOOP_NETS = ("cifar10", "imagenet64")  # the trainer loop is timed for these
WORKFLOW_CONFIGS = {"cifar10": "config/cifar10.yaml", "imagenet64": "config/imagenet64.yaml", "pets": "config/pets.yaml"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the script, measures nothing")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    p.add_argument("--inception-weights", default=None, help="torch-fidelity's Inception-v3 weights file")
    p.add_argument("--sections", default="env,train,loader,fid,sample,resume,ddp,project",
                   help="comma-separated subset of the sections")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args(argv)
    a.device = a.device or ("cpu" if a.smoke else "cuda")
    a.sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    return a


# ---------------------------------------------------------------------------------------------


def section_env(a, device) -> dict:
    res = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
           "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        res.update(gpu=props.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=props.total_memory / 2**30,
                   cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                   nccl=".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None)
        try:
            res["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.split("\n")[0].strip()
        except (OSError, subprocess.SubprocessError):
            res["driver"] = None
    else:
        res.update(gpu=None, gpu_count=0)
    return res


def net_config(name: str, a, device, *, steps: int, batch: int, run_dir_kimg: float | None = None):
    """The run config's network on generated `shapes` data of the same size (no dataset files)."""
    from mtdiff.config import load_config

    path, size, _ = NETS[name]
    sets = {"model": "ddpm", "data": {"dataset": "shapes", "image_size": size, "num_train": max(4 * batch, 64),
                                      "num_test": 64, "hflip": False},
            "train": {"device": str(device), "gpus": 1, "batch_size": batch, "num_workers": 0,
                      "total_kimg": steps * batch / 1000, "lr_warmup_kimg": batch / 1000,
                      "checkpoint_every_kimg": steps * batch / 1000, "log_every_steps": max(1, steps // 5),
                      "tf32": True}}
    if a.smoke:  # the network's shape, much narrower
        sets["net"] = {"model_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
                       "attention_resolutions": [8], "head_channels": 16, "label_head_hidden": 16}
        sets["data"]["image_size"] = 16
        sets["train"]["precision"] = "fp32"
    return load_config(ROOT / path, sets)


def section_train(a, device) -> dict:
    from mtdiff.data import load_dataset
    from mtdiff.models import build_diffusion, build_model, count_parameters
    from mtdiff.train import train
    from mtdiff.utils import autocast, resolve_precision

    out = {}
    for name, (_, _, batch) in NETS.items():
        batch = 4 if a.smoke else batch
        steps = 2 if a.smoke else 30
        cfg = net_config(name, a, device, steps=steps, batch=batch)
        precision = resolve_precision(cfg.train.precision, device)
        size = cfg.data.image_size
        info = load_dataset("shapes", "test", image_size=size, num_samples=8).info
        torch.manual_seed(0)
        model = build_model(cfg, info).to(device).train()
        diffusion = build_diffusion(cfg)
        amp = autocast(device, precision)
        g = torch.Generator().manual_seed(0)
        shape = (batch, info.channels, size, size)
        b = {"image": (torch.rand(shape, generator=g) * 2 - 1).to(device),
             "t": torch.randint(1, diffusion.num_steps + 1, (batch,), generator=g).to(device),
             "noise": torch.randn(shape, generator=g).to(device)}
        gpu_check.reset_peak(device)
        flops = gpu_check.count_step_flops(model, diffusion, b, amp)
        sec = gpu_check.bare_steps(model, diffusion, b, amp, device, 2 if a.smoke else 20)
        peak = gpu_check.bf16_peak(device, precision)
        r = {"parameters": count_parameters(model), "image": f"{info.channels}x{size}x{size}", "batch": batch,
             "precision": precision, "gflop_per_image": flops / batch / 1e9, "bare_images_per_s": batch / sec,
             "bare_tflops": flops / sec / 1e12, "bare_peak_gib": gpu_check.peak_memory_gib(device)}
        r["bare_pct_of_bf16_peak"] = 100 * r["bare_tflops"] / peak if peak else None
        del model
        if name in LOOP_NETS:
            with tempfile.TemporaryDirectory() as tmp:
                gpu_check.reset_peak(device)
                summary = train(cfg, Path(tmp) / "run", progress=False, log=lambda *_: None)
                records = [json.loads(x) for x in (Path(tmp) / "run" / "train_log.jsonl").read_text().splitlines()]
            r["loop_images_per_s"] = gpu_check.training_rate(records, summary)
            r["loop_tflops"] = r["loop_images_per_s"] * flops / batch / 1e12
            r["loop_pct_of_bf16_peak"] = 100 * r["loop_tflops"] / peak if peak else None
            r["loop_peak_gib"] = gpu_check.peak_memory_gib(device)
        out[name] = r
    return out


def section_loader(a, device) -> dict:
    import numpy as np
    from PIL import Image

    from mtdiff.data import load_dataset

    n = 64 if a.smoke else 4096
    workers = (0, 2) if a.smoke else (0, 4, 8)
    out = {"images": n, "size": "3x64x64 PNG"}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for split, count in (("train", n), ("test", 8)):
            for i in range(count):
                folder = Path(tmp) / split / f"class{i % 4}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
        dataset = load_dataset("imagefolder", "train", image_size=64, root=tmp)
        for w in workers:
            loader = torch.utils.data.DataLoader(dataset, batch_size=min(256, n), shuffle=True, num_workers=w,
                                                 pin_memory=device.type == "cuda", drop_last=True)
            t0, seen = time.perf_counter(), 0
            for batch in loader:
                seen += len(batch["image"])
            out[f"images_per_s_{w}_workers"] = seen / (time.perf_counter() - t0)
    return out


def random_inception_weights(path: Path) -> None:
    """A weights file of torch-fidelity's Inception-v3 architecture with seeded random weights:
    nothing is downloaded; timings and GPU/CPU agreement are meaningful, FID values are not."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    real_load = fe.FeatureExtractorInceptionV3.load_state_dict
    real_url = fe.load_state_dict_from_url
    try:
        fe.load_state_dict_from_url = lambda *args, **kwargs: {}
        fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, *args, **kwargs: None
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        for m in model.modules():  # variance-preserving init, so pool3 features are not ~0
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    finally:
        fe.load_state_dict_from_url = real_url
        fe.FeatureExtractorInceptionV3.load_state_dict = real_load
    torch.save(model.state_dict(), path)


def _fid(gen, ref, weights: str, cuda: bool, tf32: bool, cache_root: str | None = None) -> tuple[float, float]:
    import torch_fidelity

    from mtdiff.metrics.fidelity import UInt8ImageDataset

    prev = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        kwargs = dict(input1=UInt8ImageDataset(gen), input2=UInt8ImageDataset(ref), fid=True, cuda=cuda, verbose=False,
                      feature_extractor="inception-v3-compat", feature_extractor_weights_path=weights,
                      batch_size=200, save_cpu_ram=True)  # in-memory tensors: no DataLoader workers, as mtdiff does
        if cache_root:
            kwargs.update(cache=True, cache_root=cache_root, input2_cache_name="first_hour_reference")
        t0 = time.perf_counter()
        if cuda:
            torch.cuda.synchronize()
        fid = torch_fidelity.calculate_metrics(**kwargs)["frechet_inception_distance"]
        if cuda:
            torch.cuda.synchronize()
        return float(fid), time.perf_counter() - t0
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev


def section_fid(a, device) -> dict:
    from mtdiff.data import load_dataset
    from mtdiff.viz import to_uint8

    n = 4 if a.smoke else 1000
    gen = to_uint8(load_dataset("shapes", "train", image_size=32, num_samples=n).images)
    ref = to_uint8(load_dataset("shapes", "test", image_size=32, num_samples=n).images)
    cuda = device.type == "cuda"
    out = {"images": f"{n} vs {n}, 3x32x32 upsampled to 299", "weights": a.inception_weights or "random (timing only)"}
    with tempfile.TemporaryDirectory() as tmp:
        weights = a.inception_weights
        if weights is None:
            weights = str(Path(tmp) / "random_inception.pth")
            random_inception_weights(Path(weights))
        fid_nocache, s_nocache = _fid(gen, ref, weights, cuda, tf32=False)
        _fid(gen, ref, weights, cuda, tf32=False, cache_root=tmp)  # fills the reference cache
        fid_cached, s_cached = _fid(gen, ref, weights, cuda, tf32=False, cache_root=tmp)
        out.update(fid=fid_nocache, fid_s_no_cache=s_nocache, fid_s_cached_reference=s_cached,
                   feature_images_per_s=2 * n / s_nocache, cached_equals_uncached=abs(fid_cached - fid_nocache) < 1e-6)
        if cuda:
            fid_tf32, _ = _fid(gen, ref, weights, True, tf32=True)
            fid_cpu, s_cpu = _fid(gen, ref, weights, False, tf32=False)
            out.update(fid_cpu=fid_cpu, fid_cpu_s=s_cpu, fid_gpu_minus_cpu=fid_nocache - fid_cpu,
                       fid_gpu_tf32_minus_cpu=fid_tf32 - fid_cpu)
    return out


def section_sample(a, device) -> dict:
    from mtdiff.data import load_dataset
    from mtdiff.models import build_diffusion, build_model
    from mtdiff.samplers import sample
    from mtdiff.utils import autocast, resolve_precision

    cfg = net_config("cifar10", a, device, steps=1, batch=4)
    info = load_dataset("shapes", "test", image_size=cfg.data.image_size, num_samples=8).info
    model = build_model(cfg, info).to(device).eval()
    diffusion = build_diffusion(cfg)
    n, steps = (4, 3) if a.smoke else (500, 50)
    amp = autocast(device, resolve_precision(cfg.train.precision, device))
    sample(model, diffusion, min(n, 8), steps=2, device=device, autocast=amp)  # warm-up
    gpu_check.sync(device)
    t0 = time.perf_counter()
    out = sample(model, diffusion, n, steps=steps, device=device, autocast=amp, generator=torch.Generator().manual_seed(0))
    gpu_check.sync(device)
    rate = n / (time.perf_counter() - t0)
    return {"nfe": steps, "images": n, "images_per_s": rate, "hours_for_50k": 50_000 / rate / 3600,
            "finite": bool(torch.isfinite(out["image"]).all())}


def section_resume(a, device) -> dict:
    from mtdiff.train import train

    steps = 4 if a.smoke else 20
    cfg = net_config("cifar10", a, device, steps=steps, batch=4 if a.smoke else 32)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "straight", progress=False, log=lambda *_: None)
        train(cfg, Path(tmp) / "resumed", progress=False, log=lambda *_: None, stop_after_steps=steps // 2)
        train(cfg, Path(tmp) / "resumed", progress=False, log=lambda *_: None)
        a_ = torch.load(Path(tmp) / "straight" / "final.pt", weights_only=False)["model"]
        b_ = torch.load(Path(tmp) / "resumed" / "final.pt", weights_only=False)["model"]
    diff = max((a_[k].float() - b_[k].float()).abs().max().item() for k in a_)
    return {"steps": steps, "max_abs_weight_diff": diff, "bit_exact": diff == 0.0}


def section_ddp(a, device) -> dict:
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if count < 2:
        return {"skipped": f"{count} GPU(s) visible; needs 2+"}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={min(count, 8)}",
               "-m", "mtdiff.cli", "train", "--config", str(ROOT / "config/runs/imagenet64.yaml"),
               "--out", str(Path(tmp) / "run"), "--set", "model=mt_masked", "--set", "data.dataset=shapes",
               "--set", "data.num_train=4096", "--set", f"train.gpus={min(count, 8)}",
               "--set", "train.total_kimg=12.8", "--set", "train.num_workers=0", "--set", "train.log_every_steps=10"]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        wall = time.perf_counter() - t0
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text()) if res.returncode == 0 else {}
    return {"gpus": min(count, 8), "returncode": res.returncode, "wall_s": wall, "steps": summary.get("steps"),
            "images_per_s": summary.get("images_seen", 0) / max(summary.get("wall_s", 1e-9), 1e-9) if summary else None,
            "stderr_tail": res.stderr[-500:] if res.returncode else ""}


def section_project(a, device, results: dict) -> dict:
    """GPU-hours of each GPU workflow config: training images / measured bare-step images/s
    (one GPU; multi-GPU runs assumed to scale linearly), plus DDIM-50 sampling of its FID sets."""
    import yaml

    from mtdiff.config import load_config

    train_rates = results.get("train", {})
    sample_rate = results.get("sample", {}).get("images_per_s")
    out = {}
    for name, wf_path in WORKFLOW_CONFIGS.items():
        if name not in train_rates:
            continue
        wf = yaml.safe_load((ROOT / wf_path).read_text())
        (ds_name, ds), = wf["datasets"].items()
        cfg = load_config(ROOT / ds["run_config"], {"model": "ddpm"})
        runs = len(ds["models"]) * len(ds["seeds"])
        rate = train_rates[name].get("loop_images_per_s") or train_rates[name]["bare_images_per_s"]
        train_h = runs * cfg.train.total_kimg * 1000 / rate / 3600
        gen_models = sum(1 for m in ds["models"] if m not in ("classifier", "segmenter"))
        sample_h = (gen_models * len(ds["seeds"]) * cfg.eval.num_samples / sample_rate / 3600) if sample_rate else None
        estimate = next((line.strip("# \n") for line in (ROOT / wf_path).read_text().splitlines()
                         if "GPU-hours" in line), None)
        out[name] = {"runs": runs, "train_gpu_hours": train_h, "sample_gpu_hours_cifar_net_rate": sample_h,
                     "estimate_in_config": estimate}
    return out


SECTIONS = {"env": section_env, "train": section_train, "loader": section_loader, "fid": section_fid,
            "sample": section_sample, "resume": section_resume, "ddp": section_ddp}


def run(a) -> dict:
    from mtdiff.utils import resolve_device

    device = resolve_device(a.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    results, timings, errors = {"mode": "smoke (CPU, tiny: not a measurement)" if a.smoke else "measurement"}, {}, {}
    for name in a.sections:
        t0 = time.perf_counter()
        try:
            if name == "project":
                results[name] = section_project(a, device, results)
            else:
                results[name] = SECTIONS[name](a, device)
        except Exception as exc:  # one broken section must not hide the others' numbers
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        timings[name] = time.perf_counter() - t0
    results["section_s"] = timings
    results["errors"] = errors
    results["ok"] = not errors
    return results


def table(results: dict) -> str:
    lines = [f"mode: {results['mode']}"]

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    for name in [s for s in SECTIONS if s in results] + (["project"] if "project" in results else []):
        lines.append(f"\n[{name}]  ({results['section_s'][name]:.1f} s)")
        value = results[name]
        rows = value.items() if all(not isinstance(v, dict) for v in value.values()) else None
        if rows is not None:
            lines += [f"  {k:<34} {fmt(v)}" for k, v in rows]
        else:
            for sub, vals in value.items():
                lines.append(f"  {sub}:")
                lines += [f"    {k:<32} {fmt(v)}" for k, v in vals.items()]
    for name, err in results["errors"].items():
        lines.append(f"\nFAILED section {name}: {err}")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    unknown = set(a.sections) - set(SECTIONS) - {"project"}
    if unknown:
        print(f"error: --sections: unknown {sorted(unknown)}; accepted: {', '.join([*SECTIONS, 'project'])}",
              file=sys.stderr)
        return 2
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is visible; use --smoke for a CPU check", file=sys.stderr)
        return 2
    results = run(a)
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
