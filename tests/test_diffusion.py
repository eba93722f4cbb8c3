"""The math of the MT-Diffusion forward process (docs/method.md, eqs. 1-7).

Everything here runs on tiny tensors in float64; the whole file takes a few seconds.
"""

from __future__ import annotations

import math

import pytest
import torch

from mtdiff.config import DiffusionConfig, ModalityConfig
from mtdiff.models import load_run_config as load_config  # field and registry checks, as the CLI does
from mtdiff.diffusion import (
    NOISE_SCHEDULES,
    PREDICTIONS,
    WEIGHT_SCHEDULES,
    Diffusion,
    aggregate_coefficients,
    constant_decay_weights,
    noise_tied_weights,
)
from mtdiff.errors import ConfigError

from conftest import assert_max_abs_close

pytestmark = pytest.mark.usefixtures("one_torch_thread")


DEFAULT_MOD = ModalityConfig()
DEFAULT_DIFF = DiffusionConfig()


def _diffusion(noise_schedule: str, num_steps: int = 1000, **kw) -> Diffusion:
    """A float64 diffusion with two extra modalities on different w_t schedules."""
    d = Diffusion(num_steps, noise_schedule, DEFAULT_DIFF.beta_start, DEFAULT_DIFF.beta_end, **kw)
    d.add_modality("label", "noise_tied", 0.5, None)
    d.add_modality("mask", "constant_decay", 0.3, None, decay_start_frac=0.1, decay_end_frac=0.3)
    return d


def _full(t: int, n: int) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.long)


# ---------------------------------------------------------------------------------------------
# eqs. 1-3: the closed-form marginal against iterating the transitions


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_closed_form_mean_equals_iterated_transitions(schedule):
    d = _diffusion(schedule)
    g = torch.Generator().manual_seed(0)
    z0 = torch.rand(3, 2, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    enc = {
        "label": torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64),
        "mask": torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64),
    }
    zero = torch.zeros_like(z0)
    z = z0.clone()
    worst = 0.0
    for t in range(1, d.num_steps + 1):
        z = d.q_step(z, _full(t, 3), zero, enc)  # eq. 1 with eps = 0
        closed = d.q_sample(z0, _full(t, 3), zero, enc)  # eq. 3 with eps = 0
        worst = max(worst, float((z - closed).abs().max()))
    assert worst < 1e-10
    # and the shift really is there (the check is not vacuous): c_t peaks at gamma
    assert float(d.coeffs["label"].max()) == pytest.approx(0.5, abs=1e-3)
    assert float(d.coeffs["mask"].max()) == pytest.approx(0.3, rel=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_closed_form_mean_equals_unrolled_sum(schedule):
    """eq. 2: c_t = sum_{s<=t} sqrt(abar_t / abar_{s-1}) w_s, the unrolled form of eq. 3's recursion."""
    d = _diffusion(schedule, num_steps=200)
    abar = d.alpha_bars
    for name in ("label", "mask"):
        w, c = d.weights[name], d.coeffs[name]
        for t in (1, 2, 17, 100, 200):
            unrolled = sum(math.sqrt(abar[t] / abar[s - 1]) * float(w[s]) for s in range(1, t + 1))
            assert float(c[t]) == pytest.approx(unrolled, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_iterated_variance_is_ddpm_variance(schedule):
    d = _diffusion(schedule)
    var = torch.tensor(0.0, dtype=torch.float64)
    for t in range(1, d.num_steps + 1):
        var = d.alphas[t] * var + (1 - d.alphas[t])
        assert float(var) == pytest.approx(float(1 - d.alpha_bars[t]), abs=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_iterated_chain_monte_carlo(schedule):
    """Run the noisy chain of eq. 1 and compare the empirical moments with eq. 3."""
    T, n = 100, 20000
    d = _diffusion(schedule, num_steps=T)
    g = torch.Generator().manual_seed(1)
    # one example whose n "pixels" are independent draws of the same scalar chain
    z0 = torch.full((1, n, 1, 1), 0.7, dtype=torch.float64)
    enc = {"label": torch.full_like(z0, 1.3), "mask": torch.full_like(z0, -0.8)}
    z = z0.clone()
    for t in range(1, T + 1):
        noise = torch.randn(z.shape, generator=g, dtype=torch.float64)
        z = d.q_step(z, _full(t, 1), noise, enc)
        if t in (5, 30, T):
            mean = float(d.q_sample(z0, _full(t, 1), torch.zeros_like(z0), enc)[0, 0])
            var = float(1 - d.alpha_bars[t])
            assert float(z.mean()) == pytest.approx(mean, abs=4 * math.sqrt(var / n))
            assert float(z.var()) == pytest.approx(var, rel=0.05)
            if t == 5:  # the encodings move the mean by many standard errors: the check has teeth
                shift = mean - math.sqrt(float(d.alpha_bars[t])) * 0.7
                assert abs(shift) > 20 * math.sqrt(var / n)


# ---------------------------------------------------------------------------------------------
# eqs. 6-7: the posterior against Bayes' rule, computed numerically on a 1-D grid


def _log_normal(x, mean, var):
    return -0.5 * (x - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("t", [2, 3, 250, 999, 1000])
def test_posterior_matches_bayes_rule(schedule, t):
    """q(z_{t-1} | z_t, z_0, X) ∝ q(z_{t-1} | z_0, X) q(z_t | z_{t-1}, X), integrated over a grid.

    The prior factor is eq. 3 at t - 1 (checked above against the iterated chain), the
    likelihood factor is eq. 1 written out from the weights w_t, not from c_t.
    """
    d = _diffusion(schedule)
    z0, e_label, e_mask, zt = 0.3, 0.8, -1.1, 0.45
    abar_prev, a_t = float(d.alpha_bars[t - 1]), float(d.alphas[t])
    prior_mean = math.sqrt(abar_prev) * z0 + float(d.coeffs["label"][t - 1]) * e_label + float(d.coeffs["mask"][t - 1]) * e_mask
    agg = float(d.weights["label"][t]) * e_label + float(d.weights["mask"][t]) * e_mask

    grid = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    logp = _log_normal(grid, prior_mean, 1 - abar_prev) + _log_normal(zt, math.sqrt(a_t) * (grid + agg), 1 - a_t)
    p = (logp - logp.max()).exp()
    p = p / torch.trapezoid(p, grid)
    num_mean = float(torch.trapezoid(p * grid, grid))
    num_var = float(torch.trapezoid(p * (grid - num_mean) ** 2, grid))

    one = lambda v: torch.full((1, 1, 1, 1), v, dtype=torch.float64)  # noqa: E731
    mean, var = d.posterior(one(zt), one(z0), _full(t, 1), {"label": one(e_label), "mask": one(e_mask)})
    assert float(mean) == pytest.approx(num_mean, abs=1e-6)
    assert float(var) == pytest.approx(num_var, rel=1e-4)
    # and the encodings matter here: the plain DDPM posterior (no X) is somewhere else
    ddpm_mean, _ = d.posterior(one(zt), one(z0), _full(t, 1))
    if t < 999:
        assert abs(float(ddpm_mean) - num_mean) > 1e-4


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_at_t1_is_the_data(schedule):
    """At t = 1 the prior q(z_0 | z_0) is a point mass, so Bayes' rule gives z_0 with variance 0."""
    d = _diffusion(schedule)
    g = torch.Generator().manual_seed(2)
    z0, zt = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64).unbind(0)
    enc = {"label": torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64), "mask": torch.ones(1, 1, 3, 3, dtype=torch.float64)}
    mean, var = d.posterior(zt[None], z0[None], _full(1, 1), enc)
    assert_max_abs_close(mean, z0[None], atol=1e-12)
    assert float(var) == 0.0


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_deaggregated_latent_is_a_ddpm_chain(schedule):
    """eq. 7: y_t = z_t - sum_i c_t e_i obeys y_t = sqrt(a_t) y_{t-1} + sqrt(1 - a_t) eps exactly."""
    d = _diffusion(schedule, num_steps=300)
    g = torch.Generator().manual_seed(3)
    z = torch.rand(2, 1, 4, 4, generator=g, dtype=torch.float64)
    enc = {"label": torch.randn_like(z), "mask": torch.randn(z.shape, generator=g, dtype=torch.float64)}
    y = z.clone()
    for t in range(1, d.num_steps + 1):
        noise = torch.randn(z.shape, generator=g, dtype=torch.float64)
        z = d.q_step(z, _full(t, 2), noise, enc)
        y = d.alphas[t].sqrt() * y + (1 - d.alphas[t]).sqrt() * noise
        assert_max_abs_close(z - d.aggregated_mean(enc, _full(t, 2), z), y, atol=1e-10)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_reverse_mean_error_splits_into_noise_and_encoding_errors(schedule):
    """eq. 9: posterior mean (true z_0, e) minus the model's mean (z0_hat from eps_hat on
    y_t with e_hat) = -beta_t / (sqrt(a_t) sqrt(1 - abar_t)) (eps - eps_hat) - sum_i w_t (e_i - e_hat_i)."""
    d = _diffusion(schedule)
    g = torch.Generator().manual_seed(5)
    r = lambda: torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)  # noqa: E731
    z0, eps, eps_hat = r(), r(), r()
    enc, enc_hat = {"label": r(), "mask": r()}, {"label": r(), "mask": r()}
    for t in (1, 2, 50, 200, 700, 1000):
        tt = _full(t, 1)
        zt = d.q_sample(z0, tt, eps, enc)
        z0_hat, _ = d.split_prediction(eps_hat, zt, tt, d.aggregated_mean(enc_hat, tt, zt))
        true_mean, _ = d.posterior(zt, z0, tt, enc)
        model_mean, _ = d.posterior(zt, z0_hat, tt, enc_hat)
        b, a, abar = d.betas[t], d.alphas[t], d.alpha_bars[t]
        predicted = -(b / (a.sqrt() * (1 - abar).sqrt())) * (eps - eps_hat) - sum(
            d.weights[k][t] * (enc[k] - enc_hat[k]) for k in enc
        )
        assert_max_abs_close(true_mean - model_mean, predicted, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# eq. 4: the weight schedules


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("gamma", [0.1, 0.5, 2.0])
def test_noise_tied_closed_form(schedule, gamma):
    d = Diffusion(1000, schedule)
    w = noise_tied_weights(d.alphas, d.alpha_bars, gamma)
    c = aggregate_coefficients(d.alphas, w)
    assert_max_abs_close(c, 4 * gamma * (d.alpha_bars.sqrt() - d.alpha_bars), atol=1e-12)
    # peak gamma where abar_t crosses 1/4 (up to the discrete grid)
    t_peak = int(c.argmax())
    assert float(c.max()) == pytest.approx(gamma, rel=1e-4)
    assert float(d.alpha_bars[t_peak]) == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("fracs", [(0.1, 0.3), (0.0, 0.2), (0.2, 0.2), (0.05, 0.5)])
def test_constant_decay_shape_and_peak(schedule, fracs):
    d = Diffusion(1000, schedule)
    start, end = fracs
    w = constant_decay_weights(d.alphas, d.alpha_bars, 0.7, start, end)
    c = aggregate_coefficients(d.alphas, w)
    assert float(c.max()) == pytest.approx(0.7, rel=1e-12)
    assert float(w[0]) == 0.0
    assert torch.all(w[int(end * 1000) + 1 :] == 0)  # zero after end * T (at end * T too when end > start)
    plateau = w[1 : int(start * 1000) + 1]
    if len(plateau):
        assert torch.allclose(plateau, plateau[0].expand_as(plateau))
    assert torch.all(w[1:].diff() <= 1e-15)  # non-increasing


def test_constant_decay_rejects_bad_fractions():
    d = Diffusion(100)
    with pytest.raises(ConfigError, match="decay_start_frac"):
        constant_decay_weights(d.alphas, d.alpha_bars, 0.5, 0.4, 0.3)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_inverse_map_reaches_any_profile(schedule):
    """w_t = c_t / sqrt(a_t) - c_{t-1} inverts the recursion: every shipped w and any c profile."""
    d = _diffusion(schedule)
    for name in ("label", "mask"):
        w, c = d.weights[name], d.coeffs[name]
        w_back = torch.zeros_like(w)
        w_back[1:] = c[1:] / d.alphas[1:].sqrt() - c[:-1]
        assert_max_abs_close(w_back, w, atol=1e-12)
    t = torch.arange(d.num_steps + 1, dtype=torch.float64)
    target = 0.4 * torch.sin(math.pi * t / d.num_steps) ** 3  # an arbitrary profile with c_0 = c_T = 0
    w = torch.zeros_like(target)
    w[1:] = target[1:] / d.alphas[1:].sqrt() - target[:-1]
    assert_max_abs_close(aggregate_coefficients(d.alphas, w), target, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# eq. 5: the terminal condition, for every shipped noise x weight schedule at the defaults


@pytest.mark.parametrize("noise_schedule", sorted(NOISE_SCHEDULES))
@pytest.mark.parametrize("weight_schedule", sorted(WEIGHT_SCHEDULES))
def test_default_schedules_meet_terminal_condition(noise_schedule, weight_schedule):
    d = Diffusion(DEFAULT_DIFF.num_steps, noise_schedule, DEFAULT_DIFF.beta_start, DEFAULT_DIFF.beta_end)
    d.add_modality(
        "x", weight_schedule, DEFAULT_MOD.weight_scale, DEFAULT_DIFF.max_terminal_coeff,
        decay_start_frac=DEFAULT_MOD.decay_start_frac, decay_end_frac=DEFAULT_MOD.decay_end_frac,
    )
    c_T = d.terminal_coefficients()["x"]
    assert abs(c_T) <= DEFAULT_DIFF.max_terminal_coeff
    # KL(q(z_T | z_0, X) || N(0, 1)) per dimension for the worst pixel z_0 = 1, e = 1 (unit RMS)
    abar_T = float(d.alpha_bars[-1])
    m = math.sqrt(abar_T) + abs(c_T)
    kl = m**2 / 2 + (-abar_T - math.log(1 - abar_T)) / 2
    assert kl < 2e-4


def test_measured_terminal_coefficients_match_the_doc():
    """The table printed in docs/method.md, eq. 5 (gamma = 0.5, default fractions)."""
    expected = {
        ("linear", "noise_tied"): 1.262e-2,
        ("linear", "constant_decay"): 4.527e-3,
        ("cosine", "noise_tied"): 9.856e-5,
        ("cosine", "constant_decay"): 2.747e-5,
    }
    for (ns, ws), value in expected.items():
        d = Diffusion(1000, ns)
        d.add_modality("x", ws, 0.5, None, decay_start_frac=0.1, decay_end_frac=0.3)
        assert d.terminal_coefficients()["x"] == pytest.approx(value, rel=1e-3)


def test_huge_weight_scale_is_refused_before_training():
    with pytest.raises(ConfigError, match=r"modalities\.label.*c_T=.*max_terminal_coeff"):
        load_config(None, {"model": "mt_label", "modalities": {"label": {"weight_scale": 50}}})


def test_late_decay_on_linear_is_refused_naming_the_modality():
    over = {"model": "mt_mask", "modalities": {"mask": {"weight_schedule": "constant_decay", "decay_end_frac": 1.0}}}
    with pytest.raises(ConfigError, match=r"modalities\.mask"):
        load_config(None, over)
    # the cosine schedule's last beta is 0.999, so there the same weights are accepted (c_T ~ 6e-5)
    cfg = load_config(None, dict(over, diffusion={"noise_schedule": "cosine"}))
    assert cfg.modalities["mask"].decay_end_frac == 1.0


def test_constant_decay_that_ends_before_step_1_is_refused():
    with pytest.raises(ConfigError, match=r"modalities\.label|decay_end_frac"):
        load_config(None, {"model": "mt_label", "modalities": {"label": {
            "weight_schedule": "constant_decay", "decay_start_frac": 0.0, "decay_end_frac": 0.0}}})


def test_terminal_bound_is_configurable():
    over = {"model": "mt_label", "modalities": {"label": {"weight_scale": 2.0}}}
    with pytest.raises(ConfigError, match=r"modalities\.label"):
        load_config(None, over)  # c_T = 4 * 2 * (sqrt(abar_T) - abar_T) ~ 0.05
    load_config(None, dict(over, diffusion={"max_terminal_coeff": 0.06}))


def test_unknown_weight_schedule_lists_accepted():
    with pytest.raises(ConfigError, match=r"modalities\.label\.weight_schedule.*constant_decay, noise_tied"):
        load_config(None, {"model": "mt_label", "modalities": {"label": {"weight_schedule": "cosine"}}})


# ---------------------------------------------------------------------------------------------
# the image head's parametrisations on the de-aggregated latent (eqs. 7-8)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("t", [1, 10, 500, 1000])
def test_split_prediction_round_trip(prediction, t):
    d = Diffusion(1000, "linear", prediction=prediction)
    g = torch.Generator().manual_seed(4)
    z0 = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(z0.shape, generator=g, dtype=torch.float64)
    shift = torch.randn(z0.shape, generator=g, dtype=torch.float64) * 0.4
    tt = _full(t, 2)
    zt = d.q_sample(z0, tt, noise) + shift  # = q_sample with encodings whose sum_i c_t e_i = shift
    z0_hat, eps_hat = d.split_prediction(d.target(z0, noise, tt), zt, tt, shift)
    # at t = T, sqrt(abar_T) ~ 6e-3 divides in the eps -> z0 conversion
    tol = 1e-9 if t < 1000 else 1e-8
    assert_max_abs_close(z0_hat, z0, atol=tol)
    assert_max_abs_close(eps_hat, noise, atol=tol)


def test_unknown_noise_schedule_and_prediction_list_accepted():
    with pytest.raises(ConfigError, match="cosine, linear"):
        Diffusion(10, "sigmoid")
    with pytest.raises(ConfigError, match="eps, v, x0"):
        Diffusion(10, prediction="score")
