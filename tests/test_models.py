"""Models, heads, the multi-task loss, samplers and inference (docs/method.md, eqs. 6-12).

Tiny networks (model_channels 16) on tiny batches; the whole file runs in well under a minute
on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mtdiff import samplers
from mtdiff import config as config_module
from mtdiff.config import ModalityConfig
from mtdiff.models import load_run_config as load_config  # field and registry checks, as the CLI does
from mtdiff.diffusion import Diffusion
from mtdiff.errors import ConfigError
from mtdiff.modalities import LabelModality, MaskModality
from mtdiff.models import MODELS, Classifier, ModelSpec, MTDiffusion, Segmenter, build_diffusion, build_model

from conftest import assert_max_abs_close

pytestmark = pytest.mark.usefixtures("one_torch_thread")


T = 50  # diffusion steps of the tiny test models (sample.steps must stay <= T)


def _net(size: int) -> dict:
    return {
        "model_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_resolutions": [size // 2], "head_channels": 16, "label_head_hidden": 32,
    }


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _cfg(model: str, size: int = 16, **extra):
    base = {"model": model, "diffusion": {"num_steps": T}, "net": _net(size), "sample": {"steps": 10}}
    # field checks only: the network is shaped for `size`, not for the config's dataset
    return config_module.load_config(None, _merge(base, extra))


def _info(channels=1, size=16, classes=10, mask_classes=11):
    return SimpleNamespace(channels=channels, image_size=size, num_classes=classes, num_mask_classes=mask_classes)


def _batch(n=8, channels=1, size=16, classes=10, mask_classes=11, seed=0) -> dict:
    """Smooth random images in [-1, 1], labels 0..n-1 mod K, masks = label + 1 on bright pixels."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, channels, size // 4, size // 4, generator=g)
    images = torch.tanh(F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False))
    labels = torch.arange(n) % classes
    fg = (labels % (mask_classes - 1) + 1)[:, None, None]
    masks = torch.where(images[:, 0] > 0, fg, torch.zeros_like(fg))
    return {"image": images, "label": labels, "mask": masks}


def _perturb(model: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Add seeded noise to every parameter: the zero-initialised output convs make an untrained
    model's outputs exactly 0, which would make equality tests vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def _model(name: str, size=16, channels=1, classes=10, mask_classes=11, seed=0, **extra):
    cfg = _cfg(name, size, **extra)
    torch.manual_seed(seed)
    model = build_model(cfg, _info(channels, size, classes, mask_classes))
    return cfg, model, build_diffusion(cfg)


# ---------------------------------------------------------------------------------------------
# heads: shapes for every model kind at three dataset geometries (eq. 8)

GEOMETRIES = [(1, 16, 10, 11), (3, 32, 3, 4), (1, 28, 10, 11)]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"C{g[0]}H{g[1]}")
def test_every_head_has_the_right_shape(geometry):
    C, H, K, KM = geometry
    batch = _batch(2, C, H, K, KM)
    x = batch["image"]
    t = torch.tensor([1, T])
    for name, spec in MODELS.items():
        if "representation" in spec.modalities:  # needs an extractor file: tests/test_representation.py
            continue
        cfg, model, diffusion = _model(name, H, C, K, KM)
        assert model.kind == spec.kind
        with torch.no_grad():
            if spec.kind == "classifier":
                assert isinstance(model, Classifier)
                assert model(x).shape == (2, K)
            elif spec.kind == "segmenter":
                assert isinstance(model, Segmenter)
                assert model(x).shape == (2, KM, H, H)
            else:
                preds = model(x, t, batch["label"])
                expected = {"image": (2, C, H, H), "label": (2, K), "mask": (2, KM, H, H), "masked_image": (2, C, H, H)}
                assert set(preds) == {"image", *spec.modalities}, name
                for key, value in preds.items():
                    assert value.shape == expected[key], (name, key)
            total, terms = model.loss(batch, diffusion, torch.Generator().manual_seed(0))
        assert torch.isfinite(total)
        assert set(terms) == ({"image", *spec.modalities} if spec.kind == "diffusion" else
                              {"label"} if spec.kind == "classifier" else {"mask"})


def test_label_head_reads_pooled_middle_and_mask_head_reads_last_features():
    _, model, _ = _model("mt_all")
    out = model.unet(torch.zeros(2, 1, 16, 16), torch.tensor([3, 4]))
    assert out.middle.shape == (2, model.unet.middle_channels, 8, 8)
    assert out.features.shape == (2, model.unet.feature_channels, 16, 16)
    # the label head sees the middle features only through their spatial mean (global pooling)
    r = torch.randn(out.middle.shape, generator=torch.Generator().manual_seed(0))
    same_mean = dataclasses.replace(out, middle=out.middle + r - r.mean((2, 3), keepdim=True))
    other_mean = dataclasses.replace(out, middle=out.middle + r)
    head = model.modalities["label"].head
    with torch.no_grad():
        assert_max_abs_close(head(same_mean), head(out), atol=1e-5)
        assert float((head(other_mean) - head(out)).abs().max()) > 1e-4
    # the mask head is a conv on the full-resolution decoder features
    assert model.modalities["mask"].head(out).shape == (2, 11, 16, 16)


# ---------------------------------------------------------------------------------------------
# encoders (eq. 1's E_i) and expected encodings (eq. 10)


def test_label_encoders_unit_rms_fixed_frozen_learned_renormalised():
    info = _info(3, 16, 5)
    fixed = LabelModality(ModalityConfig(encoder="fixed"), info, 16, 32)
    learned = LabelModality(ModalityConfig(encoder="learned"), info, 16, 32)
    assert "patterns" in dict(fixed.named_buffers()) and "patterns" not in dict(fixed.named_parameters())
    assert "patterns" in dict(learned.named_parameters())
    assert_max_abs_close(fixed.codebook(), learned.codebook(), atol=0)  # same seeded initialisation
    with torch.no_grad():
        learned.patterns.mul_(torch.tensor([100.0, 1e-3, 1, 1, 1]).view(5, 1, 1, 1))
    for mod in (fixed, learned):
        rms = mod.codebook().pow(2).mean((1, 2, 3)).sqrt()
        assert_max_abs_close(rms, torch.ones(5), atol=1e-5)
        e = mod.encode(torch.tensor([0, 4, 2]))
        assert e.shape == (3, 3, 16, 16)
        assert_max_abs_close(e.pow(2).mean((1, 2, 3)).sqrt(), torch.ones(3), atol=1e-5)


def test_expected_encodings_and_priors():
    info = _info(1, 16, 10, 11)
    label = LabelModality(ModalityConfig(), info, 16, 32)
    mask = MaskModality(ModalityConfig(), info, 16, 32)
    # a confident head gives back the encoding of its class
    ks = torch.tensor([2, 7])
    assert_max_abs_close(label.expected_encoding(F.one_hot(ks, 10).float() * 1e4), label.encode(ks), atol=1e-5)
    m = torch.randint(0, 11, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    assert_max_abs_close(mask.expected_encoding(F.one_hot(m, 11).permute(0, 3, 1, 2).float() * 1e4), mask.encode(m), atol=1e-5)
    # a uniform head gives the prior mean (eq. 11's stand-in for an unknown encoding)
    assert_max_abs_close(label.expected_encoding(torch.zeros(2, 10)), label.prior_encoding(2, "cpu"), atol=1e-6)
    assert_max_abs_close(mask.expected_encoding(torch.zeros(2, 11, 16, 16)), mask.prior_encoding(2, "cpu"), atol=1e-6)
    # palettes: unit RMS over the classes, distinct colours; 1 channel = evenly spaced grey levels
    colours = mask.colours()
    assert colours.shape == (11, 1)
    assert_max_abs_close(colours.pow(2).mean().sqrt().view(1), torch.ones(1), atol=1e-6)
    steps = colours.view(-1).sort().values.diff()
    assert_max_abs_close(steps, steps[:1].expand_as(steps), atol=1e-5)
    rgb = MaskModality(ModalityConfig(), _info(3, 16, 3, 4), 16, 32).colours()
    assert rgb.shape == (4, 3) and torch.cdist(rgb, rgb).add(torch.eye(4)).min() > 0.1


# ---------------------------------------------------------------------------------------------
# the loss (eq. 9): with no extra modality it is DDPM's L_simple, exactly


def test_ddpm_is_mtdiffusion_without_modalities():
    cfg, model, _ = _model("ddpm")
    assert type(model) is MTDiffusion and len(model.modalities) == 0 and not model.class_conditional
    _perturb(model)
    twin = MTDiffusion(cfg, _info(), ModelSpec("diffusion", ()))
    twin.load_state_dict(model.state_dict())
    x, t = _batch(4)["image"], torch.tensor([1, 10, 30, 50])
    with torch.no_grad():
        assert torch.equal(model(x, t)["image"], twin(x, t)["image"])


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddpm_loss_is_l_simple_by_hand(prediction):
    cfg, model, diffusion = _model("ddpm", diffusion={"prediction": prediction})
    _perturb(model)
    batch = _batch(6)
    z0 = batch["image"]
    torch.manual_seed(123)
    with torch.no_grad():
        total, terms = model.loss(batch, diffusion)
    torch.manual_seed(123)
    t = torch.randint(1, T + 1, (6,))
    noise = torch.randn(z0.shape)
    abar = diffusion.alpha_bars[t].float().view(-1, 1, 1, 1)
    zt = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
    target = noise if prediction == "eps" else abar.sqrt() * noise - (1 - abar).sqrt() * z0
    with torch.no_grad():
        expected = F.mse_loss(model.unet(zt, t).out, target)
    assert set(terms) == {"image"}
    assert float(total) == pytest.approx(float(expected), rel=1e-6, abs=1e-8)
    assert float(terms["image"]) == float(total)
    assert float(expected) > 0.1  # the perturbed net is far from perfect: the check has teeth


def test_mt_loss_reduces_to_ddpm_when_the_modality_is_switched_off():
    _, ddpm, diffusion = _model("ddpm")
    _perturb(ddpm)
    _, mt, mt_diffusion = _model(
        "mt_label", seed=1, modalities={"label": {"weight_scale": 1e-12, "loss_weight": 0.0}}
    )
    missing, unexpected = mt.load_state_dict(ddpm.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("modalities.label.") for k in missing)
    assert float(mt_diffusion.coeffs["label"].abs().max()) <= 1e-12
    batch = _batch(8)
    with torch.no_grad():
        torch.manual_seed(7)
        ref_total, ref_terms = ddpm.loss(batch, diffusion)
        torch.manual_seed(7)
        total, terms = mt.loss(batch, mt_diffusion)
    assert float(terms["image"]) == pytest.approx(float(ref_terms["image"]), rel=1e-6)
    assert float(total) == pytest.approx(float(ref_total), rel=1e-6)
    assert float(terms["label"]) > 0.5  # the head loss exists but carries weight 0


def test_mt_loss_adds_weighted_head_losses():
    _, model, diffusion = _model("mt_all", modalities={"label": {"loss_weight": 0.3}, "mask": {"loss_weight": 2.0}})
    _perturb(model)
    with torch.no_grad():
        total, terms = model.loss(_batch(4), diffusion, torch.Generator().manual_seed(0))
    assert float(total) == pytest.approx(float(terms["image"] + 0.3 * terms["label"] + 2.0 * terms["mask"]), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# training: every loss term falls on a tiny fixed batch


@pytest.mark.parametrize("name", ["mt_all", "classifier", "segmenter", "mt_masked"])
def test_overfits_a_tiny_batch(name):
    _, model, diffusion = _model(name)
    batch = _batch(8)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(25):
        # the same t, noise and hidden pixels at every step, so the losses are comparable
        total, terms = model.loss(batch, diffusion, torch.Generator().manual_seed(0))
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    for key in history[0]:
        first = sum(h[key] for h in history[:3]) / 3
        last = sum(h[key] for h in history[-3:]) / 3
        assert last < 0.8 * first, (name, key, first, last)


# ---------------------------------------------------------------------------------------------
# samplers (section "Samplers", eq. 6)


@pytest.fixture(scope="module")
def mt_all():
    _, model, diffusion = _model("mt_all")
    return _perturb(model.eval()), diffusion


@pytest.mark.parametrize("sampler,eta", [("ddpm", None), ("ddim", 0.0), ("ddim", 0.5)])
def test_samplers_return_valid_joint_samples(mt_all, sampler, eta):
    model, diffusion = mt_all
    kw = {} if eta is None else {"eta": eta}
    out = samplers.sample(model, diffusion, 3, sampler=sampler, steps=5, generator=torch.Generator().manual_seed(0), **kw)
    img = out["image"]
    assert img.shape == (3, 1, 16, 16) and torch.isfinite(img).all() and img.min() >= -1 and img.max() <= 1
    assert out["label"].shape == (3,) and 0 <= int(out["label"].min()) and int(out["label"].max()) < 10
    assert out["mask"].shape == (3, 16, 16) and 0 <= int(out["mask"].min()) and int(out["mask"].max()) < 11
    assert out["label_pred"].shape == (3, 10) and out["mask_pred"].shape == (3, 11, 16, 16)


def test_ddim_eta0_is_deterministic_given_the_seed(mt_all):
    model, diffusion = mt_all
    run = lambda seed: samplers.sample(  # noqa: E731
        model, diffusion, 2, sampler="ddim", eta=0.0, steps=4, generator=torch.Generator().manual_seed(seed)
    )
    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["image"], c["image"])


def test_conditional_generation_keeps_the_given_values(mt_all):
    model, diffusion = mt_all
    labels = torch.tensor([3, 1, 4])
    out = samplers.sample(model, diffusion, 3, steps=3, given={"label": labels}, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["label"], labels) and "label_pred" not in out and "mask_pred" in out
    mask = _batch(3)["mask"]
    out = samplers.sample(model, diffusion, 3, steps=3, given={"mask": mask}, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["mask"], mask) and "label_pred" in out
    with pytest.raises(ConfigError, match="masked_image"):
        samplers.sample(model, diffusion, 3, steps=3, given={"masked_image": torch.zeros(3, 1, 16, 16)})


def test_class_conditional_baseline_and_sampler_errors():
    _, model, diffusion = _model("ddpm_cond")
    labels = torch.tensor([0, 9])
    out = samplers.sample(model, diffusion, 2, steps=2, class_labels=labels)
    assert torch.equal(out["label"], labels) and out["image"].shape == (2, 1, 16, 16)
    with pytest.raises(ConfigError, match="class_labels"):
        samplers.sample(model, diffusion, 2, steps=2)
    with pytest.raises(ConfigError, match="ddim, ddpm"):
        samplers.sample(model, diffusion, 2, sampler="euler", class_labels=labels)
    with pytest.raises(ConfigError, match="sample.steps"):
        samplers.sample(model, diffusion, 2, steps=T + 1, class_labels=labels)


def test_timesteps_are_evenly_spaced_from_T_to_1():
    assert samplers.timesteps(1000, 1) == [1000]
    ts = samplers.timesteps(1000, 50)
    assert ts[0] == 1000 and ts[-1] == 1 and len(ts) == 50 and ts == sorted(ts, reverse=True)
    assert samplers.timesteps(8, 8) == list(range(8, 0, -1))


class _FakeModel(nn.Module):
    """Returns a fixed, t-dependent eps and fixed label logits; records every input z_t."""

    kind = "diffusion"
    class_conditional = False

    def __init__(self, label: LabelModality, eps: torch.Tensor, logits: torch.Tensor):
        super().__init__()
        self.modalities = nn.ModuleDict({"label": label})
        self.channels, self.image_size = eps.shape[1], eps.shape[2]
        self.eps, self.logits = eps, logits
        self.calls: list[tuple[torch.Tensor, int]] = []

    def forward(self, z, t, y=None):
        self.calls.append((z.clone(), int(t[0])))
        return {"image": self.eps * (1 + int(t[0]) / 4), "label": self.logits}


@pytest.mark.parametrize("clip_x0", [False, True])
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("schedule,num_steps", [("cosine", 8), ("linear", 40)])
def test_ancestral_step_is_the_posterior_of_eq6(clip_x0, conditional, schedule, num_steps):
    """eta = 1 on consecutive timesteps: every sampler step z_t -> z_{t-1} equals
    posterior-mean(z_t, z0_hat, t, e_hat) + sqrt(beta_tilde_t) xi with Diffusion.posterior, the
    sampler's own noise xi (replayed from the same generator seed) and e_hat = the head's
    expected encoding, or the true encoding when the label is given."""
    n, C, H = 2, 1, 8
    d = Diffusion(num_steps, schedule)
    d.add_modality("label", "noise_tied", 0.5)
    label = LabelModality(ModalityConfig(), _info(C, H, 4), 4, 4)
    g = torch.Generator().manual_seed(11)
    eps = torch.randn(n, C, H, H, generator=g) * (3.0 if clip_x0 else 0.5)
    logits = torch.randn(n, 4, generator=g)
    model = _FakeModel(label, eps, logits)
    given = {"label": torch.tensor([1, 3])} if conditional else None
    e = label.encode(given["label"]) if conditional else label.expected_encoding(logits)
    out = samplers.sample(model, d, n, sampler="ddpm", steps=num_steps, given=given, clip_x0=clip_x0,
                          generator=torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    z = torch.randn(n, C, H, H, generator=replay)
    assert [t for _, t in model.calls] == list(range(num_steps, 0, -1))
    clipped = False
    for z_in, t in model.calls:
        # float32 sampler vs float32 replay; without clipping z0_hat reaches ~1e3 (the fake eps
        # is not consistent with z_T), hence a relative tolerance
        assert_max_abs_close(z_in, z, atol=1e-5 * (1 + float(z.abs().max())))
        tt = torch.full((n,), t)
        z0_hat, _ = d.split_prediction(model.eps * (1 + t / 4), z_in, tt, d.aggregated_mean({"label": e}, tt, z_in))
        if clip_x0:
            clipped |= bool((z0_hat.abs() > 1).any())
            z0_hat = z0_hat.clamp(-1, 1)
        mean, var = d.posterior(z_in, z0_hat, tt, {"label": e})
        if t == 1:
            assert float(var.max()) == 0.0
            assert_max_abs_close(out["image"], mean.clamp(-1, 1), atol=1e-5)
        else:
            z = mean + var.sqrt() * torch.randn(n, C, H, H, generator=replay)
    assert clipped == clip_x0  # the clipped branch was really exercised
    if conditional:
        assert torch.equal(out["label"], given["label"])
    else:
        assert torch.equal(out["label"], logits.argmax(-1))


# ---------------------------------------------------------------------------------------------
# inference on real images (eqs. 11-12)


def test_predict_labels_with_head_and_elbo_procedures():
    _, model, diffusion = _model("mt_label")
    model = _perturb(model.eval())
    x = _batch(4)["image"]
    g = torch.Generator().manual_seed(0)
    probs = samplers.head_readout(model, diffusion, x, "label", t_infer=1, num_draws=2, generator=g)
    assert probs.shape == (4, 10)
    assert_max_abs_close(probs.sum(-1), torch.ones(4), atol=1e-5)
    for procedure in ("head", "elbo"):
        pred = samplers.predict(model, diffusion, x, "label", procedure=procedure, num_draws=2, elbo_timesteps=2, generator=g)
        assert pred.shape == (4,) and pred.dtype == torch.long and 0 <= int(pred.min()) and int(pred.max()) < 10
    scores = samplers.elbo_label_scores(model, diffusion, x, num_timesteps=2, generator=torch.Generator().manual_seed(1))
    assert scores.shape == (4, 10) and torch.isfinite(scores).all() and (scores > 0).all()
    # the candidates really differ (their encodings enter z_t), and argmin is what predict returns
    assert float(scores.std(-1).min()) > 0
    again = samplers.predict(model, diffusion, x, "label", procedure="elbo", elbo_timesteps=2, num_draws=1,
                             generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, scores.argmin(-1))


def test_elbo_procedure_uses_num_draws():
    _, model, diffusion = _model("mt_label")
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    x = _batch(2)["image"]
    samplers.predict(model, diffusion, x, "label", procedure="elbo", num_draws=3, elbo_timesteps=2)
    assert len(calls) == 10 * 2 * 3  # classes x timesteps x draws


def test_predict_masks_and_baselines():
    x = _batch(3)["image"]
    _, mt_mask, diffusion = _model("mt_mask")
    pred = samplers.predict(mt_mask.eval(), diffusion, x, "mask", num_draws=1)
    assert pred.shape == (3, 16, 16) and 0 <= int(pred.min()) and int(pred.max()) < 11
    with pytest.raises(ConfigError, match="elbo"):
        samplers.predict(mt_mask, diffusion, x, "mask", procedure="elbo")
    _, classifier, _ = _model("classifier")
    assert samplers.predict(classifier.eval(), None, x, "label").shape == (3,)
    _, segmenter, _ = _model("segmenter")
    assert samplers.predict(segmenter.eval(), None, x, "mask").shape == (3, 16, 16)
    with pytest.raises(ConfigError, match="classifier"):
        samplers.predict(classifier, None, x, "mask")
    with pytest.raises(ConfigError, match="segmenter"):
        samplers.predict(segmenter, None, x, "label")


def test_asking_for_a_missing_head_is_a_config_error():
    x = _batch(2)["image"]
    _, mt_label, diffusion = _model("mt_label")
    with pytest.raises(ConfigError, match="no 'mask' head"):
        samplers.predict(mt_label, diffusion, x, "mask")
    with pytest.raises(ConfigError, match="elbo, elbo_joint, head"):
        samplers.predict(mt_label, diffusion, x, "label", procedure="posterior")
    _, ddpm, diffusion = _model("ddpm")
    with pytest.raises(ConfigError, match="no 'label' head.*none"):
        samplers.predict(ddpm, diffusion, x, "label")


# ---------------------------------------------------------------------------------------------
# config errors reach the user before any training


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"'train\.lrr'.*did you mean train\.lr\?"):
        load_config(None, {"train": {"lrr": 1e-3}})
    with pytest.raises(ConfigError, match=r"'modle'.*did you mean model\?"):
        load_config(None, {"modle": "ddpm"})
    with pytest.raises(ConfigError, match=r"'modalities\.label\.weight_scal'.*did you mean modalities\.label\.weight_scale\?"):
        load_config(None, {"modalities": {"label": {"weight_scal": 0.1}}})
    with pytest.raises(ConfigError, match=r"modalities\.lable"):
        load_config(None, {"modalities": {"lable": {}}})


def test_wrong_type_names_the_dotted_key():
    with pytest.raises(ConfigError, match=r"train\.batch_size must be an integer"):
        load_config(None, {"train": {"batch_size": "big"}})
    with pytest.raises(ConfigError, match=r"net\.channel_mult\[1\] must be an integer"):
        load_config(None, {"net": {"channel_mult": [1, "x"]}})
    with pytest.raises(ConfigError, match=r"modalities\.mask\.weight_scale must be a number"):
        load_config(None, {"model": "mt_mask", "modalities": {"mask": {"weight_scale": "big"}}})
    with pytest.raises(ConfigError, match=r"sample\.clip_x0 must be true or false"):
        load_config(None, {"sample": {"clip_x0": "yes"}})


@pytest.mark.parametrize(
    "override,accepted",
    [
        ({"model": "mt_clip"}, "classifier, ddpm, ddpm_cond, mt_all, mt_label, mt_mask, mt_masked, mt_repr, segmenter"),
        ({"diffusion": {"noise_schedule": "sigmoid"}}, "cosine, linear"),
        ({"diffusion": {"prediction": "score"}}, "eps, v, x0"),
        ({"sample": {"sampler": "euler"}}, "ddim, ddpm"),
        ({"modalities": {"label": {"encoder": "clip"}}}, "fixed, learned"),
        ({"model": "mt_masked", "modalities": {"masked_image": {"encoder": "fixed"}}}, "identity"),
        ({"data": {"dataset": "imagenet"}}, "cifar10, digits"),
    ],
)
def test_unknown_names_list_the_accepted_values(override, accepted):
    with pytest.raises(ConfigError, match=accepted):
        load_config(None, override)


def test_unknown_inference_procedure_is_refused_before_training():
    with pytest.raises(ConfigError, match="inference.label_procedure.*elbo, elbo_joint, head"):
        load_config(None, {"inference": {"label_procedure": "posterior"}})


@pytest.mark.parametrize("model", ["mt_mask", "mt_all", "segmenter"])
def test_model_needing_a_mask_on_a_dataset_without_masks(model):
    with pytest.raises(ConfigError, match=r"needs mask.*cifar10.*models possible on it: .*mt_label"):
        load_config(None, {"model": model, "data": {"dataset": "cifar10"}})
    # a label-only model is fine there (validation reads no data files)
    # (at cifar10's 32x32 the default attention at 8x8 is not reachable with two levels)
    cifar = {"model": "mt_label", "data": {"dataset": "cifar10"}, "net": {"attention_resolutions": [16]}}
    assert load_config(None, cifar).data.dataset == "cifar10"
