"""The representation modality (mtdiff.modalities.RepresentationModality, model mt_repr) and
its evaluation (mtdiff.evaluate_representation)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mtdiff.config import ModalityConfig, load_config
from mtdiff.errors import ConfigError
from mtdiff.evaluate_representation import cosine_agreement
from mtdiff.metrics.extractor import DomainClassifier, save_domain_classifier
from mtdiff.modalities import RepresentationModality
from mtdiff.models import build_diffusion, build_model

INFO = SimpleNamespace(channels=1, image_size=8, num_classes=10, num_mask_classes=11)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """One torch thread for the whole module (conftest.one_torch_thread)."""


@pytest.fixture()
def extractor_file(tmp_path):
    torch.manual_seed(0)
    ext = DomainClassifier(1, 8, 10, widths=(8, 16))
    path = tmp_path / "domain.pt"
    save_domain_classifier(ext, {"in_channels": 1, "image_size": 8, "num_classes": 10, "widths": [8, 16]}, path)
    return path


def _mod(path):
    return RepresentationModality(ModalityConfig(encoder="linear", extractor_path=str(path)), INFO, 8, 16)


def _images(n=6):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_value_is_the_extractors_features_and_encoding_is_image_shaped_unit_rms(extractor_file):
    mod = _mod(extractor_file)
    x = _images()
    value = mod.training_value({"image": x})
    ext_feats = mod._extractor(x)[0]
    assert value.shape == (6, 16)
    assert torch.allclose(F.cosine_similarity(value, ext_feats, dim=1), torch.ones(6), atol=1e-5)
    assert torch.allclose(value.pow(2).mean(1), torch.ones(6), atol=1e-5)
    e = mod.encode(value)
    assert e.shape == (6, 1, 8, 8)
    assert torch.allclose(e.pow(2).mean(dim=(1, 2, 3)), torch.ones(6), atol=1e-5)
    assert not torch.allclose(e[0], e[1])  # different images, different encodings
    assert torch.equal(_mod(extractor_file).projection, mod.projection)  # fixed, seeded map


def test_head_loss_is_mse_and_trains_only_the_model(extractor_file):
    cfg = load_config(None, {"model": "mt_repr", "diffusion": {"num_steps": 50}, "data": {"image_size": 8},
                             "net": {"model_channels": 8, "head_channels": 8, "label_head_hidden": 16,
                                     "attention_resolutions": [4]},
                             "modalities": {"representation": {"extractor_path": str(extractor_file)}}})
    model, diffusion = build_model(cfg, INFO), build_diffusion(cfg)
    mod = model.modalities["representation"]
    with torch.no_grad():
        preds = model(_images(2), torch.tensor([1, 50]))
    assert preds["image"].shape == (2, 1, 8, 8) and preds["representation"].shape == (2, 16)
    pred, value = torch.randn(4, 16), torch.randn(4, 16)
    assert mod.loss(pred, value).item() == pytest.approx(((pred - value) ** 2).mean().item(), rel=1e-6)
    model.train()
    assert not mod._extractor.training  # the fixed extractor keeps its running statistics
    total, terms = model.loss({"image": _images(8)}, diffusion, torch.Generator().manual_seed(0))
    assert set(terms) == {"image", "representation"} and torch.isfinite(total)
    total.backward()
    assert mod.mlp[0].weight.grad is not None
    assert all(p.grad is None for p in mod._extractor.parameters())
    assert not any(k.startswith("modalities.representation._extractor") for k in model.state_dict())


def test_missing_or_mismatched_extractor_is_refused_in_one_line(tmp_path, extractor_file):
    for path, match in ((None, "extractor_path is not set"), (tmp_path / "nope.pt", "not found")):
        with pytest.raises(ConfigError, match=match) as e:
            RepresentationModality(ModalityConfig(encoder="linear", extractor_path=path and str(path)), INFO, 8, 16)
        assert "\n" not in str(e.value) and "modalities.representation.extractor_path" in str(e.value)
    big = SimpleNamespace(channels=1, image_size=16, num_classes=10, num_mask_classes=11)
    with pytest.raises(ConfigError, match="trained on 1x8x8"):
        RepresentationModality(ModalityConfig(encoder="linear", extractor_path=str(extractor_file)), big, 8, 16)


def test_cosine_agreement_paired_and_shuffled():
    f = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    v = cosine_agreement(f * 3.0, f)
    assert v["repr_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert abs(v["repr_cosine_shuffled"]) < 0.3  # independent directions in 16-d
    with pytest.raises(ConfigError, match="must be"):
        cosine_agreement(f, f[:10])
