"""EDM's design space (Karras et al. 2022, Table 1): time steps, sigma(t), s(t).

Everything here is NumPy float64 at trace time: the samplers turn it into per-step
constants, so a jitted loop does only array arithmetic.
"""

from typing import Callable, NamedTuple

import numpy as np

VP_BETA_D, VP_BETA_MIN = 19.9, 0.1  # the VP SDE of Song et al. 2021: EDM Table 1 and its code


def vp_sigma(beta_d, beta_min):
  return lambda t: np.sqrt(np.exp(0.5 * beta_d * t**2 + beta_min * t) - 1.0)


class Schedule(NamedTuple):
  """sigma(t), its derivative and inverse; s(t) and its derivative."""
  sigma: Callable
  sigma_deriv: Callable
  sigma_inv: Callable
  s: Callable
  s_deriv: Callable


def default_sigma_range(discretization: str, epsilon_s: float = 1e-3):
  """(sigma_min, sigma_max) the paper uses with each discretization."""
  vp = vp_sigma(VP_BETA_D, VP_BETA_MIN)
  table = {"vp": (float(vp(epsilon_s)), float(vp(1.0))), "ve": (0.02, 100.0),
           "iddpm": (0.002, 81.0), "edm": (0.002, 80.0)}
  if discretization not in table:
    raise ValueError(f"discretization={discretization!r}; expected one of {sorted(table)}.")
  return table[discretization]


def vp_betas(sigma_min, sigma_max, epsilon_s):
  """beta_d, beta_min of the VP SDE whose sigma(eps_s), sigma(1) are sigma_min, sigma_max."""
  beta_d = 2 * (np.log(sigma_min**2 + 1) / epsilon_s - np.log(sigma_max**2 + 1)) / (epsilon_s - 1)
  beta_min = np.log(sigma_max**2 + 1) - 0.5 * beta_d
  return beta_d, beta_min


def sigma_steps(discretization, num_steps, sigma_min, sigma_max, rho=7.0, epsilon_s=1e-3,
                C_1=0.001, C_2=0.008, M=1000):  # pylint: disable=invalid-name
  """The N noise levels sigma_0 > ... > sigma_{N-1} of Table 1's time-step column."""
  i = np.arange(num_steps, dtype=np.float64)
  frac = i / max(num_steps - 1, 1)
  if discretization == "vp":
    beta_d, beta_min = vp_betas(sigma_min, sigma_max, epsilon_s)
    return vp_sigma(beta_d, beta_min)(1 + frac * (epsilon_s - 1))
  if discretization == "ve":
    return np.sqrt(sigma_max**2 * (sigma_min**2 / sigma_max**2) ** frac)
  if discretization == "iddpm":
    u = np.zeros(M + 1)
    alpha_bar = lambda j: np.sin(0.5 * np.pi * j / M / (C_2 + 1)) ** 2
    for j in range(M, 0, -1):
      u[j - 1] = np.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C_1) - 1)
    kept = u[(u >= sigma_min) & (u <= sigma_max)]
    return kept[np.round((len(kept) - 1) / max(num_steps - 1, 1) * i).astype(np.int64)]
  if discretization == "edm":
    return (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
  raise ValueError(f"discretization={discretization!r}; expected vp, ve, iddpm or edm.")


def schedule(name: str, scaling: str, sigma_min, sigma_max, epsilon_s=1e-3) -> Schedule:
  """sigma(t) for 'vp' / 've' / 'linear' and s(t) for 'vp' / 'none' (Table 1)."""
  if name == "vp":
    beta_d, beta_min = vp_betas(sigma_min, sigma_max, epsilon_s)
    sig = vp_sigma(beta_d, beta_min)
    sig_d = lambda t: 0.5 * (beta_min + beta_d * t) * (sig(t) + 1 / sig(t))
    sig_inv = lambda s: (np.sqrt(beta_min**2 + 2 * beta_d * np.log(s**2 + 1)) - beta_min) / beta_d
  elif name == "ve":
    sig, sig_inv = np.sqrt, lambda s: s**2
    # Infinite at t = 0, which the samplers reach only as the end point (never evaluated there).
    sig_d = lambda t: 0.5 / np.sqrt(np.maximum(t, np.finfo(np.float64).tiny))
  elif name == "linear":
    sig, sig_d, sig_inv = (lambda t: t), (lambda t: np.ones_like(t)), (lambda s: s)
  else:
    raise ValueError(f"schedule={name!r}; expected vp, ve or linear.")
  if scaling == "vp":
    s = lambda t: 1 / np.sqrt(1 + sig(t) ** 2)
    s_d = lambda t: -sig(t) * sig_d(t) * s(t) ** 3
  elif scaling == "none":
    s, s_d = (lambda t: np.ones_like(t)), (lambda t: np.zeros_like(t))
  else:
    raise ValueError(f"scaling={scaling!r}; expected vp or none.")
  return Schedule(sig, sig_d, sig_inv, s, s_d)


# --- DDPM (Ho et al. 2020): the discrete forward process and its posterior ------------------

BETA_SCHEDULES = ("linear",)


def ddpm_betas(schedule: str, beta_start: float, beta_end: float, num_timesteps: int):
  """beta_1..beta_T as float64 [T] ('linear': np.linspace(beta_start, beta_end, T), DDPM)."""
  if schedule not in BETA_SCHEDULES:
    raise ValueError(f"beta schedule={schedule!r}; expected one of {BETA_SCHEDULES}.")
  if int(num_timesteps) != num_timesteps or num_timesteps < 2:
    raise ValueError(f"num_timesteps={num_timesteps!r} must be an integer >= 2.")
  if not 0.0 < beta_start < beta_end < 1.0:
    raise ValueError(f"beta_start={beta_start!r}, beta_end={beta_end!r}: expected "
                     "0 < beta_start < beta_end < 1.")
  return np.linspace(beta_start, beta_end, int(num_timesteps), dtype=np.float64)


class DDPMTables(NamedTuple):
  """The float64 [T] tables of the original code's GaussianDiffusion, index t = 0..T-1."""
  betas: np.ndarray
  alphas_cumprod: np.ndarray
  alphas_cumprod_prev: np.ndarray
  sqrt_alphas_cumprod: np.ndarray
  sqrt_one_minus_alphas_cumprod: np.ndarray
  sqrt_recip_alphas_cumprod: np.ndarray
  sqrt_recipm1_alphas_cumprod: np.ndarray
  posterior_variance: np.ndarray
  posterior_log_variance_clipped: np.ndarray
  posterior_mean_coef1: np.ndarray
  posterior_mean_coef2: np.ndarray
  fixed_large_log_variance: np.ndarray

  @property
  def sigmas(self) -> np.ndarray:
    """sigma_t = sqrt((1 - abar_t) / abar_t): the noise level of x_t / sqrt(abar_t) in the
    variance-exploding view of EDM Table 1 (the DDPM network's own discrete sigma grid)."""
    return np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)


def ddpm_tables(betas) -> DDPMTables:
  """Every table the DDPM loss and ancestral sampler use, computed in float64 from betas [T].

  posterior_log_variance_clipped replaces the t = 0 entry (variance 0) by the t = 1 one, and
  fixed_large_log_variance is log([posterior_variance[1], betas[1:]]), as the original.
  """
  b = np.asarray(betas, np.float64)
  if b.ndim != 1 or b.size < 2 or np.any(b <= 0) or np.any(b >= 1):
    raise ValueError(f"betas must be a [T] array (T >= 2) in (0, 1); got shape {b.shape}.")
  alphas = 1.0 - b
  abar = np.cumprod(alphas)
  abar_prev = np.append(1.0, abar[:-1])
  post_var = b * (1.0 - abar_prev) / (1.0 - abar)
  return DDPMTables(
      betas=b, alphas_cumprod=abar, alphas_cumprod_prev=abar_prev,
      sqrt_alphas_cumprod=np.sqrt(abar), sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - abar),
      sqrt_recip_alphas_cumprod=np.sqrt(1.0 / abar),
      sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / abar - 1.0),
      posterior_variance=post_var,
      posterior_log_variance_clipped=np.log(np.append(post_var[1], post_var[1:])),
      posterior_mean_coef1=b * np.sqrt(abar_prev) / (1.0 - abar),
      posterior_mean_coef2=(1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
      fixed_large_log_variance=np.log(np.append(post_var[1], b[1:])))
