"""Guidance: one denoiser from two (EDM2's convention, Karras et al. 2024).

D_w(x; sigma) = D_guide + w (D_main - D_guide): w = 1 is D_main alone. Classifier-free
guidance takes the conditional output as D_main and the unconditional one (label dropped) as
D_guide; autoguidance takes a weaker model of the same data as D_guide.
"""

import jax.numpy as jnp


def combine(main, guide, weight: float):
  """D_guide + weight (D_main - D_guide), the one place the formula lives."""
  return guide + weight * (main - guide)


def guided(main_fn, guide_fn, weight: float):
  """A denoiser fn(x, sigma) = guide_fn(x, sigma) + weight * (main_fn - guide_fn), usable by
  every sampler. weight 1 returns main_fn itself (no second call)."""
  if weight == 1:
    return main_fn
  return lambda x, sigma: combine(main_fn(x, sigma), guide_fn(x, sigma), weight)


def guided_in_one_call(pair_fn, weight: float):
  """Classifier-free guidance as one network call of twice the batch: `pair_fn(x2, sigma2)`
  evaluates [x; x] with the labels [y; dropped] and returns [D_main; D_guide]."""

  def fn(x, sigma):
    sigma = jnp.asarray(sigma)
    sigma2 = jnp.concatenate([sigma, sigma]) if sigma.ndim else sigma
    out = pair_fn(jnp.concatenate([x, x]), sigma2)
    main, guide = jnp.split(out, 2)
    return combine(main, guide, weight)

  return fn
