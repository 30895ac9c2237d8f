"""Exact scores and denoisers of isotropic Gaussian mixtures, for tests and analyses.

For data x ~ sum_k w_k N(mu_k, std^2 I) perturbed by N(0, sigma^2 I), the perturbed density
is sum_k w_k N(mu_k, (std^2 + sigma^2) I). With responsibilities r_k(x) proportional to
w_k N(x; mu_k, (std^2 + sigma^2) I):
  score(x, sigma)   = sum_k r_k (mu_k - x) / (std^2 + sigma^2)
  denoise(x, sigma) = x + sigma^2 score(x, sigma)        (EDM Eq. 3; Tweedie)
                    = sum_k r_k [mu_k + std^2 / (std^2 + sigma^2) (x - mu_k)].
std = 0 is the empirical distribution of the means (NCSNv2 Fig. 2's mixture of data points).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class GaussianMixture(NamedTuple):
  """means [K, ...] (any layout, the same as x's per-example shape), weights [K], std []."""
  means: jax.Array
  weights: jax.Array
  std: float = 0.0

  def _var_and_resp(self, x, sigma):
    x = jnp.asarray(x)
    means = jnp.asarray(self.means, x.dtype)
    event = means.shape[1:]
    if x.shape[1:] != event:
      raise ValueError(f"x has example shape {x.shape[1:]}, the means {event}.")
    b = x.shape[0]
    xf = x.reshape(b, -1)
    mf = means.reshape(means.shape[0], -1)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (b,))
    var = self.std**2 + sigma**2  # [B]
    # ||x - mu||^2 through the expansion: [B, K] without a [B, K, D] intermediate.
    d2 = (jnp.sum(xf * xf, 1)[:, None] - 2.0 * xf @ mf.T + jnp.sum(mf * mf, 1)[None, :])
    logits = jnp.log(jnp.asarray(self.weights, x.dtype))[None, :] - d2 / (2.0 * var[:, None])
    resp = jax.nn.softmax(logits, axis=1)  # log-sum-exp inside: stable for tiny sigma
    return xf, mf, var, resp

  def score(self, x, sigma):
    """Exact score of the perturbed mixture: x [B, ...], sigma [] or [B] -> [B, ...]."""
    xf, mf, var, resp = self._var_and_resp(x, sigma)
    mean = resp @ mf
    return ((mean - xf) / var[:, None]).reshape(x.shape)

  def denoise(self, x, sigma):
    """Exact denoiser D(x; sigma) = E[x_0 | x]: x [B, ...], sigma [] or [B] -> [B, ...]."""
    xf, mf, var, resp = self._var_and_resp(x, sigma)
    shrink = (self.std**2 / var)[:, None]
    out = resp @ mf + shrink * (xf - resp @ mf)
    return out.reshape(x.shape)


class DiagonalGaussianMixture(NamedTuple):
  """sum_k w_k N(mu_k, diag(s_k^2)): means [K, D], weights [K], stds [K, D] (per component,
  per dimension); x is [B, D]. Perturbed by N(0, sigma^2 I), component k becomes
  N(mu_k, diag(s_k^2 + sigma^2)), so the denoiser and the density are closed forms."""
  means: jax.Array
  weights: jax.Array
  stds: jax.Array

  def _log_joint(self, x, sigma):
    """(log w_k + log N(x; mu_k, diag(s_k^2 + sigma^2)) [B, K], the variances [B, K, D])."""
    x = jnp.asarray(x)
    mu = jnp.asarray(self.means, x.dtype)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    var = jnp.asarray(self.stds, x.dtype)[None] ** 2 + sigma[:, None, None] ** 2  # [B, K, D]
    d = x[:, None, :] - mu[None]
    log_n = -0.5 * jnp.sum(d * d / var + jnp.log(2 * jnp.pi * var), axis=-1)
    return jnp.log(jnp.asarray(self.weights, x.dtype))[None] + log_n, var

  def log_prob(self, x, sigma=0.0):
    """log p_sigma(x) [B] of the mixture convolved with N(0, sigma^2 I)."""
    return jax.nn.logsumexp(self._log_joint(x, sigma)[0], axis=1)

  def responsibilities(self, x, sigma=0.0):
    """[B, K]: the posterior of each component given x at noise level sigma."""
    return jax.nn.softmax(self._log_joint(x, sigma)[0], axis=1)

  def denoise(self, x, sigma):
    """E[y | x] [B, D] = sum_k r_k (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k))."""
    logits, var = self._log_joint(x, sigma)
    r = jax.nn.softmax(logits, axis=1)
    mu = jnp.asarray(self.means, x.dtype)[None]
    post = mu + (jnp.asarray(self.stds, x.dtype)[None] ** 2 / var) * (x[:, None, :] - mu)
    return jnp.einsum("bk,bkd->bd", r, post)
