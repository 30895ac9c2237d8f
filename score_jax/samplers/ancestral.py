"""DDPM's ancestral sampler (Ho et al. 2020, Alg. 2) as one lax.scan over t = T-1..0."""

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import schedules
from score_jax.samplers.common import _normal_per_sample, per_sample_keys

# eps_fn(x_t [B, ...], t int32 [B]) -> predicted noise [B, ...], t the 0-based timestep index.
EpsFn = Callable[[jax.Array, jax.Array], jax.Array]

VARIANCES = ("fixed_small", "fixed_large")


def _posterior_step(x, eps, z, c, clip_denoised: bool):
  """One step of Alg. 2 with the step's constants c (recip, recipm1, coef1, coef2, std)."""
  x0 = c["recip"] * x - c["recipm1"] * eps
  if clip_denoised:
    x0 = jnp.clip(x0, -1.0, 1.0)
  mean = c["coef1"] * x0 + c["coef2"] * x
  return (mean + c["std"] * z).astype(x.dtype), x0


def _step_constants(tab, ts, variance: str, dtype) -> dict:
  logvar = (tab.posterior_log_variance_clipped if variance == "fixed_small"
            else tab.fixed_large_log_variance)
  cast = lambda a: jnp.asarray(np.asarray(a, np.float64), dtype)
  return dict(recip=cast(tab.sqrt_recip_alphas_cumprod[ts]),
              recipm1=cast(tab.sqrt_recipm1_alphas_cumprod[ts]),
              coef1=cast(tab.posterior_mean_coef1[ts]), coef2=cast(tab.posterior_mean_coef2[ts]),
              std=cast(np.where(ts > 0, np.exp(0.5 * logvar[ts]), 0.0)))


def ddpm_step(x_t, eps, t: int, z, betas, variance: str = "fixed_large",
              clip_denoised: bool = True):
  """One ancestral step at timestep t (an int): (x_{t-1}, predicted x_0), given the network's
  eps and the noise z (unused at t = 0). The loop of `ddpm_ancestral` is this step."""
  if variance not in VARIANCES:
    raise ValueError(f"variance={variance!r}; expected one of {VARIANCES}.")
  c = _step_constants(schedules.ddpm_tables(betas), np.asarray(t), variance, x_t.dtype)
  return _posterior_step(x_t, jnp.asarray(eps, x_t.dtype), jnp.asarray(z, x_t.dtype), c,
                         clip_denoised)


def ddpm_ancestral(eps_fn: EpsFn, x_T, key, betas, variance: str = "fixed_large",
                   clip_denoised: bool = True, sample_ids=None,
                   snapshot_ts: Optional[Sequence[int]] = None,
                   noise_fn: Optional[Callable[[jax.Array], jax.Array]] = None,
                   on_step_done: Optional[Callable[[jax.Array], None]] = None):
  """x_{t-1} ~ p(x_{t-1} | x_t) from t = T-1 down to 0, as the original `p_sample_loop`.

  At each t: x_0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps(x_t, t), clipped to [-1, 1]
  when `clip_denoised`; mean = coef1_t x_0 + coef2_t x_t (the posterior q(x_{t-1}|x_t, x_0));
  x_{t-1} = mean + exp(log_var_t / 2) z, with no noise at t = 0. log_var is the posterior's
  (beta-tilde, 'fixed_small') or log beta ('fixed_large'; the posterior's at t = 0, where it
  is never used). Every table is computed in float64 from `betas` and cast to x's dtype.

  Args:
    eps_fn: (x_t, t [B] int32) -> epsilon.
    x_T: [B, ...] start, N(0, I) for the full schedule.
    key: PRNG key; sample b draws its z from fold_in(key, sample_ids[b]) and the step.
    betas: [T] betas; the loop runs over all T of them. Passing betas[:k] starts at
      t = k - 1 of the same schedule (the tables of a prefix are the prefix of the tables).
    variance: 'fixed_small' or 'fixed_large'.
    clip_denoised: clip the predicted x_0 to [-1, 1] (data in [-1, 1]).
    sample_ids: int [B] global ids (default 0..B-1).
    snapshot_ts: timesteps at which to also return the predicted x_0 (DDPM Fig. 6).
    noise_fn: (t) -> [B, ...] the z added at step t instead of draws from `key` (replays).
    on_step_done: host callback given t after each step (progress bars).

  Returns:
    x_0 [B, ...]; with snapshot_ts, (x_0, [len(snapshot_ts), B, ...] predicted x_0).
  """
  if variance not in VARIANCES:
    raise ValueError(f"variance={variance!r}; expected one of {VARIANCES}.")
  tab = schedules.ddpm_tables(betas)
  num_t = len(tab.betas)
  dtype = x_T.dtype
  ts = np.arange(num_t - 1, -1, -1)
  per_step = _step_constants(tab, ts, variance, dtype)
  per_step["t"] = jnp.asarray(ts, jnp.int32)
  snaps = [] if snapshot_ts is None else [int(t) for t in snapshot_ts]
  for t in snaps:
    if not 0 <= t < num_t:
      raise ValueError(f"snapshot_ts has t={t}; expected 0 <= t < {num_t}.")
  slot = np.full(num_t, -1)
  slot[snaps] = np.arange(len(snaps))
  per_step["slot"] = jnp.asarray(slot[ts], jnp.int32)
  keys = per_sample_keys(key, x_T.shape[0], sample_ids)
  shape = x_T.shape[1:]

  def step(carry, c):
    x, buf = carry
    t_b = jnp.full((x.shape[0],), c["t"], jnp.int32)
    z = (_normal_per_sample(keys, c["t"], shape, dtype) if noise_fn is None
         else noise_fn(c["t"]).astype(dtype))
    x, x0 = _posterior_step(x, eps_fn(x, t_b).astype(dtype), z, c, clip_denoised)
    if snaps:
      buf = jax.lax.cond(c["slot"] >= 0, lambda b: b.at[c["slot"]].set(x0), lambda b: b, buf)
    if on_step_done is not None:
      jax.debug.callback(on_step_done, c["t"])
    return (x, buf), None

  buf = jnp.zeros((len(snaps),) + x_T.shape, dtype) if snaps else None
  (x, buf), _ = jax.lax.scan(step, (x_T, buf), per_step)
  return (x, buf) if snaps else x
