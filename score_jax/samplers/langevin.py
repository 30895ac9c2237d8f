"""Annealed Langevin dynamics (NCSN / NCSNv2), inpainting and interpolation, on lax.scan."""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from score_jax.samplers.common import _normal_per_sample, per_sample_keys

# score_fn(x [B, ...], i) -> score [B, ...], i a scalar int noise-level index.
IndexedScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


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


