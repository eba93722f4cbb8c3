"""The guidance sweep end to end on tiny runs (records schema, table, plot), and the elbo_joint
label procedure (docs/method.md, eq. 12b)."""

from __future__ import annotations

import json

import pytest
import torch

from mtdiff import guidance_sweep, samplers
from mtdiff.report import guidance as report_guidance
from mtdiff.config import load_config
from mtdiff.errors import ConfigError
from mtdiff.metrics import PROTOCOL_FIELDS, MetricRecord
from test_models import _batch, _model, _perturb

TINY = {
    "data": {"dataset": "digits", "image_size": 8, "num_train": 128, "num_test": 32},
    "diffusion": {"num_steps": 50},
    "net": {"model_channels": 8, "head_channels": 8, "label_head_hidden": 16, "attention_resolutions": []},
    "train": {"total_kimg": 0.064, "batch_size": 32, "lr_warmup_kimg": 0.032, "checkpoint_every_kimg": 0.064,
              "log_every_steps": 1, "precision": "fp32", "threads": 1},
    "sample": {"steps": 3},
    "eval": {"num_samples": 20, "extractor_steps": 20, "kid_subset_size": 10, "guidance_scales": [0, 2]},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from mtdiff.evaluate import train_extractor
    from mtdiff.train import train

    root = tmp_path_factory.mktemp("sweep")
    out = {}
    for model, extra in (("mt_label", {}), ("ddpm_cond", {"train": {"cond_drop_prob": 0.2}}), ("classifier", {}),
                         ("ddpm", {}), ("mt_mask", {}), ("segmenter", {})):
        cfg = load_config(None, {**TINY, "model": model, "train": {**TINY["train"], **extra.get("train", {})}})
        train(cfg, root / model, progress=False, log=lambda *_: None)
        out[model] = root / model
    train_extractor(load_config(None, {**TINY, "model": "mt_label"}), root / "domain.pt")
    out["weights"] = root / "domain.pt"
    return out


def test_sweep_records_carry_guidance_and_scale(runs, tmp_path):
    files = []
    for model, guidance in (("mt_label", "head"), ("ddpm_cond", "cfg")):
        out = tmp_path / f"guidance_{model}.jsonl"
        recs = guidance_sweep.sweep(runs[model], runs["classifier"], runs["weights"], out,
                                    samples_root=tmp_path / model, log=lambda *_: None)
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(lines) == len(recs) == 2 * len(guidance_sweep.SWEEP_METRICS)
        for r in lines:
            MetricRecord.from_dict(r)  # every protocol field present and valid
            assert set(PROTOCOL_FIELDS) <= set(r)
            assert r["extra"]["guidance"] == guidance and r["extra"]["guidance_scale"] in (0.0, 2.0)
            assert r["n_generated"] == 20 and r["model"] == model
            # sampled in the run's train.precision (fp32 here, even where auto would pick bf16)
            assert r["precision"] == "fp32" and r["device"] == "cpu"
        assert {r["metric"] for r in lines} == set(guidance_sweep.SWEEP_METRICS)
        assert (tmp_path / model / "s2" / "grid.png").is_file()
        meta = json.loads((tmp_path / model / "s2" / "sample.json").read_text())
        assert meta["guidance"] == guidance and meta["guidance_scale"] == 2.0 and meta["condition"] == "label=balanced"
        files.append(out)
    table = report_guidance.sweep_table(files)
    assert len(table) == 4 and set(table["model"]) == {"mt_label", "ddpm_cond"}
    assert table["accuracy"].between(0, 1).all() and (table["fid"] >= 0).all() and (table["n_seeds"] == 1).all()
    report_guidance.plot_sweep(table, tmp_path / "guidance.png")
    assert (tmp_path / "guidance.png").stat().st_size > 1000
    # bad input: a model that cannot be given a class, cfg on a model trained without dropout
    with pytest.raises(ConfigError, match="cannot generate given a class"):
        guidance_sweep.sweep(runs["ddpm"], runs["classifier"], runs["weights"], tmp_path / "x.jsonl")
    with pytest.raises(ConfigError, match="cond_drop_prob=0"):
        guidance_sweep.sweep(runs["mt_label"], runs["classifier"], runs["weights"], tmp_path / "x.jsonl",
                             guidance="cfg", scales=[1.0])
    with pytest.raises(ConfigError, match="guidance_scale=-1"):
        guidance_sweep.sweep(runs["mt_label"], runs["classifier"], runs["weights"], tmp_path / "x.jsonl",
                             scales=[-1.0])


def test_mask_to_image_records_for_mt_and_the_universal_baseline(runs, tmp_path):
    from mtdiff.mask_to_image import evaluate_mask_to_image

    for model, route in (("mt_mask", "mt_head"), ("ddpm", "ddpm_universal")):
        out = tmp_path / f"m2i_{model}.jsonl"
        evaluate_mask_to_image(runs[model], runs["segmenter"], runs["weights"], out, scales=[0.0, 1.0], num_samples=12,
                               samples_root=tmp_path / model, cache_dir=tmp_path / "cache", log=lambda *_: None)
        # the reference features are read from (here: written to) the shared FID cache
        assert list((tmp_path / "cache").glob("digits-train-*.pt"))
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert {r["metric"] for r in lines} == {"m2i_miou", "m2i_pixel_accuracy", "m2i_fid", "m2i_kid_mean",
                                                 "m2i_kid_std"}
        for r in lines:
            MetricRecord.from_dict(r)
            assert r["extra"]["route"] == route and r["extra"]["guidance_scale"] in (0.0, 1.0)
            assert r["precision"] == "fp32" and r["device"] == "cpu"
        assert all(0 <= r["value"] <= 1 for r in lines if r["metric"] == "m2i_miou")
        assert (tmp_path / model / "s1" / "grid.png").is_file()
    with pytest.raises(ConfigError, match="needs mt_mask / mt_all, or ddpm"):
        evaluate_mask_to_image(runs["mt_label"], runs["segmenter"], runs["weights"], tmp_path / "x.jsonl")


def _sweep_records():
    base = {"dataset": "digits", "seed": 0, "checkpoint_step": 10, "ema": True, "sampler": "ddim", "nfe": 25,
            "n_generated": 100, "reference_split": "train", "n_reference": 100, "extractor": "mtdiff-domain",
            "wall_time_s": 1.0}
    recs = [dict(base, model="mt_label", metric="fid", value=4.0, extra={"condition": "none"})]
    for scale, fid in ((0.0, 5.0), (10.0, 30.0)):
        recs.append(dict(base, model="mt_label", metric="guided_cond_fid", value=fid,
                         extra={"condition": "label=balanced", "guidance": "head", "guidance_scale": scale}))
    return recs


def test_headline_table_leaves_the_guidance_sweep_out():
    """One guidance-sweep record per scale: in the headline table a column would stand for an
    arbitrary scale, so the sweep appears only in its own table and plot."""
    import pandas as pd

    from mtdiff.report.tables import comparison_table

    table = comparison_table(pd.json_normalize(_sweep_records()))
    assert any(c.startswith("fid") for c in table.attrs["metric_columns"])
    assert not [c for c in table.attrs["metric_columns"] if c.startswith("guided_")]
    assert table.loc["mt_label", [c for c in table.columns if c.startswith("fid") and c.endswith("_mean")][0]] == 4.0


def test_guidance_plot_uses_the_registry_colours():
    from mtdiff.registry import MODELS

    palette = report_guidance.sweep_palette(["mt_label", "ddpm_cond"])
    assert palette == {"mt_label": MODELS["mt_label"].colour, "ddpm_cond": MODELS["ddpm_cond"].colour}
    assert palette["mt_label"] != palette["ddpm_cond"]


def test_fid_rules_of_conditional_generation_read_the_reference_cache():
    """Every job that computes FID passes the reference-feature cache the FID jobs use
    (workflow/rules/evaluate.smk), so none recomputes the reference features."""
    import re
    from pathlib import Path

    rules = Path(__file__).resolve().parents[1] / "workflow" / "rules"
    for smk, names in (("guidance.smk", ("guidance_sweep", "mask_to_image")), ("inpainting.smk", ("inpainting",))):
        text = (rules / smk).read_text()
        for name in names:
            body = re.search(rf"^rule {name}:\n(.*?)(?=^rule |\Z)", text, re.S | re.M).group(1)
            assert "reference=lambda wc: reference_cache(wc.dataset)" in body, (smk, name)
            assert "--cache-dir $(dirname {input.reference})" in body, (smk, name)


def test_elbo_joint_is_the_image_error_plus_the_weighted_label_error():
    """Eq. 12b by hand: ||(eps - eps_hat) + (w_t / b_t)(E(k) - e_hat)||^2 at one t and one draw."""
    _, model, diffusion = _model("mt_label", size=8, diffusion={"num_steps": 20})
    model = _perturb(model).eval()
    images = _batch(3, size=8)["image"]
    scores = samplers.elbo_label_scores(model, diffusion, images, num_timesteps=1, generator=torch.Generator().manual_seed(0),
                                        label_term=True)
    t = 20  # timesteps(T, 1) = [T]
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    tt = torch.full((3,), t, dtype=torch.long)
    label = model.modalities["label"]
    b_t = float(diffusion.betas[t] / (diffusion.alphas[t].sqrt() * (1 - diffusion.alpha_bars[t]).sqrt()))
    w_t = float(diffusion.weights["label"][t])
    for k in (0, 7):
        e_k = label.encode(torch.full((3,), k))
        zt = diffusion.q_sample(images, tt, noise, {"label": e_k})
        with torch.no_grad():
            preds = model(zt, tt)
        e_hat = label.expected_encoding(preds["label"])
        _, eps_hat = diffusion.split_prediction(preds["image"], zt, tt, diffusion.aggregated_mean({"label": e_hat}, tt, zt))
        by_hand = ((noise - eps_hat) + (w_t / b_t) * (e_k - e_hat)).pow(2).mean(dim=(1, 2, 3))
        torch.testing.assert_close(scores[:, k], by_hand, atol=1e-4, rtol=1e-3)
    # over all t the label term matters (at t = T alone w_T is tiny)
    kw = dict(num_timesteps=5, generator=None)
    plain = samplers.elbo_label_scores(model, diffusion, images, **{**kw, "generator": torch.Generator().manual_seed(1)})
    joint = samplers.elbo_label_scores(model, diffusion, images, label_term=True,
                                       **{**kw, "generator": torch.Generator().manual_seed(1)})
    assert (joint - plain).abs().max() > 1e-3
    pred = samplers.predict(model, diffusion, images, "label", procedure="elbo_joint", num_draws=1, elbo_timesteps=2)
    assert pred.shape == (3,)


@pytest.mark.parametrize("module", ["guidance_sweep", "mask_to_image"])
def test_both_guided_evaluations_share_their_options_and_refuse_bad_scales(module, capsys):
    import importlib

    main = importlib.import_module(f"mtdiff.{module}").main
    judge = "--judge" if module == "guidance_sweep" else "--segmenter"
    assert main(["--run", "r", judge, "j", "--out", "o.jsonl", "--scales", "0,x"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --scales '0,x': accepted: comma-separated numbers >= 0\n"
    assert guidance_sweep.parse_scales("0,1.5,4") == [0.0, 1.5, 4.0] and guidance_sweep.parse_scales(None) is None
