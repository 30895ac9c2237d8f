"""EDM's samplers (Karras et al. 2022): its own (Alg. 2) and the design-space one (Table 1).

Both take a denoiser D(x; sigma) and run as one lax.scan over the steps; every per-step
constant is computed in NumPy float64 at trace time.
"""

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import schedules
from score_jax.samplers.common import _normal_per_sample, per_sample_keys

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


def denoiser_from_score(score_fn: Callable[[jax.Array, jax.Array], jax.Array]) -> DenoiseFn:
  """D(x; sigma) = x + sigma^2 s(x, sigma) (EDM Eq. 3 / Tweedie) from a continuous-sigma
  score s(x, sigma), sigma [] or [B]; for NCSNv2 use `model.score_at_sigma`."""

  def denoise(x, sigma):
    sig = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    return x + (sig**2).reshape((-1,) + (1,) * (x.ndim - 1)) * score_fn(x, sig)

  return denoise


@dataclasses.dataclass(frozen=True)
class Churn:
  """EDM Alg. 2's stochasticity: gamma_i = min(S_churn / N, sqrt(2) - 1) on the steps with
  S_min <= sigma_i <= S_max, fresh noise scaled by S_noise. S_churn 0 is deterministic."""
  S_churn: float = 0.0  # pylint: disable=invalid-name
  S_min: float = 0.0  # pylint: disable=invalid-name
  S_max: float = float("inf")  # pylint: disable=invalid-name
  S_noise: float = 1.0  # pylint: disable=invalid-name

  def gamma(self, sigmas, num_steps: int) -> np.ndarray:
    in_range = (self.S_min <= sigmas) & (sigmas <= self.S_max)
    return np.where(in_range, min(self.S_churn / num_steps, np.sqrt(2) - 1), 0.0)


@dataclasses.dataclass(frozen=True)
class AblationSettings(Churn):
  """The options of EDM's design-space sampler, with EDM's names and defaults (Table 1):
  the defaults are EDM's own sampler (Heun, 18 steps, sigma 0.002 to 80, rho 7)."""
  num_steps: int = 18
  sigma_min: Optional[float] = None
  sigma_max: Optional[float] = None
  rho: float = 7.0
  solver: str = "heun"
  discretization: str = "edm"
  schedule: str = "linear"
  scaling: str = "none"
  epsilon_s: float = 1e-3
  C_1: float = 0.001  # pylint: disable=invalid-name
  C_2: float = 0.008  # pylint: disable=invalid-name
  M: int = 1000  # pylint: disable=invalid-name
  alpha: float = 1.0


def _ablation_constants(o: AblationSettings, round_sigma, dtype) -> dict:
  """Every per-step constant of the design-space sampler, NumPy float64 at trace time,
  returned as arrays of `dtype` for the scan (plus 'x0_scale')."""
  if o.solver not in ("euler", "heun"):
    raise ValueError(f"solver={o.solver!r}; expected 'euler' or 'heun'.")
  if o.num_steps < 1:
    raise ValueError(f"num_steps={o.num_steps!r} must be at least 1.")
  lo, hi = schedules.default_sigma_range(o.discretization, o.epsilon_s)
  sigma_min = lo if o.sigma_min is None else o.sigma_min
  sigma_max = hi if o.sigma_max is None else o.sigma_max
  sch = schedules.schedule(o.schedule, o.scaling, sigma_min, sigma_max, o.epsilon_s)
  rnd = (lambda v: np.asarray(v, np.float64)) if round_sigma is None else (
      lambda v: np.asarray(round_sigma(np.asarray(v, np.float64)), np.float64))
  steps = schedules.sigma_steps(o.discretization, o.num_steps, sigma_min, sigma_max, o.rho,
                                o.epsilon_s, o.C_1, o.C_2, o.M)
  t = np.concatenate([sch.sigma_inv(rnd(steps)), [0.0]])  # t_N = 0
  t_cur, t_next = t[:-1], t[1:]
  sig_cur = sch.sigma(t_cur)
  t_hat = sch.sigma_inv(rnd(sig_cur + o.gamma(sig_cur, o.num_steps) * sig_cur))
  h = t_next - t_hat

  def ode_coefs(tt):
    """(a, b, sigma, s) with dx/dt = a x + b D(x / s; sigma) at times tt."""
    with np.errstate(divide="ignore", invalid="ignore"):  # t = 0 only; see below
      sig, sig_d, s, s_d = sch.sigma(tt), sch.sigma_deriv(tt), sch.s(tt), sch.s_deriv(tt)
      return sig_d / sig + s_d / s, -sig_d * s / sig, sig, s

  a_hat, b_hat, sig_hat, s_hat = ode_coefs(t_hat)
  # The last step (to t = 0) is Euler; its t_prime is 0, where the coefficients are
  # undefined, so they are zeroed and never used.
  a_pr, b_pr, sig_pr, s_pr = (np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
                              for v in ode_coefs(t_hat + o.alpha * h))
  churn = np.sqrt(np.clip(sig_hat**2 - sig_cur**2, 0, None)) * s_hat * o.S_noise
  per_step = {k: jnp.asarray(v, dtype) for k, v in dict(
      a_hat=a_hat, b_hat=b_hat, sig_hat=sig_hat, s_hat=s_hat, a_pr=a_pr, b_pr=b_pr,
      sig_pr=sig_pr, s_pr=s_pr, churn=churn, rescale=s_hat / sch.s(t_cur), h=h).items()}
  per_step["heun"] = jnp.asarray(np.arange(o.num_steps) < o.num_steps - 1
                                 if o.solver == "heun" else np.zeros(o.num_steps, bool))
  per_step["i"] = jnp.arange(o.num_steps)
  return per_step, float(sch.sigma(t[0]) * sch.s(t[0])), bool(np.any(churn > 0))


def ablation_sampler(denoise_fn: DenoiseFn, latents, key, round_sigma=None, sample_ids=None,
                     noise_fn=None, **edm_kwargs):
  """EDM's design-space sampler (its `ablation_sampler`): Alg. 1 and 2 over Table 1.

  `edm_kwargs` are EDM's own (`AblationSettings`: num_steps, sigma_min, sigma_max, rho,
  solver, discretization, schedule, scaling, epsilon_s, C_1, C_2, M, alpha, S_churn, S_min,
  S_max, S_noise). The ODE is dx/dt = (sigma'/sigma + s'/s) x - sigma' s / sigma D(x / s;
  sigma); Heun's correction is skipped on the step to t = 0. With S_churn > 0 each step
  first raises the noise level (Alg. 2). `alpha` is the generic second-order parameter.

  Args:
    denoise_fn: D(x, sigma) for x [B, ...] and sigma [] (called with a scalar).
    latents: [B, ...] standard normal; the first state is latents * sigma(t_0) s(t_0).
    key: PRNG key for the churn noise; sample b uses fold_in(key, sample_ids[b]).
    round_sigma: NumPy float64 function that moves sigmas onto a discrete network's grid
      (a `precond.Denoiser`'s round_sigma); applied to the steps and to t_hat, as EDM does.
    noise_fn: (step i) -> [B, ...] standard normal churn noise instead of the per-sample
      draws from `key` (to replay a recorded run).
    **edm_kwargs: sigma_min / sigma_max None take the discretization's paper defaults (VP
      from its beta schedule, VE 0.02 to 100, iDDPM 0.002 to 81, EDM 0.002 to 80).

  Returns:
    [B, ...] samples, in the dtype of `latents`.
  """
  o = AblationSettings(**edm_kwargs)
  dtype = latents.dtype
  per_step, x0_scale, stochastic = _ablation_constants(o, round_sigma, dtype)
  keys = per_sample_keys(key, latents.shape[0], sample_ids)
  alpha = o.alpha

  def step(x, c):
    x_hat = c["rescale"] * x
    if stochastic:
      z = (_normal_per_sample(keys, c["i"], x.shape[1:], dtype) if noise_fn is None
           else noise_fn(c["i"]).astype(dtype))
      x_hat = x_hat + c["churn"] * z
    d_cur = c["a_hat"] * x_hat + c["b_hat"] * denoise_fn(x_hat / c["s_hat"], c["sig_hat"])
    euler = x_hat + c["h"] * d_cur

    def heun(_):
      x_pr = x_hat + alpha * c["h"] * d_cur
      d_pr = c["a_pr"] * x_pr + c["b_pr"] * denoise_fn(x_pr / c["s_pr"], c["sig_pr"])
      w = 1.0 / (2.0 * alpha)
      return x_hat + c["h"] * ((1 - w) * d_cur + w * d_pr)

    x_next = jax.lax.cond(c["heun"], heun, lambda _: euler, None)
    return x_next.astype(dtype), None

  x, _ = jax.lax.scan(step, latents * jnp.asarray(x0_scale, dtype), per_step)
  return x


def edm_sampler(denoise_fn: DenoiseFn, latents, key, num_steps: int = 18,
                sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                round_sigma: Optional[Callable] = None, sample_ids=None, noise_fn=None,
                **churn):
  """EDM's own sampler (Alg. 2; its `generate.edm_sampler`), defaults as the paper's.

  Steps sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
  then 0. Each step raises sigma to t_hat = t_i (1 + gamma_i), gamma_i = min(S_churn / N,
  sqrt(2) - 1) inside [S_min, S_max], adding sqrt(t_hat^2 - t_i^2) S_noise z, takes an Euler
  step of dx/dsigma = (x - D(x; sigma)) / sigma to t_{i+1} and corrects it with Heun's
  rule except on the last step. 2N - 1 denoiser calls. S_churn 0 is the deterministic
  Heun sampler of Alg. 1.

  Args:
    denoise_fn: D(x [B, ...], sigma []) -> [B, ...].
    latents: [B, ...] standard normal; x_0 = latents * sigma_0.
    key: PRNG key of the churn noise; sample b uses fold_in(key, sample_ids[b]).
    round_sigma: NumPy function onto a discrete network's sigma grid (steps and t_hat).
    noise_fn: (step i) -> [B, ...] churn noise instead of draws from `key` (replays).
    **churn: S_churn, S_min, S_max, S_noise (`Churn`), EDM's names and defaults.

  Returns:
    [B, ...] samples in the dtype of `latents`.
  """
  churn = Churn(**churn)
  if num_steps < 1:
    raise ValueError(f"num_steps={num_steps!r} must be at least 1.")
  if not 0 < sigma_min < sigma_max:
    raise ValueError(f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}: expected "
                     "0 < sigma_min < sigma_max.")
  rnd = (lambda v: v) if round_sigma is None else (
      lambda v: np.asarray(round_sigma(np.asarray(v, np.float64)), np.float64))
  t_steps = schedules.sigma_steps("edm", num_steps, sigma_min, sigma_max, rho)
  t_steps = np.append(rnd(t_steps), 0.0)
  t_cur, t_next = t_steps[:-1], t_steps[1:]
  t_hat = rnd(t_cur + churn.gamma(t_cur, num_steps) * t_cur)
  dtype = latents.dtype
  noise_scale = np.sqrt(np.clip(t_hat**2 - t_cur**2, 0, None)) * churn.S_noise
  per_step = {k: jnp.asarray(v, dtype) for k, v in dict(
      t_hat=t_hat, t_next=t_next, t_next_safe=np.where(t_next > 0, t_next, 1.0),
      churn=noise_scale).items()}
  per_step["heun"] = jnp.arange(num_steps) < num_steps - 1
  per_step["i"] = jnp.arange(num_steps)
  keys = per_sample_keys(key, latents.shape[0], sample_ids)
  stochastic = bool(np.any(noise_scale > 0))

  def step(x, c):
    x_hat = x
    if stochastic:
      z = (_normal_per_sample(keys, c["i"], x.shape[1:], dtype) if noise_fn is None
           else noise_fn(c["i"]).astype(dtype))
      x_hat = x + c["churn"] * z
    d_cur = (x_hat - denoise_fn(x_hat, c["t_hat"])) / c["t_hat"]
    x_euler = x_hat + (c["t_next"] - c["t_hat"]) * d_cur

    def heun(_):
      d_prime = (x_euler - denoise_fn(x_euler, c["t_next_safe"])) / c["t_next_safe"]
      return x_hat + (c["t_next"] - c["t_hat"]) * (0.5 * d_cur + 0.5 * d_prime)

    x_next = jax.lax.cond(c["heun"], heun, lambda _: x_euler, None)
    return x_next.astype(dtype), None

  x, _ = jax.lax.scan(step, latents * jnp.asarray(t_steps[0], dtype), per_step)
  return x
