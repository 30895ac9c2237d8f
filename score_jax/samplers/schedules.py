"""Noise-level sequences for the samplers of `samplers.SAMPLERS` (k-diffusion's convention):
float64 NumPy arrays of n + 1 decreasing sigmas ending with 0, in the EDM data space
(x = y + sigma n, y in [-1, 1] for images). Computed on the host, once per step count.
"""

import numpy as np

SPACINGS = ("leading", "trailing", "linspace")


def _with_zero(sigmas) -> np.ndarray:
  return np.append(np.asarray(sigmas, np.float64), 0.0)


def _check(n: int, sigma_min: float, sigma_max: float) -> None:
  if int(n) != n or n < 1:
    raise ValueError(f"n={n!r} steps: expected an integer >= 1.")
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}: expected "
                     "0 < sigma_min < sigma_max.")


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
  """Karras et al. (2022) Eq. 5: sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho)
  - sigma_max^(1/rho)))^rho for i = 0..n-1, then 0. [n + 1]."""
  _check(n, sigma_min, sigma_max)
  ramp = np.linspace(0.0, 1.0, int(n)) if n > 1 else np.zeros(1)
  lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
  return _with_zero((hi + ramp * (lo - hi)) ** rho)


def log_snr(n: int, sigma_min: float, sigma_max: float) -> np.ndarray:
  """Uniform in log sigma (log-SNR = -2 log sigma), sigma_max down to sigma_min, then 0."""
  _check(n, sigma_min, sigma_max)
  return _with_zero(np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), int(n))))


def vp(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> np.ndarray:
  """The VP SDE's sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) at n times uniform
  from t = 1 to eps_s (score_sde's sampling grid), then 0."""
  if int(n) != n or n < 1:
    raise ValueError(f"n={n!r} steps: expected an integer >= 1.")
  t = np.linspace(1.0, eps_s, int(n))
  return _with_zero(np.sqrt(np.expm1(0.5 * beta_d * t**2 + beta_min * t)))


def timesteps(n: int, num_train_timesteps: int, spacing: str = "leading") -> np.ndarray:
  """A discrete model's n timesteps, largest first, as diffusers spaces them: 'leading'
  (multiples of T // n from 0), 'trailing' (T - 1 down in steps of T / n) or 'linspace'
  (n rounded points from T - 1 to 0). int64 [n]."""
  big_t = int(num_train_timesteps)
  if int(n) != n or not 1 <= n <= big_t:
    raise ValueError(f"n={n!r} steps: expected 1 to the model's {big_t} timesteps.")
  if spacing == "leading":
    ts = (np.arange(0, n) * (big_t // n)).round()[::-1]
  elif spacing == "trailing":
    ts = np.round(np.arange(big_t, 0, -big_t / n)) - 1
  elif spacing == "linspace":
    ts = np.linspace(0, big_t - 1, n).round()[::-1]
  else:
    raise ValueError(f"spacing={spacing!r}; expected one of {SPACINGS}.")
  return ts.astype(np.int64)


def discrete(n: int, alphas_cumprod, spacing: str = "leading") -> np.ndarray:
  """The sigmas sqrt((1 - abar_t) / abar_t) of a discrete model (DDPM) at its `timesteps`
  with that spacing, then 0. [n + 1]."""
  abar = np.asarray(alphas_cumprod, np.float64)
  ts = timesteps(n, len(abar), spacing)
  return _with_zero(np.sqrt((1.0 - abar[ts]) / abar[ts]))


SCHEDULES = ("karras", "log_snr", "vp") + SPACINGS
