"""The MT-Diffusion forward process, its closed forms, and the multi-task loss targets.

Notation and equation numbers follow docs/method.md. Timesteps run t = 1..T as in the paper;
every per-step table below has T + 1 entries with index 0 the clean data (alpha_bar_0 = 1,
c_0 = 0), so ``table[t]`` reads as the formula does.

Forward transition with aggregation (eq. 1):
    q(z_t | z_{t-1}, X) = N(sqrt(a_t) (z_{t-1} + sum_i w_t^(i) e_i), (1 - a_t) I),  e_i = E_i(x_i)
Marginal (eq. 3):
    q(z_t | z_0, X) = N(sqrt(abar_t) z_0 + sum_i c_t^(i) e_i, (1 - abar_t) I),
    c_t^(i) = sqrt(a_t) (c_{t-1}^(i) + w_t^(i)),  c_0 = 0
Posterior (eq. 6):
    q(z_{t-1} | z_t, z_0, X) = N(sum_i c_{t-1}^(i) e_i + k0_t z_0 + kt_t (z_t - sum_i c_t^(i) e_i),
                                 beta_tilde_t I)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mtdiff.errors import ConfigError, choice_error

# ---------------------------------------------------------------------------------------------
# Noise schedules beta_1..beta_T (returned as a float64 tensor of length T).


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (Ho et al. 2020), scaled so T != 1000 keeps its endpoints' shape."""
    scale = 1000.0 / num_steps
    return torch.linspace(beta_start * scale, beta_end * scale, num_steps, dtype=torch.float64).clamp(max=0.999)


def cosine_betas(num_steps: int, s: float = 0.008, **_) -> torch.Tensor:
    """Improved-DDPM cosine schedule (Nichol & Dhariwal 2021), betas clipped at 0.999."""
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


NOISE_SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}
PREDICTIONS = ("eps", "x0", "v")


# ---------------------------------------------------------------------------------------------
# Aggregation weight schedules w_t^(i) (eq. 4). Each takes the alpha tables and returns w with
# T + 1 entries (w[0] unused, 0). The paper leaves w_t open; see docs/method.md, section 3.
# In both, ``scale`` (gamma, config ``weight_scale``) is the peak of c_t: the largest share of
# the encoding e_i in the marginal mean of z_t, so gamma means the same for every schedule.


def noise_tied_weights(alphas: torch.Tensor, alpha_bars: torch.Tensor, scale: float, **_) -> torch.Tensor:
    """w_t = 4 gamma abar_{t-1} (1 - sqrt(a_t)), which gives c_t = 4 gamma (sqrt(abar_t) - abar_t).

    c_t rises from 0, peaks at gamma where abar_t = 1/4 (the image's own coefficient is then
    1/2), and falls to about 4 gamma sqrt(abar_T) at T (eq. 4a).
    """
    w = torch.zeros_like(alpha_bars)
    w[1:] = 4 * scale * alpha_bars[:-1] * (1 - alphas[1:].sqrt())
    return w


def constant_decay_weights(
    alphas: torch.Tensor, alpha_bars: torch.Tensor, scale: float, decay_start_frac: float, decay_end_frac: float, **_
) -> torch.Tensor:
    """w_t constant for t <= start*T, then linear to 0 at end*T, 0 afterwards (eq. 4b).

    The constant is set so that max_t c_t = gamma. Whatever is added at step s reaches T scaled
    by sqrt(abar_T / abar_{s-1}), so the weights must stop early in the chain for q(z_T) to stay
    close to N(0, I).
    """
    T = len(alphas) - 1
    if not 0 <= decay_start_frac <= decay_end_frac <= 1:
        raise ConfigError(
            f"constant_decay needs 0 <= decay_start_frac <= decay_end_frac <= 1, got {decay_start_frac}, {decay_end_frac}"
        )
    t = torch.arange(T + 1, dtype=torch.float64)
    start, end = decay_start_frac * T, decay_end_frac * T
    ramp = ((end - t) / max(end - start, 1e-12)).clamp(0, 1)
    w = torch.where(t <= start, torch.ones_like(t), ramp)
    w[0] = 0
    peak = aggregate_coefficients(alphas, w).max()
    if not peak > 0:
        raise ConfigError(
            f"constant_decay with decay_start_frac={decay_start_frac}, decay_end_frac={decay_end_frac} gives no "
            f"step any weight (T={T}); raise decay_end_frac"
        )
    return w * (scale / peak)


WEIGHT_SCHEDULES = {"noise_tied": noise_tied_weights, "constant_decay": constant_decay_weights}


def aggregate_coefficients(alphas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """c_t = sqrt(a_t) (c_{t-1} + w_t), c_0 = 0: the closed-form marginal's mean coefficient (eq. 3).

    Unrolled, with s_t = prod_{k<=t} sqrt(a_k) = sqrt(abar_t): c_t / s_t = c_{t-1} / s_{t-1} +
    w_t / s_{t-1}, so c_t = s_t * sum_{k=1..t} w_k / s_{k-1} -- one cumprod and one cumsum
    instead of a Python loop over T (a config with T = 10^5 is checked in milliseconds).
    tests/test_diffusion.py compares it with the recursion to float64 precision.
    """
    sqrt_a = alphas.sqrt()
    sqrt_a[0] = 1.0  # s_0 = 1: index 0 is the clean data
    s = torch.cumprod(sqrt_a, 0)
    terms = torch.zeros_like(weights)
    terms[1:] = weights[1:] / s[:-1]
    c = s * torch.cumsum(terms, 0)
    if not torch.isfinite(c).all():  # s underflowed to 0 (abar_t < 1e-308): the recursion is exact there
        return _aggregate_coefficients_loop(alphas, weights)
    return c


def _aggregate_coefficients_loop(alphas: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The recursion of eq. 3 step by step (reference for the closed form above)."""
    c = torch.zeros_like(weights)
    for t in range(1, len(weights)):
        c[t] = alphas[t].sqrt() * (c[t - 1] + weights[t])
    return c


# ---------------------------------------------------------------------------------------------


@dataclass
class ScheduleTables:
    """Per-step float64 tables indexed by t = 0..T (index 0 is the clean data)."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alpha_bars: torch.Tensor


class Diffusion:
    """Noise schedule plus the aggregation coefficients of each extra modality.

    ``coeffs[name]`` holds c_t^(name) for t = 0..T; the image (z_0 itself) has none.
    """

    def __init__(
        self,
        num_steps: int = 1000,
        noise_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction: str = "eps",
    ):
        if noise_schedule not in NOISE_SCHEDULES:
            raise choice_error("diffusion.noise_schedule", noise_schedule, NOISE_SCHEDULES)
        if prediction not in PREDICTIONS:
            raise choice_error("diffusion.prediction", prediction, PREDICTIONS)
        self.num_steps = T = num_steps
        self.prediction = prediction
        betas = NOISE_SCHEDULES[noise_schedule](T, beta_start=beta_start, beta_end=beta_end)
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        self.alphas = 1 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        self.weights: dict[str, torch.Tensor] = {}
        self.coeffs: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg) -> "Diffusion":
        d = cfg.diffusion
        return cls(d.num_steps, d.noise_schedule, d.beta_start, d.beta_end, d.prediction)

    # -- aggregation ------------------------------------------------------------------------
    def add_modality(self, name: str, schedule: str, scale: float, max_terminal_coeff: float | None = None, **opts):
        """Register w_t^(name) and c_t^(name); refuse schedules that leave c_T above the bound."""
        if schedule not in WEIGHT_SCHEDULES:
            raise choice_error(f"modalities.{name}.weight_schedule", schedule, WEIGHT_SCHEDULES)
        w = WEIGHT_SCHEDULES[schedule](self.alphas, self.alpha_bars, scale=scale, **opts)
        c = aggregate_coefficients(self.alphas, w)
        if max_terminal_coeff is not None and not abs(float(c[-1])) <= max_terminal_coeff:
            raise ConfigError(
                f"modalities.{name}: weight_schedule={schedule} with weight_scale={scale} leaves "
                f"c_T={float(c[-1]):.4f} of the encoding in z_T (allowed: diffusion.max_terminal_coeff="
                f"{max_terminal_coeff}); lower weight_scale or end the weights earlier"
            )
        self.weights[name] = w
        self.coeffs[name] = c

    # -- tables gathered at a batch of timesteps ---------------------------------------------
    @staticmethod
    def _at(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t] shaped (N, 1, 1, 1) in ``like``'s dtype and device."""
        out = table.to(like.device)[t.to(like.device).long()]
        return out.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def aggregated_mean(self, encodings: dict[str, torch.Tensor], t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """sum_i c_t^(i) e_i (zero when there is no extra modality)."""
        out = torch.zeros_like(like)
        for name, e in encodings.items():
            out = out + self._at(self.coeffs[name], t, like) * e
        return out

    # -- eq. 3: sample from the marginal ------------------------------------------------------
    def q_sample(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, encodings: dict | None = None):
        """z_t = sqrt(abar_t) z_0 + sum_i c_t^(i) e_i + sqrt(1 - abar_t) eps."""
        abar = self._at(self.alpha_bars, t, z0)
        zt = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
        if encodings:
            zt = zt + self.aggregated_mean(encodings, t, z0)
        return zt

    def q_step(self, z_prev: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, encodings: dict | None = None):
        """One forward transition z_{t-1} -> z_t (eq. 1), used to check eq. 3 by iteration."""
        a = self._at(self.alphas, t, z_prev)
        agg = torch.zeros_like(z_prev)
        for name, e in (encodings or {}).items():
            agg = agg + self._at(self.weights[name], t, z_prev) * e
        return a.sqrt() * (z_prev + agg) + (1 - a).sqrt() * noise

    # -- eq. 6: posterior -------------------------------------------------------------------
    def posterior(self, zt: torch.Tensor, z0: torch.Tensor, t: torch.Tensor, encodings: dict | None = None):
        """Mean and variance of q(z_{t-1} | z_t, z_0, X) for t >= 1."""
        encodings = encodings or {}
        b = self._at(self.betas, t, zt)
        abar = self._at(self.alpha_bars, t, zt)
        abar_prev = self._at(self.alpha_bars, t - 1, zt)
        k0 = abar_prev.sqrt() * b / (1 - abar)
        kt = self._at(self.alphas, t, zt).sqrt() * (1 - abar_prev) / (1 - abar)
        shift_t = self.aggregated_mean(encodings, t, zt)
        shift_prev = self.aggregated_mean(encodings, t - 1, zt)
        mean = shift_prev + k0 * z0 + kt * (zt - shift_t)
        var = b * (1 - abar_prev) / (1 - abar)
        return mean, var

    # -- the image head's parametrisations (eq. 8) -------------------------------------------
    def target(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Regression target of the image head: eps, z_0 or v = sqrt(abar) eps - sqrt(1-abar) z_0."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return z0
        abar = self._at(self.alpha_bars, t, z0)
        return abar.sqrt() * noise - (1 - abar).sqrt() * z0

    def split_prediction(self, pred: torch.Tensor, zt: torch.Tensor, t: torch.Tensor, shift: torch.Tensor):
        """(z0_hat, eps_hat) from the image head's output, given the aggregated mean ``shift``.

        y_t = z_t - sum_i c_t e_i is a plain DDPM latent (docs/method.md, eq. 7), so the usual
        conversions apply to y_t.
        """
        y = zt - shift
        abar = self._at(self.alpha_bars, t, zt)
        if self.prediction == "eps":
            eps = pred
            z0 = (y - (1 - abar).sqrt() * eps) / abar.sqrt()
        elif self.prediction == "x0":
            z0 = pred
            eps = (y - abar.sqrt() * z0) / (1 - abar).sqrt()
        else:
            z0 = abar.sqrt() * y - (1 - abar).sqrt() * pred
            eps = (1 - abar).sqrt() * y + abar.sqrt() * pred
        return z0, eps

    def terminal_coefficients(self) -> dict[str, float]:
        """c_T^(i) for every registered modality (eq. 5)."""
        return {name: float(c[-1]) for name, c in self.coeffs.items()}
