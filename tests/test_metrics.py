"""Tests of mtdiff.metrics: domain extractor, FID/KID through torch-fidelity, task metrics, records.

One tiny domain extractor is trained per module (about 10 s on 2 shared cores); everything
runs offline on CPU.
"""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mtdiff.errors import CheckpointError, ConfigError, MtdiffError
from mtdiff.metrics.records import iter_records, metric_record, ran_with
from mtdiff.metrics import (
    DOMAIN_EXTRACTOR_NAME,
    PROTOCOL_FIELDS,
    ChecksumError,
    DomainClassifier,
    MetricRecord,
    RecordError,
    append_records,
    classification_metrics,
    file_sha256,
    gaussian_baseline,
    generation_metrics,
    load_domain_classifier,
    read_records,
    records_to_csv,
    register_domain_extractor,
    segmentation_metrics,
    to_uint8_images,
    train_domain_extractor,
)


def _digits():
    """digits train/test as float (N,1,16,16) in [-1, 1] plus labels (mtdiff.data when available)."""
    try:
        from mtdiff.data import load_dataset
    except ImportError:
        load_dataset = None
    if load_dataset is not None:
        tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
        return tr.images, tr.labels, te.images, te.labels
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = F.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, size=(16, 16),
                      mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round() / 127.5 - 1.0
    y = torch.tensor(d.target, dtype=torch.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=360, stratify=d.target, random_state=0)
    return x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="module")
def digits():
    return _digits()


@pytest.fixture(scope="module")
def weights(tmp_path_factory, digits):
    xtr, ytr, xte, yte = digits
    path = tmp_path_factory.mktemp("extractor") / "digits_domain.pt"
    meta = train_domain_extractor(xtr, ytr, num_classes=10, out_path=path, steps=120, batch_size=64,
                                  dataset="digits", val_images=xte, val_labels=yte)
    assert meta["val_accuracy"] > 0.9, meta
    return path


def _fid(a, b, weights, **kw):
    return generation_metrics(a, b, weights_path=weights, metrics=("fid",), **kw)["fid"]


# --------------------------------------------------------------------------------------------
# extractor


def test_checkpoint_contents(weights):
    model, meta = load_domain_classifier(weights)
    ckpt = torch.load(weights, weights_only=True)
    assert set(ckpt) == {"state_dict", "meta"}
    for key in ("in_channels", "image_size", "num_classes", "feature_dim", "seed", "steps", "train_accuracy", "dataset"):
        assert key in meta
    assert (meta["in_channels"], meta["image_size"], meta["num_classes"], meta["feature_dim"]) == (1, 16, 10, 128)
    feats, logits = model(torch.zeros(3, 1, 16, 16, dtype=torch.uint8))
    assert feats.shape == (3, 128) and logits.shape == (3, 10)
    assert not any(p.name.endswith(".tmp") for p in weights.parent.iterdir())


def test_training_is_deterministic_and_leaves_global_rng(tmp_path, digits):
    xtr, ytr = digits[0][:256], digits[1][:256]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    m1 = train_domain_extractor(xtr, ytr, num_classes=10, out_path=tmp_path / "a.pt", steps=5, batch_size=32)
    after = torch.rand(1)
    assert torch.equal(before, after)
    m2 = train_domain_extractor(xtr, ytr, num_classes=10, out_path=tmp_path / "b.pt", steps=5, batch_size=32)
    sa, sb = torch.load(tmp_path / "a.pt")["state_dict"], torch.load(tmp_path / "b.pt")["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert m1["train_accuracy"] == m2["train_accuracy"]


def test_training_input_errors(tmp_path, digits):
    xtr, ytr = digits[0][:64], digits[1][:64]
    with pytest.raises(ConfigError, match="num_classes"):
        train_domain_extractor(xtr, ytr, num_classes=5, out_path=tmp_path / "x.pt", steps=1)
    with pytest.raises(ConfigError, match="labels"):
        train_domain_extractor(xtr, ytr[:10], num_classes=10, out_path=tmp_path / "x.pt", steps=1)


def test_corrupt_weights_raise_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_domain_classifier(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_domain_classifier(tmp_path / "missing.pt")


def test_classifier_refuses_other_sizes():
    model = DomainClassifier(1, 16, 10)
    with pytest.raises(ConfigError, match="trained shape"):
        model(torch.zeros(2, 1, 8, 8))


def test_registration_is_idempotent_and_runs_offline(weights, digits, monkeypatch):
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    register_domain_extractor()
    register_domain_extractor()
    assert DOMAIN_EXTRACTOR_NAME in FEATURE_EXTRACTORS_REGISTRY

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    out = generation_metrics(digits[2][:100], digits[2][100:200], weights_path=weights, metrics=("fid", "kid", "isc"),
                             prc=True, kid_subsets=10)
    assert set(out) == {"fid", "kid_mean", "kid_std", "precision", "recall", "isc_mean", "isc_std"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert 0 <= out["precision"] <= 1 and 0 <= out["recall"] <= 1


# --------------------------------------------------------------------------------------------
# generation metrics


def test_uint8_conversion():
    x = torch.tensor([-1.0, -0.999, 0.0, 1.0, 1.2]).view(1, 1, 1, 5)
    assert to_uint8_images(x).flatten().tolist() == [0, 0, 128, 255, 255]
    u = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(to_uint8_images(u.numpy()), u)
    with pytest.raises(ConfigError, match="NaN"):
        to_uint8_images(torch.full((2, 1, 4, 4), float("nan")))
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        to_uint8_images(torch.full((2, 1, 4, 4), 200.0))
    with pytest.raises(ConfigError, match="channels"):
        to_uint8_images(torch.zeros(2, 2, 4, 4))


def test_self_distance_is_zero(weights, digits):
    x = digits[2]
    out = generation_metrics(x, x, weights_path=weights, kid_subsets=20)
    far = generation_metrics(gaussian_baseline(digits[0], 360, seed=0), x, weights_path=weights, kid_subsets=20)
    assert abs(out["fid"]) < 1e-6
    # unbiased KID of a set against itself is slightly negative (the k(x, x) terms), ~0 at the scale of a bad set
    assert abs(out["kid_mean"]) < 1e-3 * far["kid_mean"]


def test_fid_grows_with_noise(weights, digits):
    xtr, _, xte, _ = digits
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(xte.shape, generator=g)
    fids = [_fid((xte + s * noise).clamp(-1, 1), xtr, weights) for s in (0.0, 0.1, 0.25, 0.5, 1.0)]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


def test_fid_grows_with_blur(weights, digits):
    from torchvision.transforms.functional import gaussian_blur

    xtr, _, xte, _ = digits
    fids = [_fid(xte, xtr, weights)] + [_fid(gaussian_blur(xte, [7, 7], [s, s]), xtr, weights) for s in (0.6, 1.0, 1.6, 3.0)]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids


def test_batch_size_does_not_change_fid(weights, digits):
    a, b = digits[0][:400], digits[2]
    f50, f200 = _fid(a, b, weights, batch_size=50), _fid(a, b, weights, batch_size=200)
    assert abs(f50 - f200) <= 1e-4 * abs(f200)


def test_real_floor_far_below_gaussian_baseline(weights, digits):
    xtr, _, xte, _ = digits
    floor = _fid(xtr, xte, weights)
    bad = _fid(gaussian_baseline(xtr, len(xtr), seed=0), xte, weights)
    assert 0 <= floor and bad > 20 * floor, (floor, bad)


def test_gaussian_baseline_statistics(digits):
    x = digits[0]
    a, b = gaussian_baseline(x, 500, seed=1), gaussian_baseline(x, 500, seed=1)
    assert a.dtype == torch.uint8 and a.shape == (500, 1, 16, 16) and torch.equal(a, b)
    assert not torch.equal(a, gaussian_baseline(x, 500, seed=2))
    ref_mean = to_uint8_images(x).double().mean(0)
    assert (a.double().mean(0) - ref_mean).abs().mean() < 10


def test_kid_subset_size_is_clipped(weights, digits):
    out = generation_metrics(digits[2][:30], digits[0][:50], weights_path=weights, metrics=("kid",),
                             kid_subset_size=1000, kid_subsets=5)
    assert math.isfinite(out["kid_mean"])


def test_too_few_samples(weights, digits):
    with pytest.raises(ConfigError, match="at least 2"):
        generation_metrics(digits[2][:1], digits[0][:50], weights_path=weights)
    with pytest.raises(ConfigError, match="kid_subset_size"):
        generation_metrics(digits[2][:10], digits[0][:50], weights_path=weights, kid_subset_size=1)


def test_empty_input(weights, digits):
    with pytest.raises(ConfigError, match="empty"):
        generation_metrics(torch.zeros(0, 1, 16, 16), digits[0][:50], weights_path=weights)


def test_mismatched_sizes(weights, digits):
    small = F.avg_pool2d(digits[2][:20], 2)
    with pytest.raises(ConfigError, match=r"\(20, 1, 8, 8\).*\(50, 1, 16, 16\)"):
        generation_metrics(small, digits[0][:50], weights_path=weights)
    with pytest.raises(ConfigError, match="trained on 1x16x16"):
        generation_metrics(small, small, weights_path=weights)
    rgb = digits[2][:20].repeat(1, 3, 1, 1)
    with pytest.raises(ConfigError, match="trained on"):
        generation_metrics(rgb, rgb, weights_path=weights)


def test_bad_options(weights, digits):
    x = digits[2][:20]
    with pytest.raises(ConfigError, match="extractor"):
        generation_metrics(x, x, extractor="clip", weights_path=weights)
    with pytest.raises(ConfigError, match="metrics"):
        generation_metrics(x, x, weights_path=weights, metrics=("ppl",))
    with pytest.raises(ConfigError, match="device"):
        generation_metrics(x, x, weights_path=weights, device="gpu")
    with pytest.raises(ConfigError, match="feature_extractor_weights_path"):
        generation_metrics(x, x, weights_path=None)


def test_inception_without_weights_never_downloads(tmp_path, digits, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("download attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    x = digits[2][:20]
    with pytest.raises(ConfigError, match="feature_extractor_weights_path") as e:
        generation_metrics(x, x, extractor="inception")
    assert "weights-inception-2015-12-05-6726825d.pth" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="does not exist"):
        generation_metrics(x, x, extractor="inception", weights_path=tmp_path / "pt_inception.pth")
    fake = tmp_path / "fake.pth"
    torch.save({"a": torch.zeros(1)}, fake)
    with pytest.raises(CheckpointError, match="Inception"):
        generation_metrics(x, x, extractor="inception", weights_path=fake)


def test_checksum(weights, digits):
    x = digits[2][:20]
    good = file_sha256(weights)
    out = generation_metrics(x, x, weights_path=weights, metrics=("fid",), expected_sha256=good)
    assert abs(out["fid"]) < 1e-3  # 20 samples < 128 dims: rank-deficient covariances, ~1e-6 round-off
    generation_metrics(x, x, weights_path=weights, metrics=("fid",), expected_sha256=good[:12].upper())
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as e:
        generation_metrics(x, x, weights_path=weights, expected_sha256=wrong)
    assert good in str(e.value) and wrong in str(e.value)
    assert isinstance(e.value, MtdiffError)
    with pytest.raises(ConfigError, match="expected_sha256"):
        generation_metrics(x, x, weights_path=weights, expected_sha256="xyz")


def test_reference_cache(tmp_path, weights, digits):
    a, ref = digits[2][:100], digits[0][:300]
    first = generation_metrics(a, ref, weights_path=weights, kid_subsets=5, cache_dir=tmp_path, reference_cache_name="digits-train")
    files = sorted(p.name for p in tmp_path.iterdir())
    sha = file_sha256(weights)[:16]
    assert files and all(f.startswith(f"digits-train-domain-w{sha}-d") for f in files), files
    second = generation_metrics(a, ref, weights_path=weights, kid_subsets=5, cache_dir=tmp_path, reference_cache_name="digits-train")
    assert first == second
    # another reference set under the same label gets its own cache entry
    third = generation_metrics(a, digits[0][300:600], weights_path=weights, metrics=("fid",), cache_dir=tmp_path,
                               reference_cache_name="digits-train")
    assert third["fid"] != first["fid"]
    with pytest.raises(ConfigError, match="reference_cache_name"):
        generation_metrics(a, ref, weights_path=weights, cache_dir=tmp_path, reference_cache_name="a/b")


@pytest.mark.slow
def test_default_recipe_reaches_95_percent(tmp_path, digits):
    xtr, ytr, xte, yte = digits
    meta = train_domain_extractor(xtr, ytr, num_classes=10, out_path=tmp_path / "d.pt", val_images=xte, val_labels=yte)
    assert meta["val_accuracy"] > 0.95, meta


# --------------------------------------------------------------------------------------------
# task metrics


def test_classification_metrics_by_hand():
    out = classification_metrics([0, 0, 1, 1, 2], np.array([0, 1, 1, 1, 0]), num_classes=4)
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["per_class_accuracy"] == [0.5, 1.0, 0.0, None]
    assert out["mean_per_class_accuracy"] == pytest.approx(0.5)
    assert out["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    json.dumps(out)
    with pytest.raises(ConfigError, match="shape"):
        classification_metrics([0, 1], [0], num_classes=2)
    with pytest.raises(ConfigError, match="num_classes=2"):
        classification_metrics([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ConfigError, match="empty"):
        classification_metrics([], [], num_classes=2)


def test_segmentation_metrics_by_hand():
    t = torch.tensor([[[0, 1], [1, 1]]])
    p = torch.tensor([[[0, 1], [0, 1]]])
    out = segmentation_metrics(t, p, num_classes=3)
    # class 0: |{(0,0)}| / |{(0,0),(1,0)}| = 1/2; class 1: 2/3; class 2 absent from both -> excluded
    assert out["per_class_iou"] == [pytest.approx(0.5), pytest.approx(2 / 3), None]
    assert out["mean_iou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert out["pixel_accuracy"] == pytest.approx(0.75)
    assert out["n_classes_counted"] == 2
    fg = segmentation_metrics(t, p, num_classes=3, ignore_background=True)
    assert fg["mean_iou"] == pytest.approx(2 / 3) and fg["pixel_accuracy"] == pytest.approx(0.75)
    # a class present only in the prediction has IoU 0 and counts
    out2 = segmentation_metrics(np.zeros((1, 2, 2), int), np.array([[[0, 2], [0, 0]]]), num_classes=3)
    assert out2["per_class_iou"] == [pytest.approx(0.75), None, 0.0]
    assert out2["mean_iou"] == pytest.approx(0.375)
    # nothing left to average
    empty = segmentation_metrics(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int), num_classes=2, ignore_background=True)
    assert empty["mean_iou"] is None and empty["pixel_accuracy"] == 1.0
    json.dumps(out)
    with pytest.raises(ConfigError, match=r"\(1, 2, 2\).*\(2, 2\)"):
        segmentation_metrics(t, p[0], num_classes=3)


# --------------------------------------------------------------------------------------------
# records


def _record(**over):
    d = dict(dataset="digits", model="mt-diffusion", seed=0, checkpoint_step=1000, ema=True, sampler="ddim",
             nfe=50, n_generated=1000, reference_split="test", n_reference=360, extractor="mtdiff-domain",
             metric="fid", value=12.5, wall_time_s=3.2, precision="bf16", device="cuda",
             extra={"condition": "label", "t_infer": 0.3})
    d.update(over)
    return d


def test_metric_record_builder_states_precision_and_device():
    rec = metric_record(dataset="digits", model="ddpm", seed=0, metric="fid", value=3.0, wall_time_s=1.0,
                        precision="bf16", device="cuda:1", nfe=25)
    assert list(rec) == list(PROTOCOL_FIELDS) + ["extra"]
    assert rec["precision"] == "bf16" and rec["device"] == "cuda" and rec["nfe"] == 25 and rec["sampler"] is None
    anchor = metric_record(dataset="digits", model="real_floor", seed=0, metric="fid", value=1.0, wall_time_s=1.0,
                           precision=None, device=None)
    assert anchor["precision"] is None and anchor["device"] is None
    with pytest.raises(TypeError, match="precision"):  # a writer cannot leave them out
        metric_record(dataset="digits", model="ddpm", seed=0, metric="fid", value=3.0, wall_time_s=1.0, device="cpu")
    with pytest.raises(RecordError, match="precision='fp64'.*fp32, bf16, fp16"):
        metric_record(dataset="digits", model="ddpm", seed=0, metric="fid", value=3.0, wall_time_s=1.0,
                      precision="fp64", device="cpu")
    with pytest.raises(RecordError, match="device='tpu'"):
        metric_record(dataset="digits", model="ddpm", seed=0, metric="fid", value=3.0, wall_time_s=1.0,
                      precision="fp32", device="tpu")
    assert ran_with({"precision": "fp16", "device": "cuda:0", "seed": 3}) == {"precision": "fp16", "device": "cuda"}
    assert ran_with({"device": "cpu"}) == {"precision": None, "device": "cpu"}  # sample.json of before


def test_records_written_before_precision_and_device_still_load(tmp_path):
    """Files of earlier runs have neither field: they read as null; a record written now needs both."""
    old = _record()
    del old["precision"], old["device"]
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(old) + "\n")
    append_records(path, _record(metric="kid_mean"))  # a new record in the same file
    df = read_records(path)
    assert pd.isna(df.loc[0, "precision"]) and pd.isna(df.loc[0, "device"])
    assert [r.precision for r in iter_records(path)] == [None, "bf16"]
    assert df.loc[1, "precision"] == "bf16" and df.loc[1, "device"] == "cuda"
    with pytest.raises(RecordError, match="precision"):
        append_records(tmp_path / "new.jsonl", old)


def test_records_round_trip(tmp_path):
    path = tmp_path / "deep" / "m.jsonl"
    append_records(path, [MetricRecord(**_record()), _record(metric="kid_mean", value=0.01, extra={})])
    append_records(path, _record(seed=1, value=float("nan"), checkpoint_step=None, sampler=None, nfe=None))
    df = read_records([path])
    assert list(df.columns[: len(PROTOCOL_FIELDS)]) == list(PROTOCOL_FIELDS)
    assert len(df) == 3 and df["metric"].tolist() == ["fid", "kid_mean", "fid"]
    assert df.loc[0, "value"] == 12.5 and df.loc[0, "extra.condition"] == "label"
    assert pd.isna(df.loc[2, "value"]) and pd.isna(df.loc[2, "checkpoint_step"])
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["value"] is None
    csv = records_to_csv(path, tmp_path / "out" / "m.csv")
    back = pd.read_csv(tmp_path / "out" / "m.csv")
    assert len(back) == len(csv) == 3 and back.loc[1, "value"] == pytest.approx(0.01)


def test_record_missing_field_rejected(tmp_path):
    bad = _record()
    del bad["nfe"]
    with pytest.raises(RecordError, match="nfe"):
        append_records(tmp_path / "m.jsonl", [_record(), bad])
    assert not (tmp_path / "m.jsonl").exists()  # nothing written when any record is invalid
    with pytest.raises(RecordError, match="unknown field"):
        append_records(tmp_path / "m.jsonl", _record(foo=1))
    with pytest.raises(RecordError, match="ema"):
        MetricRecord(**_record(ema="yes"))


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    append_records(path, _record())
    with open(path, "a") as f:
        f.write('{"dataset": "digits", \n')
    with pytest.raises(RecordError, match=r"m\.jsonl:2: malformed JSON"):
        read_records(path)
    other = tmp_path / "n.jsonl"
    rec = _record()
    del rec["seed"]
    other.write_text("\n" + json.dumps(_record()) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(RecordError, match=r"n\.jsonl:3: .*'seed'"):
        read_records([other])
    # appending after a truncated line starts on a fresh line
    trunc = tmp_path / "t.jsonl"
    trunc.write_text(json.dumps(_record())[:20])
    append_records(trunc, _record())
    assert json.loads(trunc.read_text().splitlines()[1])["metric"] == "fid"


@pytest.mark.slow
def test_inception_route_with_local_weights(tmp_path, digits, monkeypatch):
    """The inception route with a local (randomly initialised) weights file: wiring only, no download."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe_inc

    with monkeypatch.context() as m:  # build a random Inception without loading or downloading anything
        m.setattr(fe_inc, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(fe_inc.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        net = fe_inc.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "random-inception.pth"
    torch.save(net.state_dict(), path)

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(fe_inc, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    x = digits[2][:4]
    with pytest.warns(UserWarning, match="6726825d"):
        out = generation_metrics(x, x, extractor="inception", weights_path=path, metrics=("fid", "kid"))
    assert abs(out["fid"]) < 1e-3 and math.isfinite(out["kid_mean"])
