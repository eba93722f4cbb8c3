"""Seeds are paired across models (issue 14): with the same train.seed, every diffusion model
trains on the same images (data order and flips), timesteps t and image noise at every step,
and the classifier / segmenter on the same data order; another seed changes all of them.

The slow tests compare what the training loop itself hands to the loss (mtdiff.train._loss)
and the items it fetches (mtdiff.train.fetch), so they follow the loop, not a re-implementation
(six tiny trainings, ~10 s on a shared 2-core machine); the fast ones check the two sources of
those draws (BatchStream, step_randomness) directly."""

from __future__ import annotations

import pytest
import torch

from mtdiff import train as train_module
from mtdiff.batches import BatchStream, step_randomness
from mtdiff.data import load_dataset
from mtdiff.config import load_config
from mtdiff.models import build_diffusion, build_model

STEPS = 2
TINY = {
    "data": {"dataset": "digits", "image_size": 8, "num_train": 96, "num_test": 16, "hflip": True},
    "diffusion": {"num_steps": 50},
    "net": {"model_channels": 8, "head_channels": 8, "label_head_hidden": 16, "attention_resolutions": []},
    "train": {"total_kimg": STEPS * 16 / 1000, "batch_size": 16, "lr_warmup_kimg": 0.016, "checkpoint_every_kimg": 1.0,
              "log_every_steps": 1, "precision": "fp32", "threads": 1, "device": "cpu"},
}
DIFFUSION = ("ddpm", "mt_label", "mt_all", "mt_masked")
DISCRIMINATIVE = ("classifier", "segmenter")


def _config(model: str, seed: int):
    return load_config(None, {**TINY, "model": model, "train": {**TINY["train"], "seed": seed}})


def _what_training_sees(model: str, seed: int, tmp_path, monkeypatch) -> dict[str, list[torch.Tensor]]:
    seen: dict[str, list[torch.Tensor]] = {"items": [], "image": [], "t": [], "noise": []}
    fetch, loss = train_module.fetch, train_module._loss

    def fetch_spy(dataset, idx):
        seen["items"].append(idx.clone())
        return fetch(dataset, idx)

    def loss_spy(net, model_, batch, diffusion, generator):
        for key in ("image", "t", "noise"):
            if key in batch:
                seen[key].append(batch[key].detach().clone())
        return loss(net, model_, batch, diffusion, generator)

    monkeypatch.setattr(train_module, "fetch", fetch_spy)
    monkeypatch.setattr(train_module, "_loss", loss_spy)
    train_module.train(_config(model, seed), tmp_path / f"{model}_seed{seed}", progress=False, log=lambda *_: None)
    monkeypatch.undo()
    assert len(seen["items"]) == STEPS
    return seen


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def seen(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("pairing")
    mp = pytest.MonkeyPatch()
    try:
        out = {(m, 0): _what_training_sees(m, 0, root, mp) for m in DIFFUSION + DISCRIMINATIVE}
    finally:
        mp.undo()
    return out


@pytest.mark.slow
def test_diffusion_models_of_one_seed_see_the_same_images_t_and_noise(seen):
    ref = seen[("ddpm", 0)]
    for model in DIFFUSION[1:]:
        got = seen[(model, 0)]
        assert _same(got["items"], ref["items"]), f"{model}: data order differs from ddpm's"
        # images after the flips: mt_masked's masked-image draws come after the flips (mtdiff.batches)
        assert _same(got["image"], ref["image"]), f"{model}: images (or their flips) differ from ddpm's"
        assert _same(got["t"], ref["t"]), f"{model}: timesteps differ from ddpm's"
        assert _same(got["noise"], ref["noise"]), f"{model}: image noise differs from ddpm's"


@pytest.mark.slow
def test_classifier_and_segmenter_see_the_same_data_order(seen):
    for model in DISCRIMINATIVE:
        assert _same(seen[(model, 0)]["items"], seen[("ddpm", 0)]["items"]), model
        assert seen[(model, 0)]["t"] == [] and seen[(model, 0)]["noise"] == []  # they draw neither


def _draws(model: str, seed: int, step: int = 5) -> dict[str, torch.Tensor]:
    cfg = _config(model, seed)
    info = load_dataset("digits", "test", image_size=8, num_samples=4).info
    return step_randomness(build_model(cfg, info), build_diffusion(cfg), step, seed=seed, global_batch=16,
                           image_shape=(1, 8, 8), local=slice(None), device=torch.device("cpu"), hflip=True)


def test_flips_and_masks_come_from_the_step_not_the_model():
    """ddpm's draws are a prefix of mt_masked's (same t, noise, flips); mt_masked's extra draw
    is the masked-image pattern, made after the shared ones."""
    ddpm, masked = _draws("ddpm", 0), _draws("mt_masked", 0)
    assert set(ddpm) == {"t", "noise", "hflip"}
    assert set(masked) == {"t", "noise", "hflip", "keep:masked_image"}
    for key in ddpm:
        assert torch.equal(ddpm[key], masked[key]), key


def test_another_seed_changes_data_order_t_noise_and_flips():
    a, b = _draws("ddpm", 0), _draws("ddpm", 1)
    for key in a:
        assert not torch.equal(a[key], b[key]), key
    assert not torch.equal(BatchStream(96, 16, seed=0).batch_at(3), BatchStream(96, 16, seed=1).batch_at(3))
    assert torch.equal(BatchStream(96, 16, seed=0).batch_at(3), BatchStream(96, 16, seed=0).batch_at(3))
