"""Inpainting (mtdiff.inpainting, mtdiff.metrics.inpainting, mtdiff evaluate inpainting):
the masks, the RePaint replacement, the hidden-region metrics, the nearest-neighbour anchor
and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from mtdiff.config import ModalityConfig, load_config
from mtdiff.errors import ConfigError
from mtdiff.inpainting import (
    _draw_once, check_keep_masks, complete_mt, draw_keep_masks, forward_noised, nearest_neighbour_fill,
    posterior_mean, repaint, repaint_step,
)
from mtdiff.metrics.inpainting import hidden_region_errors, inpainting_records, summary
from mtdiff.modalities import MaskedImageModality
from mtdiff.models import build_diffusion, build_model

T = 50
NET = {"model_channels": 8, "head_channels": 8, "label_head_hidden": 16, "channel_mult": [1, 2],
       "attention_resolutions": [4]}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """One torch thread for the whole module (conftest.one_torch_thread)."""


def _tiny(model):
    cfg = load_config(None, {"model": model, "diffusion": {"num_steps": T}, "net": NET,
                             "data": {"image_size": 8}})
    info = SimpleNamespace(channels=1, image_size=8, num_classes=10, num_mask_classes=11)
    torch.manual_seed(0)
    return build_model(cfg, info).eval(), build_diffusion(cfg)


def _images(n=6, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------------------------------
# masks


def test_masks_follow_the_training_law_and_are_seeded():
    info = SimpleNamespace(channels=1, image_size=8, num_classes=10, num_mask_classes=11)
    for pattern in ("patches", "pixels", "center"):
        cfg = ModalityConfig(encoder="identity", mask_pattern=pattern, mask_ratio=0.5, patch_size=4)
        mod = MaskedImageModality(cfg, info, 8, 16)
        x = torch.zeros(32, 1, 8, 8)
        a = mod.hide_pixels(x, torch.Generator().manual_seed(3))
        b = _draw_once(32, 8, pattern, 0.5, 4, torch.Generator().manual_seed(3))
        assert torch.equal(a, b), pattern
    k1 = draw_keep_masks(200, 8, pattern="patches", ratio=0.5, patch_size=4, seed=1)
    k2 = draw_keep_masks(200, 8, pattern="patches", ratio=0.5, patch_size=4, seed=1)
    k3 = draw_keep_masks(200, 8, pattern="patches", ratio=0.5, patch_size=4, seed=2)
    assert torch.equal(k1, k2) and not torch.equal(k1, k3)
    visible = k1.sum(dim=(1, 2, 3))
    assert ((visible > 0) & (visible < 64)).all()  # no empty hole, never all hidden
    assert 0.35 < 1 - k1.mean().item() < 0.65


# ---------------------------------------------------------------------------------------------
# RePaint


def test_repaint_step_keeps_known_region_equal_to_forward_noised_truth():
    model, diffusion = _tiny("ddpm")
    x = _images()
    keep = draw_keep_masks(len(x), 8, seed=0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(x.shape, generator=g)
    known = torch.randn(x.shape, generator=g)
    with torch.no_grad():
        for eta in (0.0, 1.0):
            z_s = repaint_step(model, diffusion, z, 40, 30, x, keep, eta=eta, known_noise=known,
                               step_noise=torch.randn(x.shape, generator=g))
            truth_s = forward_noised(x, diffusion.alpha_bars[30].item(), known)
            assert torch.equal(z_s * keep, truth_s * keep)
            assert not torch.allclose(z_s * (1 - keep), truth_s * (1 - keep))  # the hole is the model's
        last = repaint_step(model, diffusion, z, 5, 0, x, keep, eta=0.0, known_noise=known)
    assert torch.equal(last * keep, x * keep)  # at s = 0 the known region is the truth itself
    # mt_masked: the replacement acts on y = z - c e (eq. 7); z_s's known part is the noised truth + c_s e
    model, diffusion = _tiny("mt_masked")
    enc = {"masked_image": model.modalities["masked_image"].encode(x * keep)}
    with torch.no_grad():
        z_s = repaint_step(model, diffusion, z, 40, 30, x, keep, eta=0.0, known_noise=known, given_enc=enc)
    shift = diffusion.aggregated_mean(enc, torch.full((len(x),), 30), z)
    truth_s = forward_noised(x, diffusion.alpha_bars[30].item(), known) + shift
    assert torch.allclose(z_s * keep, truth_s * keep, atol=1e-6) and shift.abs().max() > 0


def test_repaint_counts_nfe_and_is_deterministic():
    model, diffusion = _tiny("ddpm")
    x = _images(4)
    keep = draw_keep_masks(4, 8, seed=0)
    a, nfe = repaint(model, diffusion, x, keep, steps=5, generator=torch.Generator().manual_seed(0))
    b, _ = repaint(model, diffusion, x, keep, steps=5, generator=torch.Generator().manual_seed(0))
    assert nfe == 5 and torch.equal(a, b)
    assert torch.allclose(a * keep, x * keep)
    _, nfe2 = repaint(model, diffusion, x, keep, steps=5, resample_jumps=2, generator=torch.Generator().manual_seed(0))
    assert nfe2 == 4 * 3 + 1  # no resampling at the last step


def test_mt_repaint_resamples_and_guides_on_the_deaggregated_latent():
    """mt_masked with replacement: resampling jumps (on y = z - c e, eq. 7) cost NFE like
    RePaint's, keep the visible pixels, and head guidance on the masked image changes the hole."""
    model, diffusion = _tiny("mt_masked")
    x = _images(4)
    keep = draw_keep_masks(4, 8, seed=0)
    plain, nfe = repaint(model, diffusion, x, keep, steps=4, generator=torch.Generator().manual_seed(0))
    jumped, nfe_j = repaint(model, diffusion, x, keep, steps=4, resample_jumps=2, generator=torch.Generator().manual_seed(0))
    guided, nfe_g = repaint(model, diffusion, x, keep, steps=4, guidance="head", guidance_scale=5.0,
                            generator=torch.Generator().manual_seed(0))
    assert (nfe, nfe_j, nfe_g) == (4, 3 * 3 + 1, 4)
    for done in (plain, jumped, guided):
        assert torch.allclose(done * keep, x * keep) and done.abs().max() <= 1
    hole = 1 - keep
    assert not torch.allclose(plain * hole, jumped * hole) and not torch.allclose(plain * hole, guided * hole)


def test_posterior_mean_averages_seeded_completions_and_lowers_the_mse():
    """The mean of K completions is their pixelwise average, and its hidden-region MSE is never
    above the completions' mean MSE (Jensen: the MSE is convex), the reason it is reported apart."""
    model, diffusion = _tiny("ddpm")
    x = _images(4)
    keep = draw_keep_masks(4, 8, seed=0)

    def one(g):
        return repaint(model, diffusion, x, keep, steps=3, sampler="ddpm", generator=g)

    mean, nfe = posterior_mean(one, 3, seed=7)
    draws = [one(torch.Generator().manual_seed(7 + j))[0] for j in range(3)]
    assert nfe == 9 and torch.allclose(mean, sum(draws) / 3)
    mse_of_mean = hidden_region_errors(mean, x, keep)["mse"]
    mean_mse = sum(hidden_region_errors(d, x, keep)["mse"] for d in draws) / 3
    assert (mse_of_mean <= mean_mse + 1e-6).all() and (mse_of_mean < mean_mse).any()


def test_mt_completion_pastes_visible_pixels():
    model, diffusion = _tiny("mt_masked")
    x = _images(4)
    keep = draw_keep_masks(4, 8, seed=0)
    done = complete_mt(model, diffusion, x, keep, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(done * keep, x * keep) and done.abs().max() <= 1


# ---------------------------------------------------------------------------------------------
# metrics and the anchor


def test_hidden_region_mse_and_psnr_match_hand_computation():
    truth = torch.zeros(2, 1, 2, 2)
    done = torch.tensor([[[[1.0, 0.5], [-1.0, 9.0]]], [[[0.0, 0.0], [0.0, 0.2]]]])
    keep = torch.tensor([[[[0.0, 0.0], [1.0, 1.0]]], [[[1.0, 1.0], [1.0, 0.0]]]])
    e = hidden_region_errors(done, truth, keep)
    # image 0: hidden pixels 1.0 and 0.5 -> [0, 1] scale 0.5, 0.25 -> mse (0.25 + 0.0625) / 2
    mse0, mse1 = (0.25 + 0.0625) / 2, 0.1**2
    assert torch.allclose(e["mse"], torch.tensor([mse0, mse1]))
    assert torch.allclose(e["psnr"], 10 * torch.log10(1 / torch.tensor([mse0, mse1])))
    s = summary(e)
    assert s["inpaint_mse"] == pytest.approx((mse0 + mse1) / 2)
    exact = hidden_region_errors(truth, truth, keep)["psnr"]
    assert torch.isfinite(exact).all() and exact.min() > 50  # floored, not inf


def test_nearest_neighbour_copies_exact_training_pixels_into_the_hole():
    train = _images(50, seed=1)
    keep = draw_keep_masks(5, 8, seed=4)
    pick = torch.tensor([3, 17, 17, 42, 0])
    noise = _images(5, seed=9)
    query = keep * train[pick] + (1 - keep) * noise  # visible pixels equal a known training image
    done, idx = nearest_neighbour_fill(query, keep, train)
    assert torch.equal(idx, pick)
    assert torch.equal(done * (1 - keep), train[pick] * (1 - keep))
    assert torch.equal(done * keep, query * keep)


def test_records_carry_protocol_and_mask():
    recs = inpainting_records(dataset="digits", model="ddpm", method="repaint", seed=0, checkpoint_step=750, ema=True,
                              sampler="ddim", nfe=25, n=10, errors={"inpaint_mse": 0.1, "inpaint_psnr": 10.0},
                              fidelity={"fid": 3.0}, reference_split="train", n_reference=100,
                              extractor="mtdiff-domain", wall_time_s=1.0, precision="fp32", device="cuda:0",
                              mask={"pattern": "patches", "ratio": 0.5, "patch_size": 4, "seed": 0})
    assert [r["metric"] for r in recs] == ["inpaint_mse", "inpaint_psnr", "inpaint_fid"]
    assert all(r["nfe"] == 25 and r["n_generated"] == 10 and r["checkpoint_step"] == 750 for r in recs)
    assert recs[0]["extra"]["condition"] == "inpaint patches 0.5" and recs[0]["extra"]["mask_seed"] == 0
    assert recs[2]["extractor"] == "mtdiff-domain" and recs[0]["extractor"] is None
    assert all(r["precision"] == "fp32" and r["device"] == "cuda" for r in recs)


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_is_refused_with_one_line():
    x = _images(4)
    for keep in (torch.ones(4, 1, 4, 4), torch.ones(3, 1, 8, 8), torch.ones(4, 8, 8)):
        with pytest.raises(ConfigError, match="accepted: \\(4, 1, 8, 8\\)") as e:
            check_keep_masks(x, keep)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="--mask-pattern"):
        draw_keep_masks(4, 8, pattern="stripes")
    with pytest.raises(ConfigError, match="--mask-ratio"):
        draw_keep_masks(4, 8, ratio=1.5)
    model, diffusion = _tiny("mt_label")
    with pytest.raises(ConfigError, match="image-only"):
        repaint(model, diffusion, x, draw_keep_masks(4, 8), steps=2)
    model, diffusion = _tiny("mt_masked")
    for scale in (-1.0, float("nan"), "x"):
        with pytest.raises(ConfigError, match="guidance_scale=.*accepted: a finite number >= 0"):
            repaint(model, diffusion, x, draw_keep_masks(4, 8), steps=2, guidance="head", guidance_scale=scale)
    with pytest.raises(ConfigError, match="sample.guidance"):
        repaint(model, diffusion, x, draw_keep_masks(4, 8), steps=2, guidance="classifier")
    ddpm, ddiff = _tiny("ddpm")
    with pytest.raises(ConfigError, match="needs a condition"):  # ddpm has no head to guide with
        repaint(ddpm, ddiff, x, draw_keep_masks(4, 8), steps=2, guidance="head", guidance_scale=1.0)
    with pytest.raises(ConfigError, match="posterior-samples"):
        posterior_mean(lambda g: (x, 1), 1, seed=0)
    with pytest.raises(ConfigError, match="masked_image modality"):
        complete_mt(ddpm, ddiff, x, draw_keep_masks(4, 8), steps=2)
    with pytest.raises(ConfigError, match="resample-jumps"):
        repaint(ddpm, ddiff, x, draw_keep_masks(4, 8), steps=2, resample_jumps=-1)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mtdiff.cli", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_cli_inpainting_end_to_end(tmp_path):
    """Two tiny runs (ddpm, mt_masked), then the command: records of all three methods, a grid."""
    common = ["net.model_channels=8", "net.head_channels=8", "data.num_train=64", "data.num_test=16",
              "train.total_kimg=0.032", "train.batch_size=16", "train.threads=1", "diffusion.num_steps=20",
              "sample.steps=4", "train.precision=fp32"]
    for model in ("ddpm", "mt_masked"):
        res = _cli("train", "--out", str(tmp_path / model), "--no-progress", "--set", f"model={model}",
                   *sum((["--set", o] for o in common), []))
        assert res.returncode == 0, res.stderr
    out = tmp_path / "inp.jsonl"
    res = _cli("evaluate", "inpainting", "--mt-run", str(tmp_path / "mt_masked"), "--baseline-run",
               str(tmp_path / "ddpm"), "--out", str(out), "--grid", str(tmp_path / "grid.png"),
               "--resample-jumps", "1", "--posterior-samples", "2", "--set", "eval.inpaint_guidance_scale=1.5")
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    methods = {(r["model"], r["extra"]["method"]) for r in recs}
    assert methods == {("mt_masked", "mt_conditional"), ("mt_masked+repaint", "mt_repaint"), ("ddpm", "repaint"),
                       ("mt_masked posterior mean", "mt_conditional_posterior_mean"),
                       ("mt_masked+repaint posterior mean", "mt_repaint_posterior_mean"),
                       ("ddpm posterior mean", "repaint_posterior_mean"), ("nearest_neighbour", "nearest_neighbour")}
    nfe = {r["extra"]["method"]: r["nfe"] for r in recs}
    # 4 steps; the replacement methods resample once per step but the last: equal NFE 3 x 2 + 1
    assert nfe["mt_conditional"] == 4 and nfe["mt_repaint"] == nfe["repaint"] == 7
    assert nfe["repaint_posterior_mean"] == 14 and nfe["nearest_neighbour"] is None
    for r in recs:  # every setting is on the record
        if r["extra"]["method"] != "nearest_neighbour":
            assert {"steps", "eta", "guidance", "guidance_scale", "resample_jumps", "posterior_samples"} <= set(r["extra"])
    mt = [r for r in recs if r["extra"]["method"].startswith("mt_")]
    assert all(r["extra"]["guidance"] == "head" and r["extra"]["guidance_scale"] == 1.5 for r in mt)
    # the diffusion methods run in fp32 on the CPU; the nearest neighbour runs no network
    assert {(r["precision"], r["device"]) for r in recs if r["model"] != "nearest_neighbour"} == {("fp32", "cpu")}
    assert {(r["precision"], r["device"]) for r in recs if r["model"] == "nearest_neighbour"} == {(None, None)}
    assert not [r for r in recs if r["extra"]["method"].endswith("posterior_mean") and "fid" in r["metric"]]
    assert (tmp_path / "grid.png").stat().st_size > 0
    res = _cli("evaluate", "inpainting", "--baseline-run", str(tmp_path / "ddpm"), "--out", str(out),
               "--mask-ratio", "2")
    assert res.returncode == 2 and "--mask-ratio" in res.stderr and "Traceback" not in res.stderr
    for flag, value, said in (("--guidance-scale", "-1", "--guidance-scale=-1.0"), ("--guidance-scale", "nan", "--guidance-scale=nan"),
                              ("--posterior-samples", "1", "--posterior-samples=1"),
                              ("--resample-jumps", "-2", "--resample-jumps=-2")):
        res = _cli("evaluate", "inpainting", "--mt-run", str(tmp_path / "mt_masked"), "--out", str(out), flag, value)
        assert res.returncode == 2 and said in res.stderr and ("accepted" in res.stderr or "must be" in res.stderr), res.stderr
        assert "Traceback" not in res.stderr


def test_report_tabulates_inpainting_records_per_method(tmp_path):
    import pandas as pd

    from mtdiff.metrics import records_to_frame
    from mtdiff.metrics.records import MetricRecord
    from mtdiff.report.inpainting import write_inpainting_tables

    mask = {"pattern": "patches", "ratio": 0.5, "patch_size": 4, "seed": 0}
    recs = []
    for seed, psnr in ((0, 10.0), (1, 12.0)):
        recs += inpainting_records(dataset="digits", model="ddpm", method="repaint", seed=seed, checkpoint_step=750,
                                   ema=True, sampler="ddim", nfe=25, n=10,
                                   errors={"inpaint_mse": 0.1, "inpaint_psnr": psnr}, fidelity=None,
                                   reference_split="train", n_reference=100, extractor=None, wall_time_s=1.0, mask=mask,
                                   precision="fp32", device="cpu")
    recs += inpainting_records(dataset="digits", model="nearest_neighbour", method="nearest_neighbour", seed=0,
                               checkpoint_step=None, ema=None, sampler=None, nfe=None, n=10,
                               errors={"inpaint_mse": 0.05, "inpaint_psnr": 14.0}, fidelity=None,
                               reference_split="train", n_reference=100, extractor=None, wall_time_s=1.0, mask=mask,
                               precision=None, device=None)
    df = records_to_frame([MetricRecord.from_dict(r) for r in recs])
    files = write_inpainting_tables(df, tmp_path)
    table = pd.read_csv(files["inpainting.csv"]).set_index("method")
    assert table.loc["repaint", "inpaint_psnr"] == pytest.approx(11.0) and table.loc["repaint", "seeds"] == 2
    assert table.loc["nearest_neighbour", "inpaint_mse"] == pytest.approx(0.05)
    # the floor, per row: 11 dB (mean of 10 and 12) is 3 dB under the 14 dB copy
    assert table.loc["repaint", "psnr_minus_anchor"] == pytest.approx(-3.0)
    assert not table.loc["repaint", "beats_anchor"] and pd.isna(table.loc["nearest_neighbour", "beats_anchor"])
    recs += inpainting_records(dataset="digits", model="ddpm posterior mean", method="repaint_posterior_mean", seed=0,
                               checkpoint_step=750, ema=True, sampler="ddpm", nfe=100, n=10,
                               errors={"inpaint_mse": 0.04, "inpaint_psnr": 15.0}, fidelity=None,
                               reference_split="train", n_reference=100, extractor=None, wall_time_s=1.0, mask=mask, precision="fp32", device="cpu",
                               extra={"posterior_samples": 4, "resample_jumps": 0, "guidance_scale": 0.0})
    df = records_to_frame([MetricRecord.from_dict(r) for r in recs])
    table = pd.read_csv(write_inpainting_tables(df, tmp_path)["inpainting.csv"]).set_index("method")
    assert table.loc["repaint_posterior_mean", "beats_anchor"] and table.loc["repaint_posterior_mean", "posterior_samples"] == 4
    assert write_inpainting_tables(df[df["metric"] == "nothing"], tmp_path / "none") == {}
    # summary.md's inpainting section lists every method at its own NFE (RePaint's 100 is not the headline NFE)
    from mtdiff.report.inpainting import inpainting_table
    from mtdiff.report.summary import inpainting_markdown

    section = "\n".join(inpainting_markdown(inpainting_table(df)))
    for method in ("repaint", "repaint_posterior_mean", "nearest_neighbour"):
        assert f"| {method} " in section, (method, section)
    assert "beats the copy anchor" in section and "| True " in section
