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

import dataclasses
from typing import Callable, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from score_jax import schedules


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


# EDM Table 1's preconditioners: sigma [B] float32 -> (c_skip, c_out, c_in, c_noise), each
# [B], written in the order of operations of the official code (float32 throughout), so the
# coefficients equal the official ones bit for bit where the formula allows.
PRECONDS = ("vp", "ve", "iddpm", "edm")


def vp_coefficients(sigma, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000):
  """VP: c_noise = (M - 1) sigma^-1(sigma) of the VP SDE; log(1 + sigma^2) in float32, not
  log1p, as the official code (its value is off by up to 5e-6 relative below sigma 0.3)."""
  sigma_inv = (jnp.sqrt(beta_min ** 2 + 2 * beta_d * jnp.log(1 + sigma ** 2)) - beta_min) / beta_d
  return jnp.ones_like(sigma), -sigma, 1 / jnp.sqrt(sigma ** 2 + 1), (M - 1) * sigma_inv


def ve_coefficients(sigma):
  return jnp.ones_like(sigma), sigma, jnp.ones_like(sigma), jnp.log(0.5 * sigma)


def edm_coefficients(sigma, sigma_data: float = 0.5):
  sd = sigma_data
  return (sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / jnp.sqrt(sigma ** 2 + sd ** 2),
          1 / jnp.sqrt(sd ** 2 + sigma ** 2), jnp.log(sigma) / 4)


def iddpm_u_table(M: int = 1000, C_1: float = 0.001, C_2: float = 0.008) -> np.ndarray:
  """iDDPM's sigma grid u [M + 1] (u[M] = 0), by the official float32 recursion. Converted
  snapshots carry the official table (its torch float32 values differ from this by ~3e-5
  relative); this one initialises networks trained here."""
  def alpha_bar(j):
    return np.float32(np.sin(np.float32(0.5 * np.pi) * np.float32(j) / M / np.float32(C_2 + 1))
                      ) ** 2
  u = np.zeros(M + 1, np.float32)
  for j in range(M, 0, -1):
    ratio = max(np.float32(alpha_bar(j - 1) / alpha_bar(j)), np.float32(C_1))
    u[j - 1] = np.sqrt((u[j] ** 2 + 1) / ratio - 1)
  return u


def iddpm_round_index(sigma, u):
  """Index of the nearest entry of u for each sigma, as torch.cdist computes distances for a
  table this long (d^2 = (-2 sigma) u + sigma^2 + u^2 in float32, first index on ties):
  plain argmin |sigma - u| picks a neighbour for ~4 in 10^4 sigmas."""
  s = jnp.asarray(sigma, jnp.float32)[:, None]
  u = jnp.asarray(u, jnp.float32)[None, :]
  d2 = ((-2 * s) * u + s * s) + u * u
  return jnp.argmin(jnp.sqrt(jnp.maximum(d2, 1e-30)), axis=1).astype(jnp.int32)


def iddpm_coefficients(sigma, u):
  M = u.shape[0] - 1
  index = iddpm_round_index(sigma, u)
  return (jnp.ones_like(sigma), -sigma, 1 / jnp.sqrt(sigma ** 2 + 1),
          (M - 1 - index).astype(jnp.float32))


# --- EDM Table 1 as objects: one frozen dataclass per row -----------------------------------
# Each gives coefficients(sigma [B], table) -> (c_skip, c_out, c_in, c_noise) and the sigma
# range the official class samples over. They are the `precond` field of models.edm.EDMNet,
# hashable, so that the network is a plain linen module and two networks with the same row
# compare equal. Rows with a table (iDDPM's u) say its length; the network keeps the table
# with its parameters, as the official code keeps a buffer.

@dataclasses.dataclass(frozen=True)
class VPPrecond:
  beta_d: float = 19.9
  beta_min: float = 0.1
  M: int = 1000
  epsilon_t: float = 1e-5
  name = "vp"
  table_size = 0

  def coefficients(self, sigma, table=None):
    del table
    return vp_coefficients(sigma, self.beta_d, self.beta_min, self.M)

  def sigma_range(self, table=None):
    del table
    vp = schedules.vp_sigma(self.beta_d, self.beta_min)
    return float(vp(self.epsilon_t)), float(vp(1.0))


@dataclasses.dataclass(frozen=True)
class VEPrecond:
  sigma_min: float = 0.02
  sigma_max: float = 100.0
  name = "ve"
  table_size = 0

  def coefficients(self, sigma, table=None):
    del table
    return ve_coefficients(sigma)

  def sigma_range(self, table=None):
    del table
    return float(self.sigma_min), float(self.sigma_max)


@dataclasses.dataclass(frozen=True)
class IDDPMPrecond:
  C_1: float = 0.001  # pylint: disable=invalid-name
  C_2: float = 0.008  # pylint: disable=invalid-name
  M: int = 1000
  name = "iddpm"

  @property
  def table_size(self) -> int:
    return self.M + 1

  def table(self) -> np.ndarray:
    return iddpm_u_table(self.M, self.C_1, self.C_2)

  def coefficients(self, sigma, table=None):
    return iddpm_coefficients(sigma, self.table() if table is None else table)

  def sigma_range(self, table=None):
    u = self.table() if table is None else np.asarray(table)
    return float(u[self.M - 1]), float(u[0])


@dataclasses.dataclass(frozen=True)
class EDMPrecond:
  sigma_data: float = 0.5
  sigma_min: float = 0.0
  sigma_max: float = float("inf")
  name = "edm"
  table_size = 0

  def coefficients(self, sigma, table=None):
    del table
    return edm_coefficients(sigma, self.sigma_data)

  def sigma_range(self, table=None):
    del table
    return float(self.sigma_min), float(self.sigma_max)


PRECONDITIONERS = {"vp": VPPrecond, "ve": VEPrecond, "iddpm": IDDPMPrecond, "edm": EDMPrecond}


def preconditioner(name: str, **kwargs):
  """The Table 1 row `name` ('vp', 've', 'iddpm', 'edm') with the official class's kwargs;
  None values take the official defaults."""
  if name not in PRECONDITIONERS:
    raise ValueError(f"precond={name!r}; expected one of {tuple(PRECONDITIONERS)}.")
  return PRECONDITIONERS[name](**{k: v for k, v in kwargs.items() if v is not None})
