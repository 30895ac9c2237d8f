"""k-diffusion's samplers on a denoiser, in one signature:

    fn(denoise_fn, x, sigmas, key=None, **options) -> x0

`denoise_fn(x, sigma)` is D(x; sigma) for x [B, ...] and a scalar sigma; `x` is at noise level
sigmas[0] (a fresh start is sigmas[0] * normal); `sigmas` is a host array, decreasing, one
step per interval, usually ending with 0 (`samplers.schedules`). Each sampler is one
`lax.scan` over the steps whose per-step constants are computed in float64 on the host, so it
compiles once per step count. Stochastic samplers draw per sample id (`sample_ids`, default
0..B-1) from fold_in(key, id): a sample does not depend on the batch it ran in.

Formulas follow Karras et al. (2022) and k-diffusion's `sampling.py` (its step rules are
pinned by tests/fixtures/samplers): d = (x - D) / sigma is the probability-flow ODE's
dx/dsigma.
"""

import jax
import jax.numpy as jnp
import numpy as np

from score_jax.samplers.common import _normal_per_sample, per_sample_keys


def host_sigmas(sigmas) -> np.ndarray:
  """`sigmas` as float64 [n + 1], checked: at least two, decreasing, the last >= 0."""
  s = np.asarray(sigmas, np.float64)
  if s.ndim != 1 or len(s) < 2:
    raise ValueError(f"sigmas has shape {s.shape}; expected [steps + 1] with steps >= 1.")
  if np.any(np.diff(s) >= 0) or s[-1] < 0:
    raise ValueError(f"sigmas={s.tolist()} must decrease strictly to a last value >= 0.")
  return s


def scan_steps(step, x, per_step: dict):
  """lax.scan of `step(x, constants) -> x` over the dict of [steps, ...] constants."""
  out, _ = jax.lax.scan(lambda c, k: (step(c, k), None), x, per_step)
  return out


def _consts(dtype, **arrays) -> dict:
  return {k: jnp.asarray(v, dtype) if np.asarray(v).dtype.kind == "f" else jnp.asarray(v)
          for k, v in arrays.items()}


def _to_d(x, sigma, denoised):
  return (x - denoised) / sigma


def euler(denoise_fn, x, sigmas, key=None, sample_ids=None):
  """Euler on dx/dsigma = (x - D) / sigma (k-diffusion's sample_euler): NFE = steps."""
  del key, sample_ids
  s = host_sigmas(sigmas)

  def step(x, c):
    return x + _to_d(x, c["s"], denoise_fn(x, c["s"])) * c["dt"]

  return scan_steps(step, x, _consts(x.dtype, s=s[:-1], dt=np.diff(s)))


def heun(denoise_fn, x, sigmas, key=None, sample_ids=None):
  """Heun's second-order method (EDM Alg. 1; sample_heun): an Euler step corrected with the
  slope at its end, except on a step to sigma = 0 (plain Euler). NFE = 2 steps - 1."""
  del key, sample_ids
  s = host_sigmas(sigmas)
  nxt = s[1:]

  def step(x, c):
    d = _to_d(x, c["s"], denoise_fn(x, c["s"]))
    x_euler = x + d * c["dt"]

    def correct(_):
      d2 = _to_d(x_euler, c["s_next_safe"], denoise_fn(x_euler, c["s_next_safe"]))
      return x + 0.5 * (d + d2) * c["dt"]

    return jax.lax.cond(c["second"], correct, lambda _: x_euler, None)

  return scan_steps(step, x, _consts(x.dtype, s=s[:-1], dt=np.diff(s), second=nxt > 0,
                                     s_next_safe=np.where(nxt > 0, nxt, 1.0)))


def dpm_2(denoise_fn, x, sigmas, key=None, sample_ids=None):
  """k-diffusion's DPM-Solver-2-inspired midpoint method (sample_dpm_2): the slope at the
  log-midpoint sigma_mid = sqrt(sigma_i sigma_(i+1)) carries the whole step; a step to
  sigma = 0 is Euler. NFE = 2 steps - 1."""
  del key, sample_ids
  s = host_sigmas(sigmas)
  nxt = s[1:]
  mid = np.where(nxt > 0, np.sqrt(s[:-1] * np.where(nxt > 0, nxt, 1.0)), 1.0)

  def step(x, c):
    d = _to_d(x, c["s"], denoise_fn(x, c["s"]))

    def midpoint(_):
      x_mid = x + d * (c["mid"] - c["s"])
      return x + _to_d(x_mid, c["mid"], denoise_fn(x_mid, c["mid"])) * c["dt"]

    return jax.lax.cond(c["second"], midpoint, lambda _: x + d * c["dt"], None)

  return scan_steps(step, x, _consts(x.dtype, s=s[:-1], dt=np.diff(s), mid=mid,
                                     second=nxt > 0))


def lms_coefficients(sigmas: np.ndarray, order: int) -> np.ndarray:
  """[steps, order] weights of the linear multistep method: step i's weight j is the integral
  over [sigma_i, sigma_(i+1)] of the Lagrange basis polynomial of node sigma_(i-j) on the
  nodes sigma_i, ..., sigma_(i-k+1), k = min(i + 1, order) (exact polynomial integrals)."""
  steps = len(sigmas) - 1
  out = np.zeros((steps, order))
  for i in range(steps):
    k = min(i + 1, order)
    nodes = sigmas[i - np.arange(k)]
    for j in range(k):
      others = np.delete(nodes, j)
      basis = np.poly1d(others, r=True) / np.prod(nodes[j] - others)
      antiderivative = np.polyint(basis)
      out[i, j] = antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i])
  return out


def lms(denoise_fn, x, sigmas, key=None, sample_ids=None, order: int = 4):
  """Linear multistep on the slopes d (sample_lms): order min(i + 1, `order`) at step i
  (1 to 4), the slope history in the scan carry. NFE = steps."""
  del key, sample_ids
  if order not in (1, 2, 3, 4):
    raise ValueError(f"order={order!r}; expected 1 to 4.")
  s = host_sigmas(sigmas)
  coef = lms_coefficients(s, order)

  def step(carry, c):
    x, hist = carry
    d = _to_d(x, c["s"], denoise_fn(x, c["s"]))
    hist = jnp.concatenate([d[None], hist[:-1]])
    return x + jnp.tensordot(c["coef"], hist, axes=1), hist

  hist = jnp.zeros((order,) + x.shape, x.dtype)
  out, _ = scan_steps(step, (x, hist), _consts(x.dtype, s=s[:-1], coef=coef))
  return out


def ancestral_step(sigma_from, sigma_to, eta: float = 1.0):
  """(sigma_down, sigma_up): the deterministic target and the noise of an ancestral step,
  sigma_up = min(sigma_to, eta sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2)),
  sigma_down = sqrt(sigma_to^2 - sigma_up^2). NumPy, elementwise."""
  sigma_from, sigma_to = np.asarray(sigma_from, np.float64), np.asarray(sigma_to, np.float64)
  if not eta:
    return sigma_to, np.zeros_like(sigma_to)
  up = np.minimum(sigma_to, eta * np.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2)
                                          / sigma_from**2))
  return np.sqrt(sigma_to**2 - up**2), up


def euler_ancestral(denoise_fn, x, sigmas, key=None, sample_ids=None, eta: float = 1.0,
                    s_noise: float = 1.0):
  """Euler ancestral (sample_euler_ancestral): an Euler step to sigma_down, then fresh noise
  of std sigma_up (`ancestral_step`); none on the step to 0. eta = 1 is DDPM's / DDIM(1)'s
  law, eta = 0 plain Euler. NFE = steps."""
  s = host_sigmas(sigmas)
  down, up = ancestral_step(s[:-1], s[1:], eta)
  keys = per_sample_keys(key, x.shape[0], sample_ids) if key is not None else None
  if keys is None and np.any(up > 0):
    raise ValueError("euler_ancestral with eta > 0 needs a key.")

  def step(x, c):
    x = x + _to_d(x, c["s"], denoise_fn(x, c["s"])) * (c["down"] - c["s"])
    if keys is None:
      return x
    return x + _normal_per_sample(keys, c["i"], x.shape[1:], x.dtype) * (s_noise * c["up"])

  return scan_steps(step, x, _consts(x.dtype, s=s[:-1], down=down, up=up,
                                     i=np.arange(len(s) - 1)))


def ddim(denoise_fn, x, sigmas, key=None, sample_ids=None, eta: float = 0.0):
  """DDIM (Song et al. 2021) in the EDM space: eta = 0 is the Euler step of the
  probability-flow ODE (diffusers' DDIMScheduler(eta=0) step for step), eta > 0 adds the
  DDIM noise, whose law is Euler ancestral's with the same eta (DDIM's sigma_t^2 /
  abar_(t-1) = eta^2 sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2)."""
  if not eta:
    return euler(denoise_fn, x, sigmas)
  return euler_ancestral(denoise_fn, x, sigmas, key, sample_ids, eta=eta)

