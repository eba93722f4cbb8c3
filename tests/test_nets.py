"""Tests of the shared ADM U-Net backbone (mtdiff.nets)."""

import pytest
import torch

from mtdiff.errors import ConfigError
from mtdiff.nets import UNet, UNetOutput, bf16_autocast_is_fast, norm_groups, timestep_embedding

CONFIGS = {
    "1x16x16": dict(in_channels=1, image_size=16, out_channels=1),
    "3x32x32": dict(in_channels=3, image_size=32, out_channels=3, channel_mult=(1, 2, 2)),
    "3x64x64-3-levels": dict(in_channels=3, image_size=64, out_channels=3, channel_mult=(1, 2, 2),
                             num_res_blocks=2, attention_resolutions=(16, 32), head_channels=16),
}


def make(seed: int = 0, **kwargs) -> UNet:
    torch.manual_seed(seed)
    return UNet(**{**CONFIGS["1x16x16"], **kwargs})


def randomize_zero_init(model: UNet, std: float = 0.05) -> None:
    """Give the zero-initialised parameters (output convs, attention projections) random values."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)


def inputs(model: UNet, n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.in_channels, model.image_size, model.image_size, generator=g)
    return x, torch.randint(0, 1000, (n,), generator=g)


@pytest.mark.parametrize("name", CONFIGS)
def test_shapes_and_channel_attributes(name):
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    model = UNet(**cfg)
    x, t = inputs(model)
    out = model(x, t)
    mult = cfg.get("channel_mult", (1, 2))
    size, low = cfg["image_size"], cfg["image_size"] >> (len(mult) - 1)
    assert isinstance(out, UNetOutput)
    assert out.out.shape == (2, cfg["out_channels"], size, size)
    assert out.middle.shape == (2, model.middle_channels, low, low)
    assert out.features.shape == (2, model.feature_channels, size, size)
    assert model.middle_channels == 32 * mult[-1] and model.feature_channels == 32

    enc = model(x, t, decoder=False)
    assert enc.out is None and enc.features is None
    torch.testing.assert_close(enc.middle, out.middle)


def test_out_channels_none_gives_features_only():
    model = make(out_channels=None)
    assert model.out is None
    out = model(*inputs(model))
    assert out.out is None and out.features.shape == (2, model.feature_channels, 16, 16)


def test_decoder_false_skips_decoder_compute():
    model = make()
    called = []
    for module in [*model.decoder, model.out]:
        module.register_forward_hook(lambda *_: called.append(1))
    model(*inputs(model), decoder=False)
    assert not called
    model(*inputs(model))
    assert len(called) == len(model.decoder) + 1


def test_parameter_counts_of_documented_configs():
    counts = {name: sum(p.numel() for p in make(**CONFIGS[name]).parameters()) for name in ("1x16x16", "3x32x32")}
    assert counts == {"1x16x16": 755_009, "3x32x32": 1_192_387}


def test_output_is_zero_at_init_and_not_after_perturbation():
    model = make()
    x, t = inputs(model)
    out = model(x, t)
    assert torch.equal(out.out, torch.zeros_like(out.out))
    assert out.features.abs().sum() > 0  # only the output conv is zero, the features are not
    with torch.no_grad():
        model.out[-1].weight.normal_(std=0.05)
    assert model(x, t).out.abs().sum() > 0


def test_timestep_changes_output_and_accepts_int_float_and_scalar():
    model = make()
    randomize_zero_init(model)
    x, _ = inputs(model)
    a = model(x, torch.tensor([10, 10])).out
    b = model(x, torch.tensor([10.0, 10.0])).out
    c = model(x, torch.tensor(10)).out
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    assert not torch.allclose(a, model(x, torch.tensor([900, 900])).out)
    with pytest.raises(ValueError, match="t is required"):
        model(x, None)


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 5, 999]), 32)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb[0], torch.cat([torch.ones(16), torch.zeros(16)]))
    assert timestep_embedding(torch.tensor([1.0]), 33).shape == (1, 33)


def test_class_conditional_and_null_label():
    model = make(num_classes=10)
    assert model.label_embed.num_embeddings == 11  # + the null class for classifier-free guidance
    randomize_zero_init(model)
    x, t = inputs(model)
    a = model(x, t, torch.tensor([0, 1])).out
    b = model(x, t, torch.tensor([1, 0])).out
    null = model(x, t, torch.tensor([-1, -1])).out
    assert not torch.allclose(a, b)
    assert torch.isfinite(null).all() and not torch.allclose(a, null)
    torch.testing.assert_close(null, model(x, t, torch.tensor([10, 10])).out)  # -1 is row num_classes
    with pytest.raises(ValueError, match="y is required"):
        model(x, t)
    with pytest.raises(ValueError, match="num_classes=None"):
        make()(x, t, torch.tensor([0, 1]))


def test_without_time_conditioning():
    model = make(time_conditioning=False, out_channels=None)
    assert model.time_embed is None
    assert not any(isinstance(m, torch.nn.Linear) and m.in_features == 128 for m in model.modules())
    x, _ = inputs(model)
    out = model(x, None)
    assert out.features.shape == (2, 32, 16, 16) and torch.isfinite(out.middle).all()
    torch.testing.assert_close(model(x).middle, out.middle)
    labelled = make(time_conditioning=False, num_classes=3)  # label-only conditioning
    assert labelled(x, None, torch.tensor([0, -1])).out.shape == (2, 1, 16, 16)


def test_additive_time_conditioning():
    model = make(use_scale_shift_norm=False)
    assert model.encoder[0][0].emb.out_features == 32  # shift only (scale-shift: 2 * 32)
    randomize_zero_init(model)
    x, _ = inputs(model)
    assert not torch.allclose(model(x, torch.tensor([1, 1])).out, model(x, torch.tensor([500, 500])).out)


def test_gradients_reach_every_parameter():
    # At init no gradient passes the zero-initialised output conv (ADM does this on purpose), so
    # the zero-initialised parameters are randomised first. The label embedding only gets
    # gradient in the rows of the labels in the batch.
    model = make(num_classes=4)
    randomize_zero_init(model)
    x, t = inputs(model)
    out = model(x, t, torch.tensor([2, -1]))
    (out.out.square().mean() + out.middle.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert model.label_embed.weight.grad[[2, 4]].abs().sum(1).gt(0).all()
    assert not model.label_embed.weight.grad[[0, 1, 3]].any()

    model.zero_grad(set_to_none=True)
    model(x, t, torch.tensor([0, 1]), decoder=False).middle.square().mean().backward()
    unused = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is None}
    assert unused == {"decoder", "out"}  # decoder=False never runs them


def test_bf16_autocast_close_to_fp32():
    model = make(num_classes=3)
    randomize_zero_init(model)
    x, t = inputs(model)
    y = torch.tensor([0, -1])
    ref = model(x, t, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t, y)
    for a, b in [(low.out, ref.out), (low.features, ref.features), (low.middle, ref.middle)]:
        assert torch.isfinite(a).all()
        rel = (a.float() - b).norm() / b.norm()
        assert rel < 5e-2, rel
    assert isinstance(bf16_autocast_is_fast("cpu"), bool)


def test_channels_last_matches_and_keeps_format():
    model = make()
    randomize_zero_init(model)
    x, t = inputs(model)
    ref = model(x, t)
    assert ref.features.is_contiguous()
    model = model.to(memory_format=torch.channels_last)
    out = model(x.to(memory_format=torch.channels_last), t)
    assert out.features.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.out, ref.out, rtol=1e-4, atol=1e-5)


def test_same_seed_same_init_and_output():
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    x, t = inputs(a)
    assert torch.equal(a(x, t).features, b(x, t).features)


def test_norm_groups():
    assert [norm_groups(c) for c in (32, 64, 96, 16, 48, 3, 1)] == [32, 32, 32, 16, 16, 1, 1]
    model = make(model_channels=8, head_channels=8)  # widths 8 and 16: GroupNorm with 8/16 groups
    assert model(*inputs(model)).out.shape == (2, 1, 16, 16)


@pytest.mark.parametrize("kwargs, option", [
    (dict(image_size=18, channel_mult=(1, 2, 2)), "image_size"),
    (dict(attention_resolutions=(5,)), "attention_resolutions"),
    (dict(attention_resolutions=(32,)), r"among \[8, 16\]"),  # lists the reachable ones
    (dict(model_channels=0), "model_channels"),
    (dict(in_channels=-1), "in_channels"),
    (dict(out_channels=0), "out_channels"),
    (dict(image_size=0), "image_size"),
    (dict(channel_mult=()), "channel_mult"),
    (dict(channel_mult=(1, 0)), "channel_mult"),
    (dict(num_res_blocks=0), "num_res_blocks"),
    (dict(head_channels=48), "head_channels"),
    (dict(num_classes=0), "num_classes"),
    (dict(dropout=1.5), "dropout"),
])
def test_bad_config_raises_config_error_naming_the_option(kwargs, option):
    with pytest.raises(ConfigError, match=option):
        make(**kwargs)
