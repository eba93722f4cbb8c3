"""What each training step trains on (mtdiff.batches): DDP ranks draw slices of one global
batch of randomness, flips move images and masks together, epoch permutations are cached."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtdiff.batches import BatchStream, apply_hflip, step_randomness
from mtdiff.config import load_config
from mtdiff.data import DatasetInfo
from mtdiff.models import build_diffusion, build_model

GLOBAL_BATCH = 16
# pixel masks at 8x8: 2^64 patterns, so a global batch of distinct masks is what a correct
# draw gives (the default 4x4 patches have only 16 patterns at 8x8)
VALUES = {"model": "mt_masked", "net": {"model_channels": 8, "head_channels": 8},
          "modalities": {"masked_image": {"mask_pattern": "pixels"}}, "diffusion": {"num_steps": 50}}


def _model():
    cfg = load_config(None, VALUES)
    info = DatasetInfo(name="digits", channels=1, image_size=8, num_classes=10, num_mask_classes=11,
                       class_names=(), mask_class_names=(), modalities=("image", "label", "mask"))
    return build_model(cfg, info), build_diffusion(cfg)


def _draws(rank: int, world: int, step: int) -> dict:
    model, diffusion = _model()
    per = GLOBAL_BATCH // world
    return step_randomness(model, diffusion, step, seed=3, global_batch=GLOBAL_BATCH, image_shape=(1, 8, 8),
                           local=slice(rank * per, (rank + 1) * per), device=torch.device("cpu"), hflip=True)


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        mine = _draws(rank, world, step=5)
        gathered = [None] * world
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            torch.save({k: torch.cat([g[k] for g in gathered]) for k in mine}, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two spawned processes: ~10 s, mostly imports
def test_two_gloo_processes_draw_the_global_batch_of_masks_of_one_process(tmp_path):
    out = tmp_path / "ddp.pt"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_rank_main, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    one = _draws(0, 1, step=5)
    assert set(ddp) == {"t", "noise", "keep:masked_image", "hflip"}
    for key in ddp:
        assert torch.equal(ddp[key], one[key]), key
    masks = ddp["keep:masked_image"].flatten(1)
    assert len({tuple(m.tolist()) for m in masks}) == GLOBAL_BATCH  # every example its own mask
    # the defect this replaces: ranks drawing their local batch from the same seed repeat masks
    assert not torch.equal(masks[: GLOBAL_BATCH // 2], masks[GLOBAL_BATCH // 2 :])


def test_draws_depend_on_seed_and_step_only():
    a, b, c = _draws(0, 1, step=5), _draws(0, 1, step=5), _draws(0, 1, step=6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["noise"], c["noise"])


def test_masked_image_training_value_uses_the_trainers_draw():
    model, _ = _model()
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    keep = (torch.rand(4, 1, 8, 8) > 0.5).float()
    value = model.modalities["masked_image"].training_value({"image": images, "keep:masked_image": keep})
    assert torch.equal(value, images * keep)


def test_hflip_mirrors_image_and_mask_together_and_only_flagged_examples():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    masks = torch.arange(2 * 4 * 4).view(2, 4, 4)
    labels = torch.tensor([3, 7])
    out = apply_hflip({"image": images, "mask": masks, "label": labels, "hflip": torch.tensor([True, False])})
    assert "hflip" not in out
    assert torch.equal(out["image"][0], images[0].flip(-1)) and torch.equal(out["image"][1], images[1])
    assert torch.equal(out["mask"][0], masks[0].flip(-1)) and torch.equal(out["mask"][1], masks[1])
    assert torch.equal(out["label"], labels)
    # the pixel under a mask class moves with it: mask and image stay aligned
    assert torch.equal(out["image"][0, 0, :, 0], images[0, 0, :, -1]) and torch.equal(out["mask"][0, :, 0], masks[0, :, -1])


def test_hflip_flags_are_about_half_and_absent_when_off():
    model, diffusion = _model()
    flags = torch.cat([_draws(0, 1, step=s)["hflip"] for s in range(40)]).float()
    assert 0.35 < flags.mean().item() < 0.65
    off = step_randomness(model, diffusion, 0, seed=3, global_batch=4, image_shape=(1, 8, 8), local=slice(0, 4),
                          device=torch.device("cpu"))
    assert "hflip" not in off


def test_training_with_hflip_changes_the_run_and_stays_deterministic(tmp_path):
    from mtdiff.train import train

    def run(name, hflip):
        cfg = load_config(None, {"model": "ddpm", "net": {"model_channels": 8, "head_channels": 8},
                                 "data": {"num_train": 64, "num_test": 32, "hflip": hflip},
                                 "train": {"total_kimg": 0.032, "batch_size": 16, "threads": 1, "precision": "fp32",
                                           "log_every_steps": 1},
                                 "diffusion": {"num_steps": 50}})
        train(cfg, tmp_path / name, progress=False, log=lambda *_: None)
        return torch.load(tmp_path / name / "final.pt", weights_only=False)["model"]["unet.input_conv.weight"]

    a, b, c = run("a", True), run("b", True), run("c", False)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batch_stream_caches_the_epoch_permutation():
    stream = BatchStream(10, 5, seed=3)
    first = stream.batch_at(0)
    assert stream.permutation(0) is stream.permutation(0)
    assert torch.equal(torch.cat([first, stream.batch_at(1)]).sort().values, torch.arange(10))
    again = BatchStream(10, 5, seed=3)
    assert torch.equal(again.batch_at(3), stream.batch_at(3))  # resumable: a function of step
