"""Guided conditional sampling, condition dropout and the checks on conditions
(docs/method.md, section 7). Tiny networks; the file runs in seconds."""

from __future__ import annotations

import math

import pytest
import torch

from mtdiff import samplers
from mtdiff.errors import ConfigError
from test_models import T, _batch, _model, _perturb


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """One torch thread for the whole module (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def mt_all():
    _, model, diffusion = _model("mt_all", size=8)
    return _perturb(model).eval(), diffusion


@pytest.fixture(scope="module")
def mt_all_cfg():
    _, model, diffusion = _model("mt_all", size=8, train={"cond_drop_prob": 0.1})
    return _perturb(model).eval(), diffusion


def _given(n=4, size=8):
    b = _batch(n, size=size)
    return {"label": b["label"], "mask": b["mask"]}


def _eval(model, diffusion, given, t=30, guidance="none", scale=0.0, n=4, seed=1, autocast=None):
    z = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    tt = torch.full((n,), t, dtype=torch.long)
    enc = {k: model.modalities[k].encode(v) for k, v in given.items()}
    return z, tt, samplers.guided_eps(model, diffusion, z, tt, None, given, enc, guidance=guidance, scale=scale,
                                      autocast=autocast)


def _head_logp(model, z, tt, given):
    preds = model(z, tt)
    return sum(model.modalities[k].log_likelihood(preds[k], v) for k, v in given.items())


@pytest.mark.parametrize("guidance", ["head", "cfg"])
def test_scale_zero_is_the_unguided_sampler(mt_all_cfg, guidance):
    model, diffusion = mt_all_cfg
    given = _given()
    kw = dict(steps=5, given=given)
    plain = samplers.sample(model, diffusion, 4, generator=torch.Generator().manual_seed(0), **kw)
    guided = samplers.sample(model, diffusion, 4, generator=torch.Generator().manual_seed(0), guidance=guidance,
                             guidance_scale=0.0, **kw)
    assert torch.equal(plain["image"], guided["image"])


def test_head_guidance_is_eps_minus_scaled_head_gradient(mt_all):
    model, diffusion = mt_all
    given = _given()
    z, tt, (_, _, _, _, eps0) = _eval(model, diffusion, given)
    _, _, (_, _, shift, z0_g, eps_g) = _eval(model, diffusion, given, guidance="head", scale=2.0)
    zg = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_head_logp(model, zg, tt, given).sum(), zg)
    abar = float(diffusion.alpha_bars[30])
    torch.testing.assert_close(eps_g, eps0 - 2.0 * math.sqrt(1 - abar) * grad, atol=1e-5, rtol=1e-4)
    # z0_hat is consistent with the guided eps on y_t (eq. 7)
    torch.testing.assert_close(z0_g, (z - shift - math.sqrt(1 - abar) * eps_g) / math.sqrt(abar), atol=1e-5, rtol=1e-4)


def test_head_guided_step_raises_the_head_log_probability(mt_all):
    model, diffusion = mt_all
    given = _given()
    z, tt, (_, _, _, z0, _) = _eval(model, diffusion, given)
    _, _, (_, _, _, z0_g, _) = _eval(model, diffusion, given, guidance="head", scale=1.0)
    # the guided z0_hat moves along +grad log p (docs/method.md, section 7): a small step of
    # z_t in that direction raises the head's log-probability of the given values
    direction = z0_g - z0
    assert direction.abs().max() > 0
    with torch.no_grad():
        before = _head_logp(model, z, tt, given)
        after = _head_logp(model, z + 1e-3 * direction / direction.norm(), tt, given)
    assert (after > before).all(), (before, after)


def test_head_gradient_is_fp32_under_bf16_autocast(mt_all):
    model, diffusion = mt_all
    given = _given()
    amp = torch.autocast("cpu", dtype=torch.bfloat16)
    _, _, (_, _, _, _, eps_amp) = _eval(model, diffusion, given, guidance="head", scale=1.0, autocast=amp)
    _, _, (_, _, _, _, eps_32) = _eval(model, diffusion, given, guidance="head", scale=1.0)
    assert eps_amp.dtype == torch.float32
    assert torch.equal(eps_amp, eps_32)  # the guided pass runs outside autocast


def test_cfg_is_the_contrast_with_the_prior_encoding(mt_all_cfg):
    model, diffusion = mt_all_cfg
    given = {"label": _given()["label"]}
    z, tt, (preds, enc, shift, _, eps_c) = _eval(model, diffusion, given)
    _, _, (_, _, _, _, eps_w0) = _eval(model, diffusion, given, guidance="cfg", scale=0.0)
    assert torch.equal(eps_w0, eps_c)  # w = 0: the conditional eps
    _, _, (_, _, _, _, eps_w) = _eval(model, diffusion, given, guidance="cfg", scale=1.5)
    # by hand: the same y_t aggregated with the prior label encoding
    enc_u = dict(enc, label=model.modalities["label"].prior_encoding(4, "cpu"))
    shift_u = diffusion.aggregated_mean(enc_u, tt, z)
    z_u = z - shift + shift_u
    with torch.no_grad():
        _, eps_u = diffusion.split_prediction(model(z_u, tt)["image"], z_u, tt, shift_u)
    torch.testing.assert_close(eps_w, 2.5 * eps_c - 1.5 * eps_u)
    assert not torch.allclose(eps_u, eps_c)


def test_cfg_for_ddpm_cond_contrasts_with_the_null_class():
    _, model, diffusion = _model("ddpm_cond", size=8, train={"cond_drop_prob": 0.2})
    model = _perturb(model).eval()
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    tt = torch.full((3,), 20, dtype=torch.long)
    y = torch.tensor([1, 2, 3])
    _, _, _, _, eps = samplers.guided_eps(model, diffusion, z, tt, y, {}, {}, guidance="cfg", scale=2.0)
    with torch.no_grad():
        expected = 3.0 * model(z, tt, y)["image"] - 2.0 * model(z, tt, torch.full_like(y, -1))["image"]
    torch.testing.assert_close(eps, expected)


def test_known_encoding_is_added_back_whole_after_clipping(mt_all, monkeypatch):
    """In the sampler loop, with clipping and guidance active: the next state is
    z_s = c_s E(k) + r y_t + (sqrt(abar_s) - r sqrt(abar_t)) z0 (DDIM, eta = 0) with y_t = z_t - c_t E(k):
    the known encoding enters with its full coefficient c_s, whatever the clip did."""
    model, diffusion = mt_all
    given = _given()
    calls = []
    real = samplers.guided_eps

    def spy(model_, diffusion_, z, tt, *args, **kwargs):
        out = real(model_, diffusion_, z, tt, *args, **kwargs)
        calls.append((z.clone(), int(tt[0]), out))
        return out

    monkeypatch.setattr(samplers, "guided_eps", spy)
    samplers.sample(model, diffusion, 4, steps=4, given=given, guidance="head", guidance_scale=3.0,
                    generator=torch.Generator().manual_seed(0))
    assert len(calls) == 4
    clipped = False
    for (z, t, (_, enc, shift, z0, eps)), (z_next, s, _) in zip(calls, calls[1:]):
        a_t, a_s = float(diffusion.alpha_bars[t]), float(diffusion.alpha_bars[s])
        r = math.sqrt((1 - a_s) / (1 - a_t))
        known = sum(float(diffusion.coeffs[k][s]) * model.modalities[k].encode(v) for k, v in given.items())
        unknown_t = shift - sum(float(diffusion.coeffs[k][t]) * model.modalities[k].encode(v) for k, v in given.items())
        assert torch.allclose(unknown_t, torch.zeros_like(unknown_t))  # every modality given
        expected = known + r * (z - shift) + (math.sqrt(a_s) - r * math.sqrt(a_t)) * z0
        torch.testing.assert_close(z_next, expected, atol=1e-4, rtol=1e-4)
        clipped |= bool((z0.abs() > 1).any())
    assert clipped  # guidance pushed z0_hat past the clip at least once: the case that matters


# ---------------------------------------------------------------------------------------------
# condition dropout in the loss


def test_dropout_replaces_encodings_by_the_prior_and_classes_by_null():
    _, model, diffusion = _model("mt_all", size=8, train={"cond_drop_prob": 0.999999})
    batch = _batch(6, size=8)
    enc = {k: m.encode(batch[k]) for k, m in model.modalities.items()}
    out, _ = model.drop_conditions(enc, None, 6, "cpu", torch.Generator().manual_seed(0))
    for k, m in model.modalities.items():
        assert torch.equal(out[k], m.prior_encoding(6, "cpu"))
    # the loss feeds those encodings into q_sample
    seen = {}
    orig = diffusion.q_sample

    def spy(z0, t, noise, encodings=None):
        seen.update(encodings)
        return orig(z0, t, noise, encodings)

    diffusion.q_sample = spy
    model.loss(batch, diffusion, torch.Generator().manual_seed(0))
    for k, m in model.modalities.items():
        assert torch.equal(seen[k], m.prior_encoding(6, "cpu"))
    _, cond, _ = _model("ddpm_cond", size=8, train={"cond_drop_prob": 0.999999})
    _, labels = cond.drop_conditions({}, batch["label"], 6, "cpu", torch.Generator().manual_seed(0))
    assert (labels == -1).all()


def test_dropout_zero_draws_nothing_and_half_drops_about_half():
    _, model, diffusion = _model("mt_label", size=8)
    batch = _batch(8, size=8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    model.loss(batch, diffusion, g1)
    torch.randint(1, T + 1, (8,), generator=g2), torch.randn(8, 1, 8, 8, generator=g2)
    assert torch.equal(g1.get_state(), g2.get_state())  # p = 0: runs trained before keep their RNG stream
    _, half, _ = _model("mt_label", size=8, train={"cond_drop_prob": 0.5})
    e = {"label": half.modalities["label"].encode(torch.arange(2000) % 10)}
    out, _ = half.drop_conditions(e, None, 2000, "cpu", torch.Generator().manual_seed(0))
    frac = (out["label"] != e["label"]).flatten(1).any(1).float().mean()
    assert 0.45 < frac < 0.55


# ---------------------------------------------------------------------------------------------
# bad input refused before sampling


@pytest.mark.parametrize("scale,match", [(-1.0, "guidance_scale=-1.0"), (float("nan"), "guidance_scale=nan"),
                                         ("x", "not a number")])
def test_bad_guidance_scale(mt_all, scale, match):
    model, diffusion = mt_all
    with pytest.raises(ConfigError, match=match):
        samplers.sample(model, diffusion, 4, steps=2, given=_given(), guidance="head", guidance_scale=scale)


def test_bad_conditions_are_refused(mt_all):
    model, diffusion = mt_all
    kw = dict(steps=2, guidance="head", guidance_scale=1.0)
    with pytest.raises(ConfigError, match="accepted: cfg, head, none"):
        samplers.sample(model, diffusion, 4, steps=2, given=_given(), guidance="classifier")
    with pytest.raises(ConfigError, match="masked_image"):
        samplers.sample(model, diffusion, 4, given={"masked_image": torch.zeros(4, 1, 8, 8)}, **kw)
    with pytest.raises(ConfigError, match="class id 10 is out of range; accepted: 0..9"):
        samplers.sample(model, diffusion, 1, given={"label": torch.tensor([10])}, **kw)
    with pytest.raises(ConfigError, match=r"shape \(N, 8, 8\)"):
        samplers.sample(model, diffusion, 1, given={"mask": torch.zeros(1, 16, 16, dtype=torch.long)}, **kw)
    with pytest.raises(ConfigError, match="needs a condition"):
        samplers.sample(model, diffusion, 1, **kw)
    with pytest.raises(ConfigError, match="trained with train.cond_drop_prob=0"):
        samplers.sample(model, diffusion, 1, given={"label": torch.tensor([1])}, steps=2, guidance="cfg",
                        guidance_scale=1.0)
    _, cond, d = _model("ddpm_cond", size=8)
    with pytest.raises(ConfigError, match="accepted for ddpm_cond: none, cfg"):
        samplers.sample(cond, d, 1, steps=2, class_labels=torch.tensor([1]), guidance="head", guidance_scale=1.0)
    with pytest.raises(ConfigError, match="out of range; accepted: 0..9"):
        samplers.sample(cond, d, 1, steps=2, class_labels=torch.tensor([-1]))


def test_masked_image_condition_of_the_wrong_size_is_refused_before_sampling():
    _, model, diffusion = _model("mt_masked", size=8)
    for shape in ((2, 1, 16, 16), (2, 3, 8, 8)):
        with pytest.raises(ConfigError, match=r"condition masked_image: .*must have shape \(N, 1, 8, 8\)") as e:
            samplers.sample(model, diffusion, 2, steps=2, given={"masked_image": torch.zeros(shape)}, guidance="head",
                            guidance_scale=1.0)
        assert "\n" not in str(e.value)


def test_masked_image_condition_is_guided():
    _, model, diffusion = _model("mt_masked", size=8)
    model = _perturb(model).eval()
    value = model.modalities["masked_image"].training_value({"image": _batch(2, size=8)["image"]},
                                                            torch.Generator().manual_seed(0))
    out = samplers.sample(model, diffusion, 2, steps=3, given={"masked_image": value}, guidance="head",
                          guidance_scale=1.0)
    assert out["image"].shape == (2, 1, 8, 8) and torch.isfinite(out["image"]).all()


def test_bad_drop_probability_is_refused():
    with pytest.raises(ConfigError, match=r"train.cond_drop_prob=1.0 is not accepted; accepted: a finite number >= 0 and < 1"):
        _model("mt_label", size=8, train={"cond_drop_prob": 1.0})
    with pytest.raises(ConfigError, match="model=ddpm has none"):
        _model("ddpm", size=8, train={"cond_drop_prob": 0.1})


def test_the_clip_does_not_take_the_head_guidance_back(mt_all):
    """Guidance is added after the clip (ADM's condition_score order): the guided eps differs
    from the clipped unguided one by exactly -s sqrt(1 - abar_t) grad, even where z0 is clipped."""
    model, diffusion = mt_all
    given = _given()
    n, t = 4, 45
    z = 3 * torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    tt = torch.full((n,), t, dtype=torch.long)
    enc = {k: model.modalities[k].encode(v) for k, v in given.items()}
    *_, z0_plain, eps_plain = samplers.guided_eps(model, diffusion, z, tt, None, given, enc, clip_x0=True)
    *_, z0_g, eps_g = samplers.guided_eps(model, diffusion, z, tt, None, given, enc, guidance="head", scale=4.0,
                                          clip_x0=True)
    assert (z0_plain.abs() == 1).any()  # the clip was active
    zg = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_head_logp(model, zg, tt, given).sum(), zg)
    abar = float(diffusion.alpha_bars[t])
    torch.testing.assert_close(eps_g - eps_plain, -4.0 * math.sqrt(1 - abar) * grad, atol=1e-5, rtol=1e-4)


def test_universal_guidance_baseline_scale_zero_is_plain_ddim_and_guided_runs():
    from mtdiff.mask_to_image import universal_guided_sample

    _, ddpm, diffusion = _model("ddpm", size=8)
    ddpm = _perturb(ddpm).eval()
    cfg, seg, _ = _model("segmenter", size=8)
    seg = _perturb(seg).eval()
    masks = _batch(3, size=8)["mask"]
    plain = samplers.sample(ddpm, diffusion, 3, steps=4, generator=torch.Generator().manual_seed(0))["image"]
    s0 = universal_guided_sample(ddpm, diffusion, seg, masks, steps=4, scale=0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s0, plain, atol=1e-5, rtol=1e-4)
    s2 = universal_guided_sample(ddpm, diffusion, seg, masks, steps=4, scale=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(s2).all() and not torch.allclose(s2, plain)
    with pytest.raises(ConfigError, match="model=ddpm"):
        universal_guided_sample(_model("mt_mask", size=8)[1], diffusion, seg, masks, steps=2, scale=1.0)


def test_a_run_configured_for_guidance_still_samples_jointly(tmp_path):
    """sample.guidance in a run's config applies to samples given a condition; joint samples
    (no --condition) of an MT model are unguided rather than refused (the workflow's curves)."""
    from mtdiff.config import load_config
    from mtdiff.generate import generate
    from mtdiff.train import train

    cfg = load_config(None, {"model": "mt_label", "net": {"model_channels": 8, "head_channels": 8, "label_head_hidden": 16},
                             "data": {"num_train": 64, "num_test": 32},
                             "train": {"total_kimg": 0.032, "batch_size": 16, "threads": 1, "precision": "fp32"},
                             "diffusion": {"num_steps": 20},
                             "sample": {"steps": 2, "guidance": "head", "guidance_scale": 2.0}})
    train(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    joint = generate(tmp_path / "run", tmp_path / "joint", num_samples=4, steps=2, write_pngs=False, progress=False,
                     log=lambda *_: None)
    assert joint["guidance"] == "none"
    given = generate(tmp_path / "run", tmp_path / "given", num_samples=4, steps=2, condition="label=3",
                     write_pngs=False, progress=False, log=lambda *_: None)
    assert (given["guidance"], given["guidance_scale"]) == ("head", 2.0)
    with pytest.raises(ConfigError, match="needs a condition"):  # asked for explicitly: still refused
        generate(tmp_path / "run", tmp_path / "bad", num_samples=4, steps=2, guidance="head", guidance_scale=1.0,
                 write_pngs=False, progress=False, log=lambda *_: None)
