"""Samplers as pure functions built on lax.scan.

Every sample's randomness comes from `fold_in(key, sample_id)`, so a sample depends only on
the key and its id: the same whichever batch, split or device count produced it.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

# score_fn(x [B, ...], i) -> score [B, ...], i a scalar int noise-level index.
IndexedScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def per_sample_keys(key, batch_size: int, sample_ids=None):
  """[B] keys, one per sample id (default 0..B-1)."""
  ids = jnp.arange(batch_size) if sample_ids is None else jnp.asarray(sample_ids)
  if ids.shape != (batch_size,):
    raise ValueError(f"sample_ids has shape {ids.shape}; expected ({batch_size},).")
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, ids)


def _normal_per_sample(keys, counter, shape, dtype):
  return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, counter), shape, dtype))(keys)


def uniform_init(key, shape, dtype=jnp.float32, sample_ids=None):
  """x_0 ~ U[0, 1] of `shape` = [B, ...], drawn per sample id (the official starting point)."""
  keys = per_sample_keys(key, shape[0], sample_ids)
  return jax.vmap(lambda k: jax.random.uniform(k, shape[1:], dtype))(keys)


def gaussian_init(key, shape, sigma_max, dtype=jnp.float32, sample_ids=None):
  """x_0 ~ N(0, sigma_max^2 I) of `shape` = [B, ...], drawn per sample id.

  The prior of the VE SDE (Song et al. 2021), i.e. roughly the data perturbed at the first
  level. Unlike U[0, 1], its mean brightness is typical of that level: a 28x28 U[0, 1] start
  sits 0.37 above MNIST's mean, 3.5 standard deviations of the mean pixel at sigma_1 = 3, a
  region a short-trained network's score does not pull back from (grey squares in the grid).
  """
  keys = per_sample_keys(key, shape[0], sample_ids)
  return sigma_max * jax.vmap(lambda k: jax.random.normal(k, shape[1:], dtype))(keys)


INITS = ("uniform", "gaussian")


def initial_samples(kind: str, key, shape, sigma_max, dtype=jnp.float32, sample_ids=None):
  """x_0 by name: 'uniform' (U[0, 1], official NCSN/NCSNv2) or 'gaussian' (N(0, sigma_max^2))."""
  if kind == "uniform":
    return uniform_init(key, shape, dtype, sample_ids)
  if kind == "gaussian":
    return gaussian_init(key, shape, sigma_max, dtype, sample_ids)
  raise ValueError(f"sampler init={kind!r}; expected one of {INITS}.")


def langevin_step_sizes(sigmas, step_lr):
  """alpha_i = step_lr * (sigma_i / sigma_L)^2 (NCSN Alg. 1), [L]."""
  sigmas = jnp.asarray(sigmas)
  return step_lr * (sigmas / sigmas[-1]) ** 2


def _annealed_core(score_fn, x_init, sigmas, n_steps_each, step_lr, noise_fn,
                   constrain=None, on_level_done=None, snapshot_every=None):
  """The loop of Algorithm 1, shared by sampling, inpainting and interpolation.

  noise_fn(level, counter) gives the z of each step; constrain(x, level) (inpainting)
  rewrites the state after each step. Returns (x, states of every level or None).
  """
  if snapshot_every is not None and snapshot_every < 1:
    raise ValueError(f"snapshot_every={snapshot_every!r} must be a positive integer.")
  dtype = x_init.dtype
  sigmas = jnp.asarray(sigmas, dtype)
  alphas = langevin_step_sizes(sigmas, jnp.asarray(step_lr, dtype))

  def level(x, i):
    alpha = alphas[i]

    def step(x, t):
      z = noise_fn(i, i * n_steps_each + t)
      x = x + alpha * score_fn(x, i) + jnp.sqrt(2.0 * alpha) * z
      if constrain is not None:
        x = constrain(x, i)
      return x.astype(dtype), None

    x, _ = jax.lax.scan(step, x, jnp.arange(n_steps_each))
    if on_level_done is not None:
      jax.debug.callback(on_level_done, i)
    return x, (x if snapshot_every else None)

  return jax.lax.scan(level, x_init, jnp.arange(sigmas.shape[0]))


def _snapshots(states, snapshot_every):
  return states[snapshot_every - 1::snapshot_every]


def annealed_langevin(score_fn: IndexedScoreFn, x_init, sigmas, n_steps_each: int, step_lr,
                      key, denoise: bool = False, sample_ids: Optional[jax.Array] = None,
                      on_level_done: Optional[Callable[[jax.Array], None]] = None,
                      snapshot_every: Optional[int] = None):
  """Annealed Langevin dynamics (NCSNv2 Algorithm 1).

  For each level i = 1..L and T = n_steps_each steps:
    x <- x + alpha_i s(x, i) + sqrt(2 alpha_i) z,   alpha_i = step_lr (sigma_i / sigma_L)^2.
  With `denoise`, a final x <- x + sigma_L^2 s(x, L) (Tweedie's formula, NCSNv2 App. C.2).

  The loops are lax.scan over levels and over steps, so compile time does not grow with L
  or T.

  Args:
    score_fn: (x, i) -> score, i a traced int32 scalar level index.
    x_init: [B, ...] starting samples; their dtype is kept.
    sigmas: [L] decreasing noise levels.
    n_steps_each: T, steps per level.
    step_lr: eps of Algorithm 1.
    key: PRNG key; sample b uses fold_in(key, sample_ids[b]).
    denoise: add the final denoising step.
    sample_ids: int [B] global ids of the samples (default 0..B-1); give the offsets when a
      batch is a slice of a larger one.
    on_level_done: host callback given the finished level index, for progress bars; it runs
      through jax.debug.callback and changes nothing in the computation.
    snapshot_every: k; also return the state after levels k, 2k, ... (NCSN Fig. 4's
      progress figures). Costs L/k copies of the batch.

  Returns:
    [B, ...] final samples; with snapshot_every, (final, [L // k, B, ...] snapshots). The
    snapshots are taken before the final denoising step.
  """
  keys = per_sample_keys(key, x_init.shape[0], sample_ids)
  noise_fn = lambda i, counter: _normal_per_sample(keys, counter, x_init.shape[1:],
                                                   x_init.dtype)
  x, states = _annealed_core(score_fn, x_init, sigmas, n_steps_each, step_lr, noise_fn,
                             None, on_level_done, snapshot_every)
  if denoise:
    sig_l = jnp.asarray(sigmas, x.dtype)[-1]
    x = (x + sig_l**2 * score_fn(x, jnp.asarray(len(sigmas) - 1))).astype(x_init.dtype)
  return (x, _snapshots(states, snapshot_every)) if snapshot_every else x


def annealed_langevin_inpaint(score_fn: IndexedScoreFn, x_init, known, mask, sigmas,
                              n_steps_each: int, step_lr, key,
                              sample_ids: Optional[jax.Array] = None,
                              snapshot_every: Optional[int] = None,
                              on_level_done: Optional[Callable[[jax.Array], None]] = None):
  """Inpainting by annealed Langevin (NCSN Algorithm 2).

  At each level i the known pixels are noised once, y_i = known + sigma_i z, and after every
  Langevin step they are replaced by y_i, so the unknown pixels are sampled conditionally on
  a version of the known ones at the current noise level. At the end the known pixels are
  the data plus sigma_L noise.

  Args:
    known: [B, ...] images whose pixels under `mask` are kept.
    mask: 1 where a pixel is known, 0 where it is to be filled; any shape that broadcasts
      against x ([...], [B, ...], [1, H, W, 1], ...).
    Others (on_level_done, snapshot_every) as `annealed_langevin`.

  Returns:
    [B, ...] completions (and snapshots with snapshot_every).
  """
  dtype = x_init.dtype
  keys = per_sample_keys(key, x_init.shape[0], sample_ids)
  shape = x_init.shape[1:]
  sig = jnp.asarray(sigmas, dtype)
  mask = jnp.broadcast_to(jnp.asarray(mask, dtype), x_init.shape)
  known = jnp.asarray(known, dtype)
  n_step_noises = len(sigmas) * n_steps_each  # y's noise uses counters after the steps'

  def constrain(x, i):
    y = known + sig[i] * _normal_per_sample(keys, n_step_noises + i, shape, dtype)
    return mask * y + (1.0 - mask) * x

  noise_fn = lambda i, counter: _normal_per_sample(keys, counter, shape, dtype)
  x, states = _annealed_core(score_fn, x_init, sigmas, n_steps_each, step_lr, noise_fn,
                             constrain, on_level_done, snapshot_every)
  return (x, _snapshots(states, snapshot_every)) if snapshot_every else x


def annealed_langevin_interpolate(score_fn: IndexedScoreFn, x_init, n_interpolations: int,
                                  sigmas, n_steps_each: int, step_lr, key,
                                  row_ids: Optional[jax.Array] = None,
                                  on_level_done: Optional[Callable[[jax.Array], None]] = None):
  """Interpolation between samples (NCSNv2 App. B.2, Fig. 6).

  Each row starts all of its N + 1 interpolants at the same x_0; at every step interpolant k
  receives the noise cos(k pi / 2N) z1 + sin(k pi / 2N) z2, with z1, z2 shared along the row.
  z1 and z2 are the noise streams of sample ids 2r and 2r + 1, so k = 0 and k = N are what
  `annealed_langevin` gives for those ids from the same x_0 (up to float rounding).

  Args:
    x_init: [R, ...] one start per row.
    n_interpolations: N (N + 1 images per row, k = 0..N).
    row_ids: int [R] global row ids (default 0..R-1).
    on_level_done: as `annealed_langevin`.

  Returns:
    [R, N + 1, ...] interpolants.
  """
  if n_interpolations < 1:
    raise ValueError(f"n_interpolations={n_interpolations!r} must be at least 1.")
  rows = x_init.shape[0]
  dtype = x_init.dtype
  ids = jnp.arange(rows) if row_ids is None else jnp.asarray(row_ids)
  keys1 = per_sample_keys(key, rows, 2 * ids)
  keys2 = per_sample_keys(key, rows, 2 * ids + 1)
  shape = x_init.shape[1:]
  angles = jnp.arange(n_interpolations + 1) * (jnp.pi / (2 * n_interpolations))
  cos = jnp.cos(angles).astype(dtype).reshape((1, -1) + (1,) * len(shape))
  sin = jnp.sin(angles).astype(dtype).reshape((1, -1) + (1,) * len(shape))
  # cos(pi/2) is not exactly 0 in floating point: pin the ends so that k = 0 and k = N get
  # exactly z1 and z2.
  cos = cos.at[:, 0].set(1).at[:, -1].set(0)
  sin = sin.at[:, 0].set(0).at[:, -1].set(1)
  n = n_interpolations + 1

  def noise_fn(i, counter):
    z1 = _normal_per_sample(keys1, counter, shape, dtype)[:, None]
    z2 = _normal_per_sample(keys2, counter, shape, dtype)[:, None]
    return (cos * z1 + sin * z2).reshape((rows * n,) + shape)

  x0 = jnp.repeat(x_init, n, axis=0)
  x, _ = _annealed_core(score_fn, x0, sigmas, n_steps_each, step_lr, noise_fn,
                        on_level_done=on_level_done)
  return x.reshape((rows, n) + shape)


def indexed_score_fn(apply_fn, variables) -> IndexedScoreFn:
  """Adapt `apply_fn(variables, x, labels [B])` to the sampler's score_fn(x, i)."""

  def score_fn(x, i):
    return apply_fn(variables, x, jnp.full((x.shape[0],), i, jnp.int32))

  return score_fn


# --- EDM (Karras et al. 2022): Algorithms 1 and 2 over the whole of Table 1 -----------------

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


def denoiser_from_score(score_fn: Callable[[jax.Array, jax.Array], jax.Array]) -> DenoiseFn:
  """D(x; sigma) = x + sigma^2 s(x, sigma) (EDM Eq. 3 / Tweedie) from a continuous-sigma
  score s(x, sigma), sigma [] or [B]; for NCSNv2 use `model.score_at_sigma`."""

  def denoise(x, sigma):
    sig = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    return x + (sig**2).reshape((-1,) + (1,) * (x.ndim - 1)) * score_fn(x, sig)

  return denoise


def edm_sampler(denoise_fn: DenoiseFn, latents, key, num_steps=18, sigma_min=None,
                sigma_max=None, rho=7, solver="heun", discretization="edm",
                schedule="linear", scaling="none", epsilon_s=1e-3, C_1=0.001, C_2=0.008,
                M=1000, alpha=1, S_churn=0, S_min=0, S_max=float("inf"), S_noise=1,
                sample_ids=None):  # pylint: disable=invalid-name
  """EDM's deterministic (Alg. 1) and stochastic (Alg. 2) samplers over Table 1.

  The defaults are EDM's own sampler (Heun, 18 steps, sigma 0.002 to 80, rho 7). The ODE is
  dx/dt = (sigma'/sigma + s'/s) x - sigma' s / sigma D(x / s; sigma); Heun's correction is
  skipped on the step to t = 0. With S_churn > 0 each step first raises the noise level by
  gamma_i = min(S_churn / N, sqrt(2) - 1) when S_min <= sigma(t_i) <= S_max (Alg. 2), with
  fresh noise scaled by S_noise. `alpha` is the generic second-order parameter (1: Heun).

  Args:
    denoise_fn: D(x, sigma) for x [B, ...] and sigma [] (called with a scalar).
    latents: [B, ...] standard normal; the first state is latents * sigma(t_0) s(t_0).
    key: PRNG key for the churn noise; sample b uses fold_in(key, sample_ids[b]).
    sigma_min, sigma_max: None takes the discretization's paper defaults (VP from its beta
      schedule, VE 0.02 to 100, iDDPM 0.002 to 81, EDM 0.002 to 80).

  Returns:
    [B, ...] samples, in the dtype of `latents`.
  """
  from score_jax import schedules  # pylint: disable=g-import-not-at-top
  if solver not in ("euler", "heun"):
    raise ValueError(f"solver={solver!r}; expected 'euler' or 'heun'.")
  if num_steps < 1:
    raise ValueError(f"num_steps={num_steps!r} must be at least 1.")
  lo, hi = schedules.default_sigma_range(discretization, epsilon_s)
  sigma_min = lo if sigma_min is None else sigma_min
  sigma_max = hi if sigma_max is None else sigma_max
  sch = schedules.schedule(schedule, scaling, sigma_min, sigma_max, epsilon_s)
  steps = schedules.sigma_steps(discretization, num_steps, sigma_min, sigma_max, rho, epsilon_s,
                                C_1, C_2, M)
  t = np.concatenate([sch.sigma_inv(steps), [0.0]])  # t_N = 0
  t_cur, t_next = t[:-1], t[1:]
  sig_cur = sch.sigma(t_cur)
  in_range = (S_min <= sig_cur) & (sig_cur <= S_max)
  gamma = np.where(in_range, min(S_churn / num_steps, np.sqrt(2) - 1), 0.0)
  t_hat = sch.sigma_inv(sig_cur + gamma * sig_cur)
  h = t_next - t_hat
  t_prime = t_hat + alpha * h

  def ode_coefs(tt):
    """(a, b, sigma, s) with dx/dt = a x + b D(x / s; sigma) at times tt."""
    with np.errstate(divide="ignore", invalid="ignore"):  # t = 0 only; see below
      sig, sig_d, s, s_d = sch.sigma(tt), sch.sigma_deriv(tt), sch.s(tt), sch.s_deriv(tt)
      return sig_d / sig + s_d / s, -sig_d * s / sig, sig, s

  a_hat, b_hat, sig_hat, s_hat = ode_coefs(t_hat)
  # The last step (to t = 0) is Euler; its t_prime is 0, where the coefficients are
  # undefined, so they are zeroed and never used.
  a_pr, b_pr, sig_pr, s_pr = (np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
                              for v in ode_coefs(t_prime))
  churn = np.sqrt(np.clip(sig_hat**2 - sig_cur**2, 0, None)) * s_hat * S_noise
  rescale = s_hat / sch.s(t_cur)
  use_heun = np.zeros(num_steps, bool)
  if solver == "heun":
    use_heun[:-1] = True
  dtype = latents.dtype
  per_step = {k: jnp.asarray(v, dtype) for k, v in dict(
      a_hat=a_hat, b_hat=b_hat, sig_hat=sig_hat, s_hat=s_hat, a_pr=a_pr, b_pr=b_pr,
      sig_pr=sig_pr, s_pr=s_pr, churn=churn, rescale=rescale, h=h).items()}
  per_step["heun"] = jnp.asarray(use_heun)
  per_step["i"] = jnp.arange(num_steps)
  keys = per_sample_keys(key, latents.shape[0], sample_ids)
  stochastic = bool(np.any(churn > 0))

  def step(x, c):
    x_hat = c["rescale"] * x
    if stochastic:
      x_hat = x_hat + c["churn"] * _normal_per_sample(keys, c["i"], x.shape[1:], dtype)
    d_cur = c["a_hat"] * x_hat + c["b_hat"] * denoise_fn(x_hat / c["s_hat"], c["sig_hat"])
    euler = x_hat + c["h"] * d_cur

    def heun(_):
      x_pr = x_hat + alpha * c["h"] * d_cur
      d_pr = c["a_pr"] * x_pr + c["b_pr"] * denoise_fn(x_pr / c["s_pr"], c["sig_pr"])
      w = 1.0 / (2.0 * alpha)
      return x_hat + c["h"] * ((1 - w) * d_cur + w * d_pr)

    x_next = jax.lax.cond(c["heun"], heun, lambda _: euler, None)
    return x_next.astype(dtype), None

  x0 = latents * jnp.asarray(sch.sigma(t[0]) * sch.s(t[0]), dtype)
  x, _ = jax.lax.scan(step, x0, per_step)
  return x
