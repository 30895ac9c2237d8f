"""Every network as a denoiser D(x; sigma) (EDM Table 1), in one data space: [-1, 1].

x = y + sigma n with y the data scaled to [-1, 1] (EDM's and DDPM's range); sigma is in the
same units. Each wrapper turns a network's native output into D:
- score networks (NCSN, NCSNv2): D = x + sigma^2 s(x, sigma), on the network's own data range
  (NCSN models see [0, 1] images: x and sigma are mapped there and back);
- epsilon networks (DDPM): D = x - sigma eps(x / sqrt(1 + sigma^2), t), where the network
  sees the variance-preserving x_t = sqrt(abar_t) x and t is the index of the grid sigma
  sqrt((1 - abar_t) / abar_t) nearest to sigma (a discrete network only knows its own t).
Samplers call `Denoiser.fn`; discrete networks also give `round_sigma`, so a sampler puts its
steps on the grid as EDM does for such networks.
"""

from typing import Callable, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np


class Denoiser(NamedTuple):
  """fn(x [B, ...], sigma [] or [B]) -> D [B, ...] with x in the [-1, 1] data space; the
  sigma range the network was trained on; round_sigma (NumPy) for discrete networks."""
  fn: Callable
  sigma_min: float
  sigma_max: float
  round_sigma: Optional[Callable] = None


def _per_sample(sigma, x):
  sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
  return sigma, sigma.reshape((-1,) + (1,) * (x.ndim - 1))


def nearest_index(sigma, grid):
  """Index of the grid value nearest to each sigma (EDM's round_sigma rule), int32 [B]."""
  grid = jnp.asarray(grid, jnp.float32)
  return jnp.argmin(jnp.abs(jnp.asarray(sigma, jnp.float32)[:, None] - grid[None, :]),
                    axis=1).astype(jnp.int32)


def round_to_grid(grid) -> Callable:
  """NumPy float64 function: each sigma replaced by the nearest value of `grid`."""
  grid = np.asarray(grid, np.float64)

  def round_sigma(sigma):
    sigma = np.asarray(sigma, np.float64)
    idx = np.argmin(np.abs(sigma.reshape(-1, 1) - grid[None, :]), axis=1)
    return grid[idx].reshape(sigma.shape)

  return round_sigma


def from_score(score_fn: Callable, sigma_min: float, sigma_max: float,
               data_range=(0.0, 1.0), grid=None) -> Denoiser:
  """D from a score network s(u, sigma_u [B]) on data in `data_range` (sigmas in its units).

  With `grid` (the network's levels, in its units), sigma is rounded to the nearest level
  before the network sees it, as for NCSN's index-conditioned network.
  """
  lo, hi = data_range
  half = (hi - lo) / 2.0  # u = lo + half (x + 1): sigma_u = half * sigma
  levels = None if grid is None else np.asarray(grid, np.float64) / half

  def fn(x, sigma):
    sig, sig_b = _per_sample(sigma, x)
    u = lo + half * (x + 1.0)
    score = score_fn(u, half * sig)  # d log p / du
    d_u = u + (half * sig_b) ** 2 * score
    return (d_u - lo) / half - 1.0

  return Denoiser(fn, sigma_min / half, sigma_max / half,
                  None if levels is None else round_to_grid(levels))


def ddpm_sigmas(alphas_cumprod) -> np.ndarray:
  """sigma_t = sqrt((1 - abar_t) / abar_t), t = 0..T-1: a DDPM network's grid (float64)."""
  abar = np.asarray(alphas_cumprod, np.float64)
  return np.sqrt((1.0 - abar) / abar)


def from_eps(eps_fn: Callable, alphas_cumprod) -> Denoiser:
  """D from an epsilon network eps(x_t, t [B] int32) of the DDPM forward process whose
  cumulative alphas are `alphas_cumprod` [T] (EDM Table 1's VP/iDDPM column, discrete)."""
  grid = ddpm_sigmas(alphas_cumprod)

  def fn(x, sigma):
    sig, sig_b = _per_sample(sigma, x)
    t = nearest_index(sig, grid)
    c_in = 1.0 / jnp.sqrt(1.0 + sig_b**2)
    return x - sig_b * eps_fn(c_in * x, t).astype(x.dtype)

  return Denoiser(fn, float(grid[0]), float(grid[-1]), round_to_grid(grid))


def eps_from_denoiser(denoiser: Denoiser, alphas_cumprod) -> Callable:
  """eps(x_t, t) for the DDPM process with `alphas_cumprod` from any denoiser, so that the
  ancestral sampler runs on every network: x = x_t / sqrt(abar_t), sigma_t as above,
  eps = (x - D(x; sigma_t)) / sigma_t, with sigma_t clipped to the network's range."""
  abar = jnp.asarray(np.asarray(alphas_cumprod, np.float64), jnp.float32)
  grid = jnp.asarray(ddpm_sigmas(alphas_cumprod), jnp.float32)

  def eps_fn(x_t, t):
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    sig = grid[t]
    x = x_t / jnp.sqrt(abar[t]).reshape(shape).astype(x_t.dtype)
    d = denoiser.fn(x, jnp.clip(sig, denoiser.sigma_min, denoiser.sigma_max).astype(x_t.dtype))
    return (x - d) / sig.reshape(shape).astype(x_t.dtype)

  return eps_fn
