"""DDPM: L_simple over t ~ U{0..T-1} of a beta schedule, data in [-1, 1]."""

import jax
import numpy as np

from score_jax import losses, precond, schedules
from score_jax.methods import Method


def make(model, betas: np.ndarray) -> Method:
  """The method of an epsilon network `model` on the forward process of `betas` (float64
  [T])."""
  tab = schedules.ddpm_tables(betas)

  def loss_fn(params, batch, key, labels=None, sample_ids=None):
    del labels  # unconditional
    if sample_ids is not None:  # an accumulation round: its own draws (they follow shapes)
      key = jax.random.fold_in(key, sample_ids[0])
    key_loss, key_dropout = jax.random.split(key)
    eps = lambda x, t: model.apply({"params": params}, x, t, train=True,
                                   rngs={"dropout": key_dropout})
    return losses.ddpm_loss(eps, 2.0 * batch - 1.0, key_loss, tab.sqrt_alphas_cumprod,
                            tab.sqrt_one_minus_alphas_cumprod)

  def eps_fn(params):
    return lambda x, t: model.apply({"params": params}, x, t)

  return Method(
      name="ddpm", loss_fn=loss_fn,
      denoiser=lambda params: precond.from_eps(eps_fn(params), tab.alphas_cumprod),
      score_fn=None, eps_fn=eps_fn, levels=None, betas=betas, default_sampler="ancestral")
