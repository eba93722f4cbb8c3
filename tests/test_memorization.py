"""Memorization check (mtdiff.metrics.memorization, mtdiff evaluate memorization[-anchors]):
eqs. M1-M3 of docs/method.md, its anchors, the records and the grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from mtdiff.errors import ConfigError
from mtdiff.metrics.memorization import (as_vectors, closest_pairs, copier_images, memorization,
                                         memorization_threshold, memorized_fraction, nearest_training)
from mtdiff.metrics.records import read_records


def _clouds(seed=0, n_train=400, n_test=300, dim=16):
    g = np.random.default_rng(seed)
    return g.normal(size=(n_train, dim)), g.normal(size=(n_test, dim))


def test_nearest_training_is_the_brute_force_minimum():
    train, test = _clouds(n_train=50, n_test=20, dim=5)
    d, i = nearest_training(test, train)
    full = np.linalg.norm(test[:, None] - train[None], axis=-1)
    np.testing.assert_allclose(d, full.min(1), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(i, full.argmin(1))


def test_exact_training_copies_are_all_memorized():
    train, test = _clouds()
    copies = train[[3, 7, 7, 100, 399]]
    res = memorization(copies, train, test)
    assert res["memorized_fraction"] == 1.0
    np.testing.assert_allclose(res["distances"], 0, atol=1e-6)
    np.testing.assert_array_equal(res["nearest"], [3, 7, 7, 100, 399])
    assert res["nn_distance_ratio"] < 1e-6 and res["binomial_p"] < 1e-8


def test_the_test_split_itself_scores_about_the_percentile():
    train, test = _clouds(n_test=1000)
    for p in (1.0, 5.0, 20.0):
        res = memorization(test, train, test, percentile=p)
        # tau is the p-th percentile of these very distances: strictly below it lie p% of them
        # (up to one item of interpolation)
        assert abs(res["memorized_fraction"] - p / 100) <= 1 / 1000 + 1e-12, (p, res["memorized_fraction"])
        assert res["nn_distance_ratio"] == pytest.approx(1.0)


def test_fresh_draws_from_the_data_distribution_score_about_the_percentile():
    """Samples as far from the training set as real held-out data: about p% (not a copier)."""
    g = np.random.default_rng(1)
    train, test, fresh = g.normal(size=(500, 8)), g.normal(size=(2000, 8)), g.normal(size=(2000, 8))
    res = memorization(fresh, train, test, percentile=5.0)
    assert 0.03 < res["memorized_fraction"] < 0.07
    assert 0.9 < res["nn_distance_ratio"] < 1.1


def test_threshold_and_fraction_grow_with_the_percentile():
    train, test = _clouds()
    d_test, _ = nearest_training(test, train)
    samples = train[:50] + np.random.default_rng(2).normal(scale=0.5, size=(50, 16))
    d, _ = nearest_training(samples, train)
    taus = [memorization_threshold(d_test, p) for p in (0.5, 1, 5, 25, 50, 99)]
    fracs = [memorized_fraction(d, t) for t in taus]
    assert taus == sorted(taus) and taus[0] < taus[-1]
    assert fracs == sorted(fracs)
    assert memorization_threshold(d_test, 50) == pytest.approx(np.median(d_test))


def test_closer_samples_score_higher():
    """A set moved towards its nearest training images scores at least as high, and lower ratio."""
    train, test = _clouds()
    g = np.random.default_rng(3)
    far = g.normal(size=(200, 16))
    _, idx = nearest_training(far, train)
    near = 0.3 * far + 0.7 * train[idx]
    r_far, r_near = memorization(far, train, test), memorization(near, train, test)
    assert r_near["memorized_fraction"] >= r_far["memorized_fraction"]
    assert r_near["nn_distance_ratio"] < r_far["nn_distance_ratio"]


def test_feature_space_rows_and_pixel_images():
    """Features are (N, D) rows; uint8 images are read in the models' [-1, 1] range, so a
    uint8 copy of a [-1, 1] float training image is at distance 0."""
    g = np.random.default_rng(4)
    train_u8 = g.integers(0, 256, size=(30, 1, 4, 4), dtype=np.uint8)
    train_f = train_u8.astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(as_vectors(train_u8), train_f.reshape(30, -1), atol=1e-6)
    d, i = nearest_training(train_u8[:5], train_f)
    np.testing.assert_allclose(d, 0, atol=1e-6)
    feats = g.normal(size=(30, 7))
    res = memorization(torch.from_numpy(feats[:4]), feats, g.normal(size=(20, 7)))
    assert res["memorized_fraction"] == 1.0 and res["n_train"] == 30 and res["n_test"] == 20


def test_copier_draws_training_images_with_a_seed():
    train = np.arange(100)[:, None].astype(float)
    a, ia = copier_images(train, 10, seed=0)
    b, ib = copier_images(train, 10, seed=0)
    c, ic = copier_images(train, 10, seed=1)
    np.testing.assert_array_equal(ia, ib)
    assert len(set(ia.tolist())) == 10 and not np.array_equal(ia, ic)
    np.testing.assert_array_equal(a[:, 0], ia)
    big, ibig = copier_images(train, 250, seed=0)  # more than the split: with replacement
    assert len(big) == 250 and ibig.max() < 100


def test_closest_pairs_orders_by_distance():
    np.testing.assert_array_equal(closest_pairs([3.0, 1.0, 2.0, 1.0], 3), [1, 3, 2])
    assert len(closest_pairs([1.0, 2.0], 10)) == 2


@pytest.mark.parametrize("call, match", [
    (lambda: memorization_threshold([1.0, 2.0], 0), "percentile=0"),
    (lambda: memorization_threshold([1.0, 2.0], 100), "percentile=100"),
    (lambda: memorization_threshold([1.0], 1), "at least 2"),
    (lambda: nearest_training(np.zeros((2, 3)), np.zeros((4, 5))), "same image size"),
    (lambda: as_vectors(np.zeros((0, 3))), "non-empty"),
    (lambda: as_vectors(np.array([[np.nan]])), "NaN"),
    (lambda: closest_pairs([1.0], 0), "k=0"),
    (lambda: copier_images(np.zeros((3, 1)), 0), "n=0"),
])
def test_bad_input_is_one_line_naming_the_value(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# the evaluate commands, on the digits split (8x8, as in the default config)


@pytest.fixture(scope="module")
def digits_cfg():
    from mtdiff.config import load_config

    return load_config(ROOT / "config" / "runs" / "digits.yaml", ["eval.num_samples=200"])


@pytest.fixture(scope="module")
def domain_weights(tmp_path_factory, digits_cfg):
    """A quickly trained domain extractor (its quality does not matter here, its features do)."""
    from mtdiff.metrics import train_domain_extractor
    from mtdiff.train import load_split

    tr = load_split(digits_cfg, "train", in_memory=True)
    path = tmp_path_factory.mktemp("extractor") / "domain.pt"
    train_domain_extractor(tr.images, tr.labels, num_classes=10, out_path=path, steps=3, batch_size=32,
                           dataset="digits")
    return path


def test_features_are_the_fid_extractors(digits_cfg, domain_weights):
    """Feature space = the domain classifier's FID layer (what torch-fidelity computes FID on)."""
    from mtdiff.evaluate_memorization import extractor_features
    from mtdiff.metrics import DOMAIN_EXTRACTOR_NAME, load_domain_classifier
    from mtdiff.train import load_split

    images = load_split(digits_cfg, "test", in_memory=True).images[:40]
    feats, name = extractor_features(digits_cfg, domain_weights, images)
    model, _ = load_domain_classifier(domain_weights)
    with torch.no_grad():
        direct, _ = model(((images + 1) * 127.5).round().to(torch.uint8))
    assert name == DOMAIN_EXTRACTOR_NAME and feats.shape == (40, model.feature_dim)
    np.testing.assert_allclose(feats, direct.double().numpy(), atol=1e-5)


def test_anchors_real_floor_about_one_percent_copier_all(tmp_path, digits_cfg, domain_weights):
    """The floor: the test split about 1% (calibration), a copier of training images 100%, in
    pixels and in features; records valid, one per (anchor, space, metric); grid written."""
    from mtdiff.evaluate_memorization import memorization_anchors

    out, grid = tmp_path / "anchors.jsonl", tmp_path / "anchors.png"
    memorization_anchors(digits_cfg, out, weights=domain_weights, grid=grid, grid_pairs=8)
    df = read_records(out)
    fractions = df[df.metric == "memorized_fraction"].assign(space=lambda d: d.extractor.fillna("pixels"))
    frac = fractions.set_index(["model", "space"])["value"]
    assert set(frac.index) == {(m, s) for m in ("real_floor", "copier") for s in ("pixels", "mtdiff-domain")}
    for space in ("pixels", "mtdiff-domain"):
        assert abs(frac["real_floor", space] - 0.01) <= 1 / 360 + 1e-12
        assert frac["copier", space] == 1.0
    copier = df[(df.model == "copier") & (df.metric == "memorized_fraction")].iloc[0]
    assert copier.n_generated == 200 and copier.n_reference == 1437 and copier.reference_split == "train"
    assert copier["extra.n_test"] == 360 and copier["extra.threshold"] > 0
    assert Image.open(grid).size[0] > 0


def test_samples_command_writes_records_and_grid(tmp_path, digits_cfg):
    """A sample folder whose images are noisy training digits: pixel records (pixels only here),
    protocol fields from sample.json, a PNG of the closest pairs."""
    from mtdiff.evaluate_memorization import memorization_of_samples
    from mtdiff.train import load_split
    from mtdiff.viz import to_uint8

    train = load_split(digits_cfg, "train", in_memory=True).images
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(digits_cfg.to_yaml())
    folder = tmp_path / "samples"
    folder.mkdir()
    images = to_uint8(train[:100] + 0.02 * torch.randn(100, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    np.savez(folder / "samples.npz", images=images.numpy())
    meta = {"run": str(run), "model": "ddpm", "dataset": "digits", "train_seed": 2, "checkpoint_step": 10,
            "ema": True, "sampler": "ddim", "nfe": 25, "eta": 0.0, "seed": 0, "condition": "none"}
    (folder / "sample.json").write_text(json.dumps(meta))
    out, grid = tmp_path / "m.jsonl", tmp_path / "m.png"
    memorization_of_samples(folder, out, grid=grid, features=False, grid_pairs=4)
    df = read_records(out)
    assert sorted(df.metric) == ["memorized_fraction", "nn_distance_ratio"]
    assert df.extractor.isna().all() and (df.seed == 2).all() and (df.n_generated == 100).all()
    assert df.set_index("metric").loc["memorized_fraction", "value"] == 1.0  # near-copies
    # 4 pairs in one row: 8 cells of 48 px (8x8 digits scaled x6) with 2 px padding
    assert Image.open(grid).size == (8 * 50 + 2, 50 + 12 + 2)
    with pytest.raises(ConfigError, match="--percentile=0"):
        memorization_of_samples(folder, out, percentile=0, features=False)
    with pytest.raises(ConfigError, match="--grid-pairs=0"):
        memorization_of_samples(folder, out, grid=grid, grid_pairs=0, features=False)


def test_tiny_workflow_plans_a_check_per_generated_set_and_the_anchors(tmp_path):
    """Dry run of the CI config: one memorization job per diffusion model and seed (the FID's
    samples), one anchors job; their records and grids are inputs of the report."""
    from test_workflow import _planned, snakemake, tiny_config

    config = tiny_config(tmp_path, seeds=[0, 1])
    res = snakemake(tmp_path, config, "-n", "-p")
    plan = _planned(res)
    assert plan["memorization"] == 8 and plan["memorization_anchors"] == 1, plan  # ddpm, mt_label, mt_mask, mt_all
    out = res.stdout
    for model in ("ddpm", "mt_label", "mt_mask", "mt_all"):
        for seed in (0, 1):
            assert f"samples/{model}/seed{seed} " in out and f"metrics/memo_{model}_seed{seed}.png" in out
    assert "memo_classifier" not in out and "memo_segmenter" not in out
    assert "evaluate memorization-anchors" in out and "metrics/memo_anchors.png" in out
    report_job = out.split("rule report_tables:", 1)[1].split("rule ", 1)[0]
    assert "memo_anchors.jsonl" in report_job and "memo_mt_all_seed1.png" in report_job


def test_cli_anchors_pixels_only_and_a_bad_option(tmp_path, capsys):
    from mtdiff.cli import main

    config = str(ROOT / "config" / "runs" / "digits.yaml")
    out = tmp_path / "a.jsonl"
    assert main(["evaluate", "memorization-anchors", "--config", config, "--set", "eval.num_samples=50",
                 "--pixels-only", "--seed", "3", "--out", str(out)]) == 0
    df = read_records(out)
    assert len(df) == 4 and df.extractor.isna().all() and set(df.model) == {"real_floor", "copier"}
    assert (df.loc[df.model == "copier", "n_generated"] == 50).all()
    assert main(["evaluate", "memorization-anchors", "--config", config, "--pixels-only", "--percentile", "100",
                 "--out", str(out)]) == 2
    assert "--percentile=100.0 is not accepted" in capsys.readouterr().err
