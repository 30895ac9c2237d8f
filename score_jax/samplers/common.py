"""What every sampler shares: per-sample keys and noise, and the starting points.

Every sample's randomness comes from `fold_in(key, sample_id)`, so a sample depends only on
the key and its id: the same whichever batch, split or device count produced it.
"""

import jax
import jax.numpy as jnp


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


