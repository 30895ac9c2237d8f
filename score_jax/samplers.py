"""Samplers as pure functions built on lax.scan.

Every sample's randomness comes from `fold_in(key, sample_id)`, so a sample depends only on
the key and its id: the same whichever batch, split or device count produced it.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

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


def langevin_step_sizes(sigmas, step_lr):
  """alpha_i = step_lr * (sigma_i / sigma_L)^2 (NCSN Alg. 1), [L]."""
  sigmas = jnp.asarray(sigmas)
  return step_lr * (sigmas / sigmas[-1]) ** 2


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
  if snapshot_every is not None and snapshot_every < 1:
    raise ValueError(f"snapshot_every={snapshot_every!r} must be a positive integer.")
  dtype = x_init.dtype
  sigmas = jnp.asarray(sigmas, dtype)
  n_levels = sigmas.shape[0]
  alphas = langevin_step_sizes(sigmas, jnp.asarray(step_lr, dtype))
  keys = per_sample_keys(key, x_init.shape[0], sample_ids)

  def level(x, i):
    alpha = alphas[i]

    def step(x, t):
      z = _normal_per_sample(keys, i * n_steps_each + t, x.shape[1:], dtype)
      x = x + alpha * score_fn(x, i) + jnp.sqrt(2.0 * alpha) * z
      return x.astype(dtype), None

    x, _ = jax.lax.scan(step, x, jnp.arange(n_steps_each))
    if on_level_done is not None:
      jax.debug.callback(on_level_done, i)
    return x, (x if snapshot_every else None)

  x, states = jax.lax.scan(level, x_init, jnp.arange(n_levels))
  if denoise:
    x = x + sigmas[-1] ** 2 * score_fn(x, jnp.asarray(n_levels - 1))
  x = x.astype(dtype)
  if snapshot_every:
    return x, states[snapshot_every - 1::snapshot_every]
  return x


def indexed_score_fn(apply_fn, variables) -> IndexedScoreFn:
  """Adapt `apply_fn(variables, x, labels [B])` to the sampler's score_fn(x, i)."""

  def score_fn(x, i):
    return apply_fn(variables, x, jnp.full((x.shape[0],), i, jnp.int32))

  return score_fn
