"""Training-step speed of mtdiff's ADM U-Net against diffusers' ``UNet2DModel`` at equal size.

Run from the repository root::

    .venv/bin/python benchmarks/bench_backbone.py --batch 64 --size 16 --channels 1

One training step = forward + backward + AdamW step of the eps-prediction MSE loss of a DDPM
(linear betas, 1000 steps) on random images, in fp32 and under bf16 autocast. ``UNet2DModel`` is
configured with the same widths, levels, res blocks, attention levels, head width and
scale-shift FiLM, which gives the same parameter count to within a few hundred. Each variant is
warmed up first; then the variants take turns, one step each, for ``--iters`` rounds (so drift of
the machine hits all alike) and the median ms/step is reported. ``ratio`` is ms/step over that of
mtdiff's UNet in the same dtype (< 1 = faster than ours). ``--channels-last`` adds our UNet (and
UNet2DModel) with channels_last inputs and weights. The default run takes about 1-2 minutes on
2 CPU cores.

diffusers is not a dependency of mtdiff: ``.venv/bin/pip install diffusers`` (check with
``--dry-run`` that it keeps the installed torch; pass ``-c`` constraints if it does not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mtdiff.nets import UNet  # noqa: E402


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
        attention_head_dim=a.head_channels, norm_num_groups=32, resnet_time_scale_shift="scale_shift")


class Variant:
    def __init__(self, name, model, dtype, channels_last, call, a):
        self.name, self.dtype, self.channels_last, self.call = name, dtype, channels_last, call
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(memory_format=fmt).train()
        self.params = sum(p.numel() for p in model.parameters())
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        self.x0 = (torch.rand(a.batch, a.channels, a.size, a.size, generator=g) * 2 - 1).to(memory_format=fmt)
        self.alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
        self.times: list[float] = []

    def step(self) -> float:
        start = time.thread_time()
        t = torch.randint(0, 1000, (self.x0.shape[0],))
        eps = torch.randn_like(self.x0)
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * self.x0 + (1 - ab).sqrt() * eps
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            loss = F.mse_loss(self.call(self.model, xt, t).float(), eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.thread_time() - start


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
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated subset of fp32,bf16")
    p.add_argument("--channels-last", action="store_true", help="also time channels_last variants")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    a = p.parse_args(argv)
    try:
        from diffusers import UNet2DModel
    except ImportError:
        print("diffusers is not installed; install it with `.venv/bin/pip install diffusers` "
              "(check `--dry-run` first that it keeps the installed torch)", file=sys.stderr)
        return 2
    if a.threads:
        torch.set_num_threads(a.threads)
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
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {a.batch}, "
          f"{a.channels}x{a.size}x{a.size}, model_channels {a.model_channels}, mult {a.channel_mult}, "
          f"{a.num_res_blocks} res block(s), attention at {a.attention_resolutions}", flush=True)
    for v in variants:
        for _ in range(a.warmup):
            v.step()
    for _ in range(a.iters):
        for v in variants:
            v.times.append(v.step())
    base = {v.dtype: statistics.median(v.times) for v in variants if v.name == "mtdiff UNet"}
    rows = [(v.name, f"{v.params:,}", v.dtype, statistics.median(v.times) * 1e3) for v in variants]
    header = ("model", "params", "dtype", "ms/step", "images/s", "ratio")
    table = [header] + [(n, pc, d, f"{ms:.1f}", f"{a.batch / ms * 1e3:.0f}", f"{ms / 1e3 / base[d]:.2f}")
                        for n, pc, d, ms in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
