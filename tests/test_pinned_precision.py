"""Every shipped run config pins train.precision (issue 14): `auto` picks bf16 or fp32 by CPU,
and the two give different numbers, so a benchmark config must not leave it to the machine."""

from pathlib import Path

import pytest

from conftest import ROOT
from mtdiff.models import load_run_config

RUN_CONFIGS = sorted((ROOT / "config" / "runs").glob("*.yaml")) + sorted((ROOT / ".test" / "runs").glob("*.yaml"))


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(Path(p).relative_to(ROOT)))
def test_run_config_pins_precision(path):
    cfg = load_run_config(path)
    gpu = cfg.train.device.startswith("cuda")
    # fp32 on CPU (bf16 autocast is slower at 8x8 and changes results), bf16 on GPU (tensor cores)
    assert cfg.train.precision == ("bf16" if gpu else "fp32"), (path, cfg.train.device, cfg.train.precision)


def test_sampling_uses_the_runs_precision_unless_told(tmp_path, monkeypatch, one_torch_thread):
    """`mtdiff sample` without --precision samples in the run's pinned train.precision (not auto,
    which would pick bf16 on some CPUs only); --precision still overrides it."""
    import mtdiff.generate
    from mtdiff.cli import build_parser
    from mtdiff.train import train

    assert build_parser().parse_args(["sample", "--run", "r", "--out", "o"]).precision is None
    cfg = load_run_config(None, {"model": "ddpm", "data.dataset": "digits", "data.image_size": 8, "data.num_train": 64,
                                 "net.model_channels": 8, "net.head_channels": 8, "diffusion.num_steps": 20, "sample.steps": 2,
                                 "train.total_kimg": 0.032, "train.batch_size": 16, "train.precision": "bf16",
                                 "train.checkpoint_every_kimg": 0.032, "train.threads": 1})
    train(cfg, tmp_path / "run", progress="none", log=lambda *_: None)
    seen = []
    real = mtdiff.generate.autocast
    monkeypatch.setattr(mtdiff.generate, "autocast", lambda device, precision: seen.append(precision) or real(device, "fp32"))
    for precision in (None, "fp32"):
        mtdiff.generate.generate(tmp_path / "run", tmp_path / f"s{precision}", num_samples=2, steps=2, precision=precision,
                               write_pngs=False, progress="none", log=lambda *_: None)
    assert seen == ["bf16", "fp32"]
