"""Score-matching losses as pure functions."""

from typing import Callable

import jax
import jax.numpy as jnp

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def dsm_loss_per_sample(score_fn: ScoreFn, x, labels, noise, sigmas, anneal_power=2.0):
  """Denoising score matching over noise levels (NCSN Eq. 5-6, NCSNv2 Eq. 2), per sample.

  For x~ = x + sigma_i z the target score is -(x~ - x) / sigma_i^2 = -z / sigma_i, and
  l_i = 1/2 * ||s(x~, i) - target||^2 * sigma_i^anneal_power (sum over pixels). With the
  paper's weight sigma^2 every level contributes O(1).

  Args:
    score_fn: (x_perturbed [B, ...], labels [B]) -> score [B, ...].
    x: clean data [B, ...].
    labels: int [B], noise-level index of each sample.
    noise: standard normal [B, ...] (z above).
    sigmas: [L] noise levels.
    anneal_power: exponent of the sigma weight.

  Returns:
    [B] loss of each sample.
  """
  used = jnp.asarray(sigmas, x.dtype)[labels].reshape((-1,) + (1,) * (x.ndim - 1))
  perturbed = x + used * noise
  target = -noise / used
  scores = score_fn(perturbed, labels)
  sq = jnp.sum(jnp.square(scores - target).reshape(x.shape[0], -1), axis=-1)
  return 0.5 * sq * used.reshape(-1) ** anneal_power


def dsm_loss(score_fn: ScoreFn, x, sigmas, key, anneal_power=2.0):
  """Mean denoising score-matching loss with levels and noise drawn from `key`.

  The noise is drawn with the batch's global shape, so under jit with a sharded batch the
  values (and so the loss) do not depend on the number of devices.

  Returns:
    scalar loss (mean over the batch).
  """
  key_labels, key_noise = jax.random.split(key)
  labels = jax.random.randint(key_labels, (x.shape[0],), 0, len(sigmas))
  noise = jax.random.normal(key_noise, x.shape, x.dtype)
  return jnp.mean(dsm_loss_per_sample(score_fn, x, labels, noise, sigmas, anneal_power))
