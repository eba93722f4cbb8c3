"""Bare training step of the CIFAR-10 run config's network: eager vs torch.compile, batch 128/512."""
import sys, time, types
from pathlib import Path
import torch
ROOT = Path.cwd(); sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
import gpu_check, gpu_first_hour as fh
from mtdiff.data import load_dataset
from mtdiff.models import build_diffusion, build_model
from mtdiff.utils import autocast, resolve_precision

smoke = "--smoke" in sys.argv
device = torch.device("cpu" if smoke else "cuda")
a = types.SimpleNamespace(smoke=smoke)
modes = ["eager"] if smoke else ["eager", "default", "reduce-overhead"]
for batch in ((4,) if smoke else (128, 512)):
    cfg = fh.net_config("cifar10", a, device, steps=2, batch=batch)
    precision = resolve_precision(cfg.train.precision, device)
    size = cfg.data.image_size
    info = load_dataset("shapes", "test", image_size=size, num_samples=8).info
    diffusion = build_diffusion(cfg)
    g = torch.Generator().manual_seed(0)
    shape = (batch, info.channels, size, size)
    b = {"image": (torch.rand(shape, generator=g) * 2 - 1).to(device),
         "t": torch.randint(1, diffusion.num_steps + 1, (batch,), generator=g).to(device),
         "noise": torch.randn(shape, generator=g).to(device)}
    for mode in modes:
        torch.manual_seed(0)
        model = build_model(cfg, info).to(device).train()
        amp = autocast(device, precision)
        if mode != "eager":
            model.loss = torch.compile(model.loss, mode=mode)
        t0 = time.perf_counter()
        try:
            with amp:
                loss, _ = model.loss(b, diffusion)
            loss.backward()
            gpu_check.sync(device)
            first = time.perf_counter() - t0
            sec = gpu_check.bare_steps(model, diffusion, b, amp, device, 2 if smoke else 30)
            print(f"batch {batch:4d} {mode:28s} {batch / sec:8.0f} images/s  {1000 * sec:7.1f} ms/step  first step {first:6.1f} s  loss {loss.item():.4f}", flush=True)
        except Exception as exc:
            print(f"batch {batch:4d} {mode:28s} FAILED {type(exc).__name__}: {str(exc)[:300]}", flush=True)
        del model
        torch._dynamo.reset()
