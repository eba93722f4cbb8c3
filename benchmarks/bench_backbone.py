"""Training-step speed of mtdiff's ADM U-Net against diffusers' ``UNet2DModel`` at equal size.

Run from the repository root (about 1 minute on 2 idle CPU cores, 2 on busy ones)::

    .venv/bin/python benchmarks/bench_backbone.py --batch 64 --size 16 --channels 1

More variants (bf16 autocast and channels_last; bf16 is very slow on CPUs without AVX-512)::

    .venv/bin/python benchmarks/bench_backbone.py --batch 16 --size 16 --channels 1 \
        --dtypes fp32,bf16 --channels-last --iters 5
    .venv/bin/python benchmarks/bench_backbone.py --batch 32 --size 32 --channels 3 --channel-mult 1,2,2

One training step = forward + backward + (fused) AdamW step of the eps-prediction MSE loss of a
DDPM (linear betas, 1000 steps) on random images, in fp32 and/or under bf16 autocast (by default
bf16 only where :func:`mtdiff.nets.bf16_autocast_is_fast` says so). ``UNet2DModel`` gets the same
widths, levels, res blocks, attention levels, head width and scale-shift FiLM, which gives the
same parameter count to within 128. After the warm-up steps the variants take turns, one step
each, for ``--iters`` rounds (so drift of a shared machine hits all alike); the table shows the
median wall-clock ms/step, the fastest step ("min ms"), the median process CPU ms/step (less
sensitive to other processes), images/s from the median wall time, and ``ratio`` = ms/step over
that of mtdiff's UNet in the same dtype and memory format (> 1: slower than ours). One torch
thread by default: on a busy 2-core machine two OpenMP threads wait on each other at every op
and a step takes up to 3x as long (``--threads 2`` on an idle machine).

diffusers is not a dependency of mtdiff: ``.venv/bin/pip install diffusers`` (check with
``--dry-run`` that it keeps the installed torch; pass ``-c`` constraints if it does not). Without
it the script says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mtdiff.nets import UNet, bf16_autocast_is_fast, norm_groups  # noqa: E402


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def build_diffusers(unet2d, a) -> torch.nn.Module:
    res = [a.size >> level for level in range(len(a.channel_mult))]
    attn = [r in a.attention_resolutions for r in res]
    return unet2d(
        sample_size=a.size, in_channels=a.channels, out_channels=a.channels,
        block_out_channels=tuple(a.model_channels * m for m in a.channel_mult), layers_per_block=a.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if x else "DownBlock2D" for x in attn),
        up_block_types=tuple("AttnUpBlock2D" if x else "UpBlock2D" for x in reversed(attn)),
        attention_head_dim=a.head_channels, resnet_time_scale_shift="scale_shift",
        # one group count for every layer (mtdiff: gcd(channels, 32) per layer); the narrowest
        # width decides, so widths below 32 (e.g. 16) build too; same parameter count either way
        norm_num_groups=norm_groups(a.model_channels))


class Variant:
    def __init__(self, name, model, dtype, channels_last, call, a):
        self.name, self.dtype, self.channels_last, self.call = name, dtype, channels_last, call
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(memory_format=fmt).train()
        self.params = sum(p.numel() for p in model.parameters())
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # fused: ~5x faster step on CPU
        g = torch.Generator().manual_seed(0)
        self.x0 = (torch.rand(a.batch, a.channels, a.size, a.size, generator=g) * 2 - 1).to(memory_format=fmt)
        self.alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def step(self) -> tuple[float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        t = torch.randint(0, 1000, (self.x0.shape[0],))
        eps = torch.randn_like(self.x0)
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * self.x0 + (1 - ab).sqrt() * eps
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            loss = F.mse_loss(self.call(self.model, xt, t).float(), eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - start, time.process_time() - cpu_start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--model-channels", type=int, default=32)
    p.add_argument("--channel-mult", type=ints, default=(1, 2), help="comma-separated, e.g. 1,2,2")
    p.add_argument("--num-res-blocks", type=int, default=1)
    p.add_argument("--attention-resolutions", type=ints, default=(8,), help="comma-separated pixels, e.g. 8,16")
    p.add_argument("--head-channels", type=int, default=32)
    p.add_argument("--dtypes", default="auto",
                   help="comma-separated subset of fp32,bf16; auto = fp32, plus bf16 where its kernels are fast")
    p.add_argument("--channels-last", action="store_true", help="also time channels_last variants")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=25)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: 2 threads are up to 3x slower on a busy 2-core machine; "
                        "0 = torch's default)")
    a = p.parse_args(argv)
    try:
        from diffusers import UNet2DModel
    except ImportError:
        print("diffusers is not installed; install it with `.venv/bin/pip install diffusers` "
              "(check `--dry-run` first that it keeps the installed torch)", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
    notes = []
    if a.dtypes == "auto":
        dtypes = ["fp32", "bf16"] if bf16_autocast_is_fast("cpu") else ["fp32"]
        if len(dtypes) == 1:
            notes.append("bf16 skipped: this CPU has no fast bf16 kernels (oneDNN bf16 needs AVX-512): bf16 convs "
                         "run a reference kernel (~50x slower per conv, a step ~5x slower than fp32); "
                         "force it with --dtypes fp32,bf16")
    else:
        dtypes = [d for d in a.dtypes.split(",") if d]
    if not dtypes or any(d not in ("fp32", "bf16") for d in dtypes):
        p.error(f"--dtypes={a.dtypes!r}: accepted: fp32, bf16 or both (comma-separated)")

    def ours(seed):
        torch.manual_seed(seed)
        return UNet(a.channels, a.size, a.channels, a.model_channels, a.channel_mult, a.num_res_blocks,
                    a.attention_resolutions, a.head_channels)

    def theirs(seed):
        torch.manual_seed(seed)
        return build_diffusers(UNet2DModel, a)

    call_ours = lambda m, x, t: m(x, t).out  # noqa: E731
    call_theirs = lambda m, x, t: m(x, t).sample  # noqa: E731
    variants = []
    for dtype in dtypes:
        for cl in (False, True) if a.channels_last else (False,):
            suffix = " +channels_last" if cl else ""
            variants.append(Variant("mtdiff UNet" + suffix, ours(0), dtype, cl, call_ours, a))
            variants.append(Variant("diffusers UNet2DModel" + suffix, theirs(0), dtype, cl, call_theirs, a))
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
          f"(load average {load:.1f}); batch {a.batch}, {a.channels}x{a.size}x{a.size}, model_channels "
          f"{a.model_channels}, mult {a.channel_mult}, {a.num_res_blocks} res block(s), attention at "
          f"{a.attention_resolutions}; median of {a.iters} steps after {a.warmup} warm-up", flush=True)
    if load > 1.0:
        notes.append(f"other work was running (load average {load:.1f} at the start): wall times are inflated "
                     "and noisy, cpu ms/step (process CPU time) and min ms less so; rerun to compare")
    for v in variants:
        for _ in range(a.warmup):
            v.step()
    for _ in range(a.iters):
        for v in variants:
            wall, cpu = v.step()
            v.times.append(wall)
            v.cpu_times.append(cpu)
    ms = {id(v): statistics.median(v.times) * 1e3 for v in variants}
    base = {(v.dtype, v.channels_last): ms[id(v)] for v in variants if v.call is call_ours}
    header = ("model", "params", "dtype", "ms/step", "min ms", "cpu ms/step", "images/s", "ratio")
    table = [header] + [(v.name, f"{v.params:,}", v.dtype, f"{ms[id(v)]:.1f}", f"{min(v.times) * 1e3:.1f}",
                         f"{statistics.median(v.cpu_times) * 1e3:.1f}", f"{a.batch / ms[id(v)] * 1e3:.1f}",
                         f"{ms[id(v)] / base[v.dtype, v.channels_last]:.2f}") for v in variants]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("ratio = ms/step / ms/step of mtdiff UNet in the same dtype and memory format (> 1: slower than ours)")
    for note in notes:
        print("note:", note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
