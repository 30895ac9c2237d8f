"""DDPM's variational bound on the negative log-likelihood, in bits per dimension.

L = L_T + sum_{t=1}^{T-1} L_{t-1} + L_0 (Ho et al. 2020, Eq. 5): L_T = KL(q(x_T|x_0) || N(0, I)),
L_{t-1} = KL(q(x_{t-1}|x_t, x_0) || p(x_{t-1}|x_t)) with x_t ~ q(x_t|x_0), and L_0 = -log p(x_0|x_1)
under the discretised Gaussian decoder (256 bins of width 2/255 on [-1, 1], the outer ones
open). p's mean is the ancestral sampler's (the network's x_0, clipped to [-1, 1], through
the posterior mean); its variance is the sampler's fixed_small or fixed_large. Every term is
the mean over dimensions divided by ln 2. This is the estimate DDPM Table 2 reports (3.70
bits/dim on the CIFAR-10 test set), one fresh x_t per term.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import schedules
from score_jax.samplers.ancestral import VARIANCES
from score_jax.samplers.common import per_sample_keys


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x):
  """The tanh approximation of Phi (error < 3e-4) that the original code uses."""
  return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
  """log P(bin of x) per element, in nats, for x in [-1, 1] on the grid of 256 uint8 values;
  the edge bins extend to -inf and +inf."""
  inv_std = jnp.exp(-log_scale)
  centered = x - mean
  cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
  cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
  return jnp.where(x < -0.999, log_cdf_plus,
                   jnp.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_bits(nats):
  return nats.reshape(nats.shape[0], -1).mean(axis=1) / math.log(2.0)


def ddpm_bpd(eps_fn, x0, key, betas, variance: str = "fixed_large", clip_denoised: bool = True,
             sample_ids=None) -> dict:
  """The bound for each image of x0 [B, H, W, C] (in [-1, 1], on the uint8 grid).

  eps_fn(x_t, t int32 [B]) -> eps. One lax.scan over t = T-1..0, one network call per t; the
  noise of image i at step t comes from fold_in(fold_in(key, sample_ids[i]), t), so the
  numbers do not depend on how the batch is split over devices.

  Returns float32 arrays [B] in bits/dim: 'total', 'prior' (L_T), 'decoder' (L_0) and
  'kl' (sum of L_1..L_{T-1}).
  """
  if variance not in VARIANCES:
    raise ValueError(f"variance={variance!r}; expected one of {VARIANCES}.")
  tab = schedules.ddpm_tables(betas)
  num_t = len(tab.betas)
  logvar = (tab.posterior_log_variance_clipped if variance == "fixed_small"
            else tab.fixed_large_log_variance)
  f32 = lambda a: jnp.asarray(np.asarray(a, np.float64), jnp.float32)
  consts = dict(sqrt_abar=f32(tab.sqrt_alphas_cumprod),
                sqrt_1m_abar=f32(tab.sqrt_one_minus_alphas_cumprod),
                recip=f32(tab.sqrt_recip_alphas_cumprod),
                recipm1=f32(tab.sqrt_recipm1_alphas_cumprod),
                coef1=f32(tab.posterior_mean_coef1), coef2=f32(tab.posterior_mean_coef2),
                post_logvar=f32(tab.posterior_log_variance_clipped), logvar=f32(logvar))
  keys = per_sample_keys(key, x0.shape[0], sample_ids)

  def term(_, t):
    c = {k: v[t] for k, v in consts.items()}
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, t), x0.shape[1:],
                                                 x0.dtype))(keys)
    x_t = c["sqrt_abar"] * x0 + c["sqrt_1m_abar"] * noise
    true_mean = c["coef1"] * x0 + c["coef2"] * x_t
    eps = eps_fn(x_t, jnp.full((x0.shape[0],), t, jnp.int32))
    x0_pred = c["recip"] * x_t - c["recipm1"] * eps
    if clip_denoised:
      x0_pred = jnp.clip(x0_pred, -1.0, 1.0)
    mean = c["coef1"] * x0_pred + c["coef2"] * x_t
    kl = _mean_bits(normal_kl(true_mean, c["post_logvar"], mean, c["logvar"]))
    nll = -_mean_bits(discretized_gaussian_log_likelihood(x0, mean, 0.5 * c["logvar"]))
    return None, jnp.where(t == 0, nll, kl)

  _, terms = jax.lax.scan(term, None, jnp.arange(num_t - 1, -1, -1))  # [T, B], t descending
  abar_T = float(tab.alphas_cumprod[-1])
  prior = _mean_bits(normal_kl(math.sqrt(abar_T) * x0, math.log(1.0 - abar_T),
                               jnp.zeros_like(x0), jnp.zeros_like(x0)))
  decoder, kl = terms[-1], terms[:-1].sum(axis=0)
  return dict(total=prior + kl + decoder, prior=prior, decoder=decoder, kl=kl)


# --- Probability-flow ODE likelihood (Song et al. 2021, App. D; EDM's denoiser form) ------

TRACES = ("rademacher", "gaussian", "exact")


def _divergence_of_denoiser(denoise_fn, x, sigma, probe):
  """tr dD/dx per sample [B]: exact (probe None; one vector-Jacobian product per dimension)
  or Hutchinson's v^T (dD/dx) v with the fixed probe v [B, ...]. Reverse mode (vjp), not
  jvp: networks with custom_vjp rules (the CPU max-pool gradient) have no forward mode."""
  b = x.shape[0]
  _, pullback = jax.vjp(lambda u: denoise_fn(u, sigma), x)
  if probe is not None:
    probe = probe.astype(x.dtype)
    return jnp.sum((probe * pullback(probe)[0]).reshape(b, -1), axis=1)
  dim = int(np.prod(x.shape[1:]))
  basis = jnp.eye(dim, dtype=x.dtype).reshape((dim, 1) + x.shape[1:])

  def one(e):
    v = jnp.broadcast_to(e, x.shape)
    return jnp.sum((v * pullback(v)[0]).reshape(b, -1), axis=1)

  return jnp.sum(jax.lax.map(one, basis), axis=0)


def ode_nll(denoise_fn, x, sigma_min, sigma_max, key, exact_trace: bool = False,
            rtol: float = 1e-5, atol: float = 1e-5, probe: str = "rademacher",
            solver: str = "tsit5"):
  """Negative log-likelihood -log p_sigma_min(x), nats per sample [B], by the
  probability-flow ODE integrated from sigma_min to sigma_max with its divergence:

    log p_sigma_min(x) = log N(x(sigma_max); 0, sigma_max^2 I)
                         + integral of (D - tr dD/dx) / sigma dsigma   (D the dimension)

  (in t = log sigma the integrand is D - tr dD/dx). The trace is exact (one jvp per
  dimension: small data) or Hutchinson's with one `probe` ('rademacher' or 'gaussian')
  drawn per sample from `key` and kept for the whole solve (score_sde's estimator, unbiased).
  x is in the denoiser's data space; `bits_per_dim` turns the result into bits/dim.
  """
  from score_jax.samplers import ode as ode_lib  # pylint: disable=g-import-not-at-top
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}: expected "
                     "0 < sigma_min < sigma_max.")
  if probe not in TRACES[:2]:
    raise ValueError(f"probe={probe!r}; expected 'rademacher' or 'gaussian'.")
  x = jnp.asarray(x)
  b, dim = x.shape[0], int(np.prod(x.shape[1:]))
  v = None
  if not exact_trace:
    keys = per_sample_keys(key, b)
    draw = ((lambda k: jax.random.rademacher(k, x.shape[1:], x.dtype)) if probe == "rademacher"
            else (lambda k: jax.random.normal(k, x.shape[1:], x.dtype)))
    v = jax.vmap(draw)(keys)

  def field(t, state):
    y, _ = state
    sigma = jnp.exp(t).astype(x.dtype)
    return (y - denoise_fn(y, sigma), dim - _divergence_of_denoiser(denoise_fn, y, sigma, v))

  (y1, delta), _ = ode_lib.solve_log_sigma(
      field, (x, jnp.zeros((b,), x.dtype)), float(np.log(sigma_min)), float(np.log(sigma_max)),
      solver, rtol, atol)
  sq = jnp.sum((y1 * y1).reshape(b, -1), axis=1)
  prior = -0.5 * sq / sigma_max**2 - dim * (math.log(sigma_max) + 0.5 * math.log(2 * math.pi))
  return -(prior + delta)


def bits_per_dim(nll, dim: int, data_range: float = 2.0, bins: int = 256):
  """Nats per sample of uniformly dequantised images ((k + u) / bins mapped linearly onto
  an interval of width `data_range`, [-1, 1] by default) -> bits per dimension of the
  discrete images: nll / (dim ln 2) + log2(bins / data_range) (7 for 8-bit images in
  [-1, 1], score_sde's offset)."""
  return nll / (dim * math.log(2.0)) + math.log2(bins / data_range)
